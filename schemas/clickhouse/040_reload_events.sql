-- reload_events: one row per reload attempt (reload_id), SUCCEEDED and FAILED alike.
--
-- Source: Kafka topic reloads (ReloadEvent.v1). ReplacingMergeTree ordered by reload_id: a reload
-- delivered twice collapses to one row (read with FINAL for exact counts). A reload_id republished
-- with other content is refused upstream by the enrichment engine; here the last inserted would win.
-- Nullable columns mirror the contract's nulls: service_instance_id null = every instance of the
-- service; old_version null = none known; trace_id/span_id null = no reload span.
-- reload_duration_ms = effective_time - requested_time (how long the reload took, or until it
-- was given up for a FAILED one).
CREATE TABLE IF NOT EXISTS reload_events
(
    reload_id String,
    service_name LowCardinality(String),
    service_instance_id Nullable(String),
    component LowCardinality(String),
    old_version Nullable(String),
    new_version LowCardinality(String),
    requested_time DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    effective_time DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    status LowCardinality(String),
    source LowCardinality(String),
    trace_id Nullable(String),
    span_id Nullable(String),
    model_context Map(LowCardinality(String), String),
    changed_keys Array(String),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    requested_time_unix_nano Int64 ALIAS toUnixTimestamp64Nano(requested_time),
    effective_time_unix_nano Int64 ALIAS toUnixTimestamp64Nano(effective_time),
    reload_duration_ms Float64 MATERIALIZED
        (toUnixTimestamp64Nano(effective_time) - toUnixTimestamp64Nano(requested_time)) / 1e6
)
ENGINE = ReplacingMergeTree
ORDER BY reload_id
SETTINGS non_replicated_deduplication_window = 10000;
