-- trace_time_ranges: trace_id -> [start, end] of its spans, for trace look-ups without a full scan
-- (like the OpenTelemetry Collector exporter's otel_traces_trace_id_ts).
--
-- Fed by the materialized view trace_time_ranges_mv on every insert into spans_enriched.
-- AggregatingMergeTree with SimpleAggregateFunction(min/max): rows of one trace fold together in
-- merges; query with GROUP BY trace_id (min(start_time), max(end_time)) for the exact range.
-- Re-inserted or corrected spans never widen a range (min/max are idempotent).
-- Typical use: SELECT min(start_time), max(end_time) FROM trace_time_ranges WHERE trace_id = '...'
-- then read spans_enriched with that time range in the WHERE clause.
CREATE TABLE IF NOT EXISTS trace_time_ranges
(
    trace_id String CODEC(ZSTD(1)),
    start_time SimpleAggregateFunction(min, DateTime64(9, 'UTC')) CODEC(Delta(8), ZSTD(1)),
    end_time SimpleAggregateFunction(max, DateTime64(9, 'UTC')) CODEC(Delta(8), ZSTD(1)),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = AggregatingMergeTree
ORDER BY trace_id
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS trace_time_ranges_mv TO trace_time_ranges AS
SELECT
    trace_id,
    min(start_time) AS start_time,
    max(end_time) AS end_time
FROM spans_enriched
GROUP BY trace_id;
