-- span_minutes: per-minute aggregates by (service_name, component, version, kind), for dashboards.
--
-- Fed by span_minutes_mv on every insert into spans_enriched: each span counts once per component
-- in its `versions` map (LEFT ARRAY JOIN; a span with no known version counts under component ''
-- and version ''). Columns: spans, errors (status_code = 'ERROR'), mid_flight, duration_ms_sum
-- (all SimpleAggregateFunction(sum)) and duration_ms_quantiles, a quantilesState(0.5, 0.9, 0.95,
-- 0.99) read with quantilesMerge(0.5, 0.9, 0.95, 0.99)(duration_ms_quantiles).
-- Always aggregate on read: GROUP BY the key columns and sum(...), rows fold only in merges.
--
-- Guarantee: a batch re-inserted with the same deduplication token is not counted twice (the sink
-- inserts with deduplicate_blocks_in_dependent_materialized_views = 1 and this table keeps a
-- deduplication window too). Non-guarantee: a span corrected by a late reload
-- (enrichment_revision + 1) is counted once per revision delivered, under each version it was
-- given, and a crash that re-inserts rows in a differently cut batch counts them again. For exact
-- figures query spans_enriched FINAL; this table is the cheap, approximate view.
CREATE TABLE IF NOT EXISTS span_minutes
(
    service_name LowCardinality(String),
    minute DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    component LowCardinality(String),
    version LowCardinality(String),
    kind LowCardinality(String),
    spans SimpleAggregateFunction(sum, UInt64),
    errors SimpleAggregateFunction(sum, UInt64),
    mid_flight SimpleAggregateFunction(sum, UInt64),
    duration_ms_sum SimpleAggregateFunction(sum, Float64),
    duration_ms_quantiles AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toDate(minute)
ORDER BY (service_name, minute, component, version, kind)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS span_minutes_mv TO span_minutes AS
SELECT
    service_name,
    toStartOfMinute(start_time) AS minute,
    component,
    version,
    kind,
    count() AS spans,
    countIf(status_code = 'ERROR') AS errors,
    countIf(mid_flight) AS mid_flight,
    sum(duration_ms) AS duration_ms_sum,
    quantilesState(0.5, 0.9, 0.95, 0.99)(duration_ms) AS duration_ms_quantiles
FROM spans_enriched
LEFT ARRAY JOIN mapKeys(versions) AS component, mapValues(versions) AS version
GROUP BY service_name, minute, component, version, kind;
