-- dead_letters, DeadLetter.v2: a dead letter always fits the dead-letter topic, so a message too large
-- to be carried whole keeps only a prefix of its bytes (raw_key / raw_value), with
-- raw_key_length, raw_value_length, raw_value_sha256 (lowercase hex of the whole value) and
-- truncated = true. source_record says which record of a message failed, 1-based (a span of an OTLP
-- message, which holds many: the DeadLetter's source_index + 1), 0 for the message as a whole; it is
-- part of the replacing key, so two bad spans of one message are two rows (a column in a sorting key
-- can have no default expression: 0, the type's default, is what rows from before it mean).
-- Rows from DeadLetter.v1 writers have NULL lengths and hash, truncated = false, source_record 0.
-- Added to databases made before v2 (ALTER ... IF NOT EXISTS; re-running changes nothing). v2
-- messages land through a landing table of their own (dead_letters_v2_avro, as for every writer
-- version >= 2: sinks.avro_blocks.landing_table), so the v1 landing table and its view stay as shipped.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS raw_key_length Nullable(Int64) AFTER dead_lettered_time;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS raw_value_length Nullable(Int64) AFTER raw_key_length;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS raw_value_sha256 Nullable(String) AFTER raw_value_length;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS truncated Bool DEFAULT false AFTER raw_value_sha256;
ALTER TABLE dead_letters
    ADD COLUMN IF NOT EXISTS source_record UInt32 AFTER source_offset,
    MODIFY ORDER BY (source_topic, source_partition, source_offset, stage, raw_value_hash, source_record);

CREATE TABLE IF NOT EXISTS dead_letters_v2_avro
(
    source_topic String,
    source_partition Int32,
    source_offset Int64,
    raw_key Nullable(String),
    raw_value Nullable(String),
    error_kind String,
    error String,
    stage String,
    dead_lettered_time_unix_nano Int64,
    raw_key_length Nullable(Int64),
    raw_value_length Nullable(Int64),
    raw_value_sha256 Nullable(String),
    truncated Bool,
    source_index Int32
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS dead_letters_from_v2_avro TO dead_letters AS
SELECT
    source_topic,
    source_partition,
    source_offset,
    raw_key,
    raw_value,
    error_kind,
    error,
    stage,
    fromUnixTimestamp64Nano(dead_lettered_time_unix_nano, 'UTC') AS dead_lettered_time,
    raw_key_length,
    raw_value_length,
    raw_value_sha256,
    truncated,
    toUInt32(greatest(source_index + 1, 0)) AS source_record
FROM dead_letters_v2_avro;
