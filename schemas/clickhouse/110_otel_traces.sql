-- otel_traces, otel_traces_trace_id_ts: the store in the shape of the OpenTelemetry Collector
-- clickhouseexporter's tables, so the Grafana ClickHouse data source (OpenTelemetry mode) and
-- ClickStack/HyperDX read it as it is. Views, re-created on every schema apply (CREATE OR REPLACE:
-- they hold no data, so a changed definition here reaches existing stores).
--
-- Why views over spans_enriched FINAL and not a table fed by a materialized view: a fed table gets
-- every revision of a span, so it must be read with FINAL too; it more than doubled the store on
-- disk and cut insert throughput to 27-62%. On 5M spans (bench_store.py, performance_log.md) the
-- views answer the data source's trace search and trace look-ups faster than the fed table; only
-- aggregates over SpanAttributes are slower (2x), and the dashboard reads those natively.
--
-- otel_traces: one row per span, its highest enrichment_revision only (FINAL). Column names, types
-- and order are the exporter's (tests/sinks/test_otel_views.py inserts SELECT * into the exporter's
-- own DDL), with one difference: Timestamp is DateTime64(9, 'UTC'), not DateTime64(9), because only
-- the bare column lets ClickHouse prune partitions and granules by time (any cast reads them all).
-- Values as the exporter writes them: SpanKind Server/Client/Internal/Producer/Consumer/Unspecified,
-- StatusCode Unset/Ok/Error, Duration in ns. ResourceAttributes = resource_attributes plus
-- service.name and service.instance.id (when known). SpanAttributes = attributes plus the
-- enrichment, which replaces a span attribute of the same name (one entry per key: a map with two
-- would list both as tags and [] would read the first; keys agreed with OTLP out):
--   reload.version.<component>, reload.version_at_end.<component>, reload.reload_id.<component>,
--   reload.mid_flight ('true'/'false'), reload.mid_flight.reload_ids (sorted, comma-joined; absent
--   when none, and a stamped one is dropped then), reload.enrichment_revision (decimal).
-- TraceState, ScopeName, ScopeVersion, Events.*, Links.*: the contract v2 columns (105_lossless_spans.sql;
-- empty for spans written as v1). This file comes after that one: the view reads its columns.
-- The maps are built with mapFromArrays over Array(LowCardinality(String)) keys: a CAST of the
-- whole map to Map(LowCardinality(String), String) cost 3.5x more per row (7.7 s against 2.2 s
-- for 1M spans).
CREATE OR REPLACE VIEW otel_traces AS
WITH
    arrayConcat(
        arrayMap(component -> concat('reload.version.', component), mapKeys(versions)),
        arrayMap(component -> concat('reload.version_at_end.', component), mapKeys(versions_at_end)),
        arrayMap(component -> concat('reload.reload_id.', component), mapKeys(reload_ids)),
        ['reload.mid_flight', 'reload.enrichment_revision'],
        if(empty(mid_flight_reload_ids), [], ['reload.mid_flight.reload_ids'])) AS enrichment_keys,
    arrayConcat(
        CAST(mapValues(versions), 'Array(String)'),
        CAST(mapValues(versions_at_end), 'Array(String)'),
        CAST(mapValues(reload_ids), 'Array(String)'),
        [if(mid_flight, 'true', 'false'), toString(enrichment_revision)],
        if(empty(mid_flight_reload_ids), [], [arrayStringConcat(arraySort(mid_flight_reload_ids), ',')])) AS enrichment_values,
    mapFilter((key, value) -> NOT (startsWith(key, 'reload.')
                                   AND (key = 'reload.mid_flight.reload_ids' OR has(enrichment_keys, key))),
              attributes) AS own_attributes
SELECT
    start_time AS Timestamp,
    trace_id AS TraceId,
    span_id AS SpanId,
    parent_span_id AS ParentSpanId,
    trace_state AS TraceState,
    name AS SpanName,
    CAST(
        multiIf(kind = 'SERVER', 'Server', kind = 'CLIENT', 'Client', kind = 'INTERNAL', 'Internal',
                kind = 'PRODUCER', 'Producer', kind = 'CONSUMER', 'Consumer', 'Unspecified'),
        'LowCardinality(String)') AS SpanKind,
    service_name AS ServiceName,
    mapFromArrays(
        CAST(arrayConcat(
                 mapKeys(mapFilter((key, value) -> key NOT IN ('service.name', 'service.instance.id'), resource_attributes)),
                 ['service.name'], if(service_instance_id = '', [], ['service.instance.id'])),
             'Array(LowCardinality(String))'),
        arrayConcat(
            mapValues(mapFilter((key, value) -> key NOT IN ('service.name', 'service.instance.id'), resource_attributes)),
            [CAST(service_name, 'String')], if(service_instance_id = '', [], [CAST(service_instance_id, 'String')]))
    ) AS ResourceAttributes,
    CAST(scope_name, 'String') AS ScopeName,
    CAST(scope_version, 'String') AS ScopeVersion,
    mapFromArrays(
        CAST(arrayConcat(mapKeys(own_attributes), enrichment_keys), 'Array(LowCardinality(String))'),
        arrayConcat(mapValues(own_attributes), enrichment_values)
    ) AS SpanAttributes,
    toUInt64(duration_ns) AS Duration,
    CAST(multiIf(status_code = 'OK', 'Ok', status_code = 'ERROR', 'Error', 'Unset'), 'LowCardinality(String)') AS StatusCode,
    status_message AS StatusMessage,
    arrayMap(t -> toDateTime64(t, 9, ''), `Events.Timestamp`) AS `Events.Timestamp`,
    `Events.Name` AS `Events.Name`,
    `Events.Attributes` AS `Events.Attributes`,
    `Links.TraceId` AS `Links.TraceId`,
    `Links.SpanId` AS `Links.SpanId`,
    `Links.TraceState` AS `Links.TraceState`,
    `Links.Attributes` AS `Links.Attributes`
FROM spans_enriched FINAL
SETTINGS use_skip_indexes_if_final_exact_mode = 0, do_not_merge_across_partitions_select_final = 1;

-- otel_traces_trace_id_ts: TraceId -> Start, End (DateTime, seconds) of its spans, from
-- trace_time_ranges (a lookup by TraceId reads its primary key). The data source finds it by name
-- (<traces table>_trace_id_ts) and bounds a trace-by-id query with [min(Start), max(End) + 1].
-- Start is the floor of the trace's first span start; End the floor of its last span end (the
-- exporter's End is the last span start, earlier or equal), so the bound always holds every span.
CREATE OR REPLACE VIEW otel_traces_trace_id_ts AS
SELECT
    trace_id AS TraceId,
    CAST(toUnixTimestamp(min(start_time)), 'DateTime') AS Start,
    CAST(toUnixTimestamp(max(end_time)), 'DateTime') AS End
FROM trace_time_ranges
GROUP BY trace_id;
