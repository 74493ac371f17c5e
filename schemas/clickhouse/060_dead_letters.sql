-- dead_letters: every message the pipeline could not use, raw bytes kept, with the reason.
--
-- Sources: Kafka topic dead-letter (DeadLetter.v1, written by the enricher and others), and the
-- sink itself: messages of its input topics it cannot decode (stage 'decode') and rows ClickHouse
-- rejects or the sink cannot convert (stage 'sink', error_kind 'rejected_by_sink' / 'unconvertible').
-- raw_key / raw_value are the original bytes (String holds arbitrary bytes; NULL = absent/tombstone).
-- ReplacingMergeTree ordered by the origin (source_topic, source_partition, source_offset, stage,
-- raw_value_hash): the same message dead-lettered twice at the same stage (a redelivery, a crash
-- replay) collapses to one row under FINAL. Messages not from Kafka (partition and offset -1) are
-- told apart by the hash of their bytes.
CREATE TABLE IF NOT EXISTS dead_letters
(
    source_topic LowCardinality(String),
    source_partition Int32,
    source_offset Int64,
    raw_key Nullable(String) CODEC(ZSTD(3)),
    raw_value Nullable(String) CODEC(ZSTD(3)),
    error_kind LowCardinality(String),
    error String CODEC(ZSTD(1)),
    stage LowCardinality(String),
    dead_lettered_time DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    raw_value_hash UInt64 MATERIALIZED cityHash64(ifNull(raw_value, '')),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    dead_lettered_time_unix_nano Int64 ALIAS toUnixTimestamp64Nano(dead_lettered_time)
)
ENGINE = ReplacingMergeTree
ORDER BY (source_topic, source_partition, source_offset, stage, raw_value_hash)
SETTINGS non_replicated_deduplication_window = 10000;
