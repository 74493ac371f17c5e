-- spans_enriched: one row per span (trace_id, span_id), the final answer of enrichment.
--
-- Source: Kafka topic spans.enriched (EnrichedSpan.v1), landed through spans_enriched_avro
-- (090_avro_landing.sql), which also does the conversions below. Engine ReplacingMergeTree(enrichment_revision):
-- rows with the same sorting key (service_name, minute of start_time, trace_id, span_id) collapse to
-- the one with the highest enrichment_revision (on equal revisions, the last inserted). Every key
-- column is fixed for a span across revisions, so the sorting key is the span's identity.
-- Collapsing happens in background merges: read with FINAL (or argMax by enrichment_revision) for
-- exact answers.
--
-- Mapping from the Avro contract:
--   start_time / end_time      DateTime64(9, 'UTC') from start_time_unix_nano / end_time_unix_nano
--                              (those names stay available as ALIAS columns, Int64 nanoseconds).
--   parent_span_id             '' for a root span (Avro null).
--   status_message             '' when Avro null.
--   attributes,                Map(LowCardinality(String), String); values stringified by ClickHouse
--   resource_attributes        (toString of the Avro union): string as is, boolean 'true'/'false',
--                              long in decimal, double in ClickHouse's shortest round-trip form
--                              (0.7 -> '0.7', 1.0 -> '1', 1e21 -> '1e21'). Read numbers back with
--                              toFloat64OrNull(attributes['...']). resource_attributes null -> {}.
--   versions, versions_at_end, Map(LowCardinality(String), LowCardinality(String)); a component with
--   reload_ids                 no known version is absent (versions['x'] then reads '').
--   <component>_version        MATERIALIZED versions[...] for the seven common components.
--   duration_ns / duration_ms  MATERIALIZED end_time - start_time.
--   inserted_at                when the row reached ClickHouse (freshness = inserted_at - end_time).
-- Constraints: ClickHouse refuses a block holding a span without ids or ending before it starts
-- (VIOLATED_CONSTRAINT); the sink then isolates the offending rows into dead_letters.
-- Skip indexes: bloom filters on trace_id and on mapKeys/mapValues of both attribute maps.
-- Retention: no TTL here; RELOADTRACE_SINK_TTL_DAYS makes the sink apply one (ALTER ... MODIFY TTL).
CREATE TABLE IF NOT EXISTS spans_enriched
(
    trace_id String CODEC(ZSTD(1)),
    span_id String CODEC(ZSTD(1)),
    parent_span_id String CODEC(ZSTD(1)),
    name LowCardinality(String) CODEC(ZSTD(1)),
    kind LowCardinality(String) CODEC(ZSTD(1)),
    service_name LowCardinality(String) CODEC(ZSTD(1)),
    service_instance_id LowCardinality(String) CODEC(ZSTD(1)),
    start_time DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    end_time DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    status_code LowCardinality(String) CODEC(ZSTD(1)),
    status_message String CODEC(ZSTD(1)),
    attributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    resource_attributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    versions Map(LowCardinality(String), LowCardinality(String)) CODEC(ZSTD(1)),
    versions_at_end Map(LowCardinality(String), LowCardinality(String)) CODEC(ZSTD(1)),
    reload_ids Map(LowCardinality(String), LowCardinality(String)) CODEC(ZSTD(1)),
    mid_flight Bool CODEC(ZSTD(1)),
    mid_flight_reload_ids Array(String) CODEC(ZSTD(1)),
    enrichment_revision UInt64 CODEC(ZSTD(1)),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(DoubleDelta, ZSTD(1)),
    start_time_unix_nano Int64 ALIAS toUnixTimestamp64Nano(start_time),
    end_time_unix_nano Int64 ALIAS toUnixTimestamp64Nano(end_time),
    duration_ns Int64 MATERIALIZED toUnixTimestamp64Nano(end_time) - toUnixTimestamp64Nano(start_time) CODEC(ZSTD(1)),
    duration_ms Float64 MATERIALIZED duration_ns / 1e6 CODEC(ZSTD(1)),
    config_version LowCardinality(String) MATERIALIZED versions['config'],
    model_version LowCardinality(String) MATERIALIZED versions['model'],
    routing_rules_version LowCardinality(String) MATERIALIZED versions['routing_rules'],
    feature_flags_version LowCardinality(String) MATERIALIZED versions['feature_flags'],
    credentials_version LowCardinality(String) MATERIALIZED versions['credentials'],
    prompt_template_version LowCardinality(String) MATERIALIZED versions['prompt_template'],
    rate_limit_policy_version LowCardinality(String) MATERIALIZED versions['rate_limit_policy'],
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    CONSTRAINT span_has_ids CHECK trace_id != '' AND span_id != '',
    CONSTRAINT span_ends_after_start CHECK end_time >= start_time,
    INDEX idx_attribute_keys mapKeys(attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attribute_values mapValues(attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_resource_keys mapKeys(resource_attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_resource_values mapValues(resource_attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration duration_ns TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(enrichment_revision)
PARTITION BY toDate(start_time)
PRIMARY KEY (service_name, toStartOfMinute(start_time))
ORDER BY (service_name, toStartOfMinute(start_time), trace_id, span_id)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 10000;
