"""The record contract: Avro schemas, their codec, topic names and ClickHouse DDL."""
