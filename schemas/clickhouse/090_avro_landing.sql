-- Avro landing tables: <table>_avro (ENGINE = Null) take Avro containers as the contract writes
-- them (field names and types of schemas/avro/*.avsc) and store nothing; the materialized views
-- <table>_from_avro convert each inserted block into the real table. The sink inserts the Avro
-- bodies of Kafka messages here (INSERT INTO <table>_avro FORMAT Avro), so ClickHouse decodes them
-- in C++ and Python never decodes a record on the way (measured ~2x faster than a Python decode plus
-- an Arrow insert; see tests/benchmarks/bench_sink.py).
--
-- Deduplication: an insert with insert_deduplication_token and
-- deduplicate_blocks_in_dependent_materialized_views = 1 is deduplicated in every table downstream
-- (each has non_replicated_deduplication_window), aggregates included.
-- Conversions: nanosecond longs -> DateTime64(9, 'UTC'); null strings -> ''; attribute unions
-- (Variant(Bool, Float64, Int64, String)) -> text with toString; severity -> severity_rank.
CREATE TABLE IF NOT EXISTS spans_enriched_avro
(
    trace_id String,
    span_id String,
    parent_span_id Nullable(String),
    name String,
    kind String,
    service_name String,
    service_instance_id String,
    start_time_unix_nano Int64,
    end_time_unix_nano Int64,
    status_code String,
    status_message Nullable(String),
    attributes Map(String, Variant(Bool, Float64, Int64, String)),
    resource_attributes Map(String, Variant(Bool, Float64, Int64, String)),
    versions Map(String, String),
    versions_at_end Map(String, String),
    reload_ids Map(String, String),
    mid_flight Bool,
    mid_flight_reload_ids Array(String),
    enrichment_revision Int64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS spans_enriched_from_avro TO spans_enriched AS
SELECT
    trace_id,
    span_id,
    ifNull(parent_span_id, '') AS parent_span_id,
    name,
    kind,
    service_name,
    service_instance_id,
    fromUnixTimestamp64Nano(start_time_unix_nano, 'UTC') AS start_time,
    fromUnixTimestamp64Nano(end_time_unix_nano, 'UTC') AS end_time,
    status_code,
    ifNull(status_message, '') AS status_message,
    mapApply((key, value) -> (key, toString(value)), attributes) AS attributes,
    mapApply((key, value) -> (key, toString(value)), resource_attributes) AS resource_attributes,
    versions,
    versions_at_end,
    reload_ids,
    mid_flight,
    mid_flight_reload_ids,
    toUInt64(enrichment_revision) AS enrichment_revision
FROM spans_enriched_avro;

CREATE TABLE IF NOT EXISTS reload_events_avro
(
    reload_id String,
    service_name String,
    service_instance_id Nullable(String),
    component String,
    old_version Nullable(String),
    new_version String,
    requested_time_unix_nano Int64,
    effective_time_unix_nano Int64,
    status String,
    source String,
    trace_id Nullable(String),
    span_id Nullable(String),
    model_context Map(String, String),
    changed_keys Array(String)
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS reload_events_from_avro TO reload_events AS
SELECT
    reload_id,
    service_name,
    service_instance_id,
    component,
    old_version,
    new_version,
    fromUnixTimestamp64Nano(requested_time_unix_nano, 'UTC') AS requested_time,
    fromUnixTimestamp64Nano(effective_time_unix_nano, 'UTC') AS effective_time,
    status,
    source,
    trace_id,
    span_id,
    model_context,
    changed_keys
FROM reload_events_avro;

CREATE TABLE IF NOT EXISTS anomalies_avro
(
    anomaly_id String,
    reload_id String,
    service_name String,
    component String,
    old_version Nullable(String),
    new_version String,
    metric String,
    baseline_value Float64,
    observed_value Float64,
    p_value Float64,
    baseline_count Int64,
    observed_count Int64,
    detected_time_unix_nano Int64,
    severity String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS anomalies_from_avro TO anomalies AS
SELECT
    anomaly_id,
    reload_id,
    service_name,
    component,
    old_version,
    new_version,
    metric,
    baseline_value,
    observed_value,
    p_value,
    toUInt64(greatest(baseline_count, 0)) AS baseline_count,
    toUInt64(greatest(observed_count, 0)) AS observed_count,
    fromUnixTimestamp64Nano(detected_time_unix_nano, 'UTC') AS detected_time,
    severity,
    toUInt8(multiIf(severity = 'CRITICAL', 3, severity = 'WARNING', 2, severity = 'INFO', 1, 0)) AS severity_rank
FROM anomalies_avro;

CREATE TABLE IF NOT EXISTS dead_letters_avro
(
    source_topic String,
    source_partition Int32,
    source_offset Int64,
    raw_key Nullable(String),
    raw_value Nullable(String),
    error_kind String,
    error String,
    stage String,
    dead_lettered_time_unix_nano Int64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS dead_letters_from_avro TO dead_letters AS
SELECT
    source_topic,
    source_partition,
    source_offset,
    raw_key,
    raw_value,
    error_kind,
    error,
    stage,
    fromUnixTimestamp64Nano(dead_lettered_time_unix_nano, 'UTC') AS dead_lettered_time
FROM dead_letters_avro;
