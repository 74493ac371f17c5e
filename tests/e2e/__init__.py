"""End-to-end tests: the whole pipeline (Kafka → worker → ClickHouse) under load and faults."""
