-- anomalies: one row per anomaly_id (one per reload and metric), the strongest verdict.
--
-- Source: Kafka topic reload.anomalies (Anomaly.v1). ReplacingMergeTree(severity_rank) ordered by
-- anomaly_id keeps the highest severity (INFO = 1 < WARNING = 2 < CRITICAL = 3, severity_rank set by
-- anomalies_from_avro) per anomaly; on
-- equal severity, the last inserted. Read with FINAL for exact answers.
-- time_to_detect_ms is not stored (it needs the reload): join reload_events on reload_id and take
-- detected_time - effective_time.
CREATE TABLE IF NOT EXISTS anomalies
(
    anomaly_id String,
    reload_id String,
    service_name LowCardinality(String),
    component LowCardinality(String),
    old_version Nullable(String),
    new_version LowCardinality(String),
    metric LowCardinality(String),
    baseline_value Float64,
    observed_value Float64,
    p_value Float64,
    baseline_count UInt64,
    observed_count UInt64,
    detected_time DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    severity LowCardinality(String),
    severity_rank UInt8,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    detected_time_unix_nano Int64 ALIAS toUnixTimestamp64Nano(detected_time)
)
ENGINE = ReplacingMergeTree(severity_rank)
ORDER BY anomaly_id
SETTINGS non_replicated_deduplication_window = 10000;
