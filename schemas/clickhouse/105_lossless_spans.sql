-- Lossless spans (EnrichedSpan.v2): events, links, trace_state, the instrumentation scope and the
-- producer's dropped counts, kept in spans_enriched, also in a store created before they existed.
--
-- Migration: the files run in order at every sink start and a shipped statement never changes, so
-- an existing spans_enriched gains the columns here (ADD COLUMN IF NOT EXISTS: a no-op once they are
-- there; rows stored before read the defaults: '' / 0 / empty arrays). v2 messages land through their
-- own Null table and view, spans_enriched_v2_avro -> spans_enriched_from_v2_avro, created beside the
-- v1 pair of 090_avro_landing.sql, which stays as it is and keeps landing v1 messages (an old
-- producer, or a backlog written before the upgrade) with the new columns at their defaults. The
-- sink inserts each writer version into its own landing table (sinks.avro_blocks.landing_table).
--
-- Columns, named like the Collector clickhouseexporter's otel_traces (Events.*, Links.*: one array
-- element per event or link, in span order, like its Nested columns):
--   trace_state, scope_name, scope_version     '' when none
--   dropped_attributes_count, dropped_events_count, dropped_links_count   what the producer dropped
--   Events.Timestamp (DateTime64(9, 'UTC')), Events.Name, Events.Attributes (values as text, as for
--   the span's attributes), Events.DroppedAttributesCount
--   Links.TraceId, Links.SpanId (hex), Links.TraceState, Links.Attributes, Links.DroppedAttributesCount
ALTER TABLE spans_enriched
    ADD COLUMN IF NOT EXISTS trace_state String CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS scope_name LowCardinality(String) CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS scope_version LowCardinality(String) CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS dropped_attributes_count UInt64 CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS dropped_events_count UInt64 CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS dropped_links_count UInt64 CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS `Events.Timestamp` Array(DateTime64(9, 'UTC')) CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS `Events.Name` Array(LowCardinality(String)) CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS `Events.Attributes` Array(Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS `Events.DroppedAttributesCount` Array(UInt64) CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS `Links.TraceId` Array(String) CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS `Links.SpanId` Array(String) CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS `Links.TraceState` Array(String) CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS `Links.Attributes` Array(Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS `Links.DroppedAttributesCount` Array(UInt64) CODEC(ZSTD(1));

CREATE TABLE IF NOT EXISTS spans_enriched_v2_avro
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
    trace_state String,
    scope_name String,
    scope_version String,
    events Array(Tuple(
        time_unix_nano Int64,
        name String,
        attributes Map(String, Variant(Bool, Float64, Int64, String)),
        dropped_attributes_count Int64)),
    links Array(Tuple(
        trace_id String,
        span_id String,
        trace_state String,
        attributes Map(String, Variant(Bool, Float64, Int64, String)),
        dropped_attributes_count Int64)),
    dropped_attributes_count Int64,
    dropped_events_count Int64,
    dropped_links_count Int64,
    versions Map(String, String),
    versions_at_end Map(String, String),
    reload_ids Map(String, String),
    mid_flight Bool,
    mid_flight_reload_ids Array(String),
    enrichment_revision Int64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS spans_enriched_from_v2_avro TO spans_enriched AS
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
    toUInt64(enrichment_revision) AS enrichment_revision,
    trace_state,
    scope_name,
    scope_version,
    toUInt64(greatest(dropped_attributes_count, 0)) AS dropped_attributes_count,
    toUInt64(greatest(dropped_events_count, 0)) AS dropped_events_count,
    toUInt64(greatest(dropped_links_count, 0)) AS dropped_links_count,
    arrayMap(event -> fromUnixTimestamp64Nano(event.time_unix_nano, 'UTC'), events) AS `Events.Timestamp`,
    arrayMap(event -> event.name, events) AS `Events.Name`,
    arrayMap(event -> mapApply((key, value) -> (key, toString(value)), event.attributes), events) AS `Events.Attributes`,
    arrayMap(event -> toUInt64(greatest(event.dropped_attributes_count, 0)), events) AS `Events.DroppedAttributesCount`,
    arrayMap(link -> link.trace_id, links) AS `Links.TraceId`,
    arrayMap(link -> link.span_id, links) AS `Links.SpanId`,
    arrayMap(link -> link.trace_state, links) AS `Links.TraceState`,
    arrayMap(link -> mapApply((key, value) -> (key, toString(value)), link.attributes), links) AS `Links.Attributes`,
    arrayMap(link -> toUInt64(greatest(link.dropped_attributes_count, 0)), links) AS `Links.DroppedAttributesCount`
FROM spans_enriched_v2_avro;
