-- dead_letters, DeadLetter.v2: a dead letter always fits the dead-letter topic, so a message too large
-- to be carried whole keeps only a prefix of its bytes (raw_key / raw_value), with
-- raw_key_length, raw_value_length, raw_value_sha256 (lowercase hex of the whole value) and
-- truncated = true. Rows from DeadLetter.v1 writers have NULL lengths and hash and truncated = false.
-- Added to databases made before v2 (ALTER ... IF NOT EXISTS; re-running changes nothing), to the
-- Avro landing table and to its view.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS raw_key_length Nullable(Int64) AFTER dead_lettered_time;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS raw_value_length Nullable(Int64) AFTER raw_key_length;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS raw_value_sha256 Nullable(String) AFTER raw_value_length;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS truncated Bool DEFAULT false AFTER raw_value_sha256;

ALTER TABLE dead_letters_avro ADD COLUMN IF NOT EXISTS raw_key_length Nullable(Int64);
ALTER TABLE dead_letters_avro ADD COLUMN IF NOT EXISTS raw_value_length Nullable(Int64);
ALTER TABLE dead_letters_avro ADD COLUMN IF NOT EXISTS raw_value_sha256 Nullable(String);
ALTER TABLE dead_letters_avro ADD COLUMN IF NOT EXISTS truncated Bool DEFAULT false;

ALTER TABLE dead_letters_from_avro MODIFY QUERY
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
    truncated
FROM dead_letters_avro;
