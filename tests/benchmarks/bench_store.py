"""Grafana's queries on a 5M-span store: the otel_traces views beside the native tables and the alternatives.

The store is generated inside the engine (``INSERT ... SELECT FROM numbers()``) in the project's own
schema: 24 h of 12 services x 3 instances, traces of 5 spans, ~15 span and 3 resource attributes,
seven components' versions, 1% mid-flight spans, 3% of the traces corrected by a late reload (revision
1 beside revision 0), a reload per component every 4 h per service (10% FAILED), anomalies on a tenth.
Shapes: the data source's own (``docs/grafana.md``, the dashboard's panels; macros expanded by
``tests/sinks/grafana_macros.py``), p50 of 5 runs (wall, runs interleaved across variants) on ``views``
(what ships) and ``native`` (the same question on ``spans_enriched FINAL`` / ``trace_time_ranges`` /
``reload_events``), plus the view variants behind the choices on the trace shapes.
``BENCH_STORE_ALTERNATIVES=1`` also builds the MV-fed table (a ReplacingMergeTree in the exporter's
order, read through a FINAL view) and the exporter's own tables (needs Go), times every shape on them,
and measures the fed table's ingest cost. The engine runs in a child process (one data directory per
process for chDB).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SPANS = int(os.environ.get("BENCH_STORE_SPANS", "5000000"))
RUNS = int(os.environ.get("BENCH_STORE_RUNS", "5"))
INGEST_SPANS = int(os.environ.get("BENCH_STORE_INGEST_SPANS", "300000"))
ALTERNATIVES = os.environ.get("BENCH_STORE_ALTERNATIVES", "0") == "1"
"""Also build and time the MV-fed table (and its ingest cost), the exporter's tables, and the view variants
on the aggregate shapes: ~4 more minutes at 5M spans."""
BASE_S = 1_767_225_600  # 2026-01-01T00:00:00Z
DURATION_S = 86_400
SERVICES = 12
SPANS_PER_TRACE = 5
CORRECTED_PERCENT = 3
DATABASE = "reloadtrace"
EXPORTER_DATABASE = "exporter"
COMPONENTS = (
    "config",
    "model",
    "routing_rules",
    "feature_flags",
    "credentials",
    "prompt_template",
    "rate_limit_policy",
)
HOUR = 3_600
LAST_HOUR = (BASE_S + DURATION_S - HOUR, BASE_S + DURATION_S)
LAST_6_HOURS = (BASE_S + DURATION_S - 6 * HOUR, BASE_S + DURATION_S)
WHOLE_DAY = (BASE_S, BASE_S + DURATION_S)
_COMPONENTS_SQL = ", ".join(f"'{component}'" for component in COMPONENTS)
# Version of component c of service s at hour h: it changes every 4 hours, at an hour that differs per (s, c).
_EPOCH = "intDiv(hour + s + length(c), 4)"


def spans_sql(spans: int, *, revision: int = 0, traces_percent: int = 100) -> str:
    """INSERT of ``spans`` generated spans (``traces_percent`` of the traces: the corrected ones, at ``revision``)."""
    ns_per_trace = DURATION_S * 1_000_000_000 * SPANS_PER_TRACE // max(spans, 1)
    span_id = "lower(hex(reinterpretAsFixedString(sipHash64({0}, 3))))"
    return f"""
INSERT INTO spans_enriched (trace_id, span_id, parent_span_id, name, kind, service_name, service_instance_id,
    start_time, end_time, status_code, status_message, attributes, resource_attributes, versions, versions_at_end,
    reload_ids, mid_flight, mid_flight_reload_ids, enrichment_revision)
SELECT
    lower(concat(hex(reinterpretAsFixedString(sipHash64(t, 1))), hex(reinterpretAsFixedString(sipHash64(t, 2))))),
    {span_id.format("n")},
    multiIf(p = 0, '', p = 4, {span_id.format("n - 1")}, {span_id.format("n - p")}),
    ['POST /v1/chat/completions', 'route', 'chat gpt-4o', 'chat gpt-4o', 'POST /v1/embeddings'][p + 1],
    ['SERVER', 'INTERNAL', 'CLIENT', 'CLIENT', 'SERVER'][p + 1],
    concat('service-', toString(s)) AS service,
    concat(service, '-', toString(i)),
    fromUnixTimestamp64Nano(toInt64(start_ns), 'UTC'),
    fromUnixTimestamp64Nano(toInt64(start_ns + intDiv(duration_ns, if(p = 0, 1, 2 + p))), 'UTC'),
    if(error AND p IN (0, 3), 'ERROR', if(p = 0, 'OK', 'UNSET')),
    if(error AND p IN (0, 3), 'upstream model error', ''),
    map('http.request.method', 'POST', 'http.route', '/v1/chat/completions', 'url.scheme', 'https',
        'server.address', concat(service, '.internal'),
        'client.address', concat('10.0.', toString(s), '.', toString(n % 250)),
        'user_agent.original', 'openai-python/1.54.0', 'http.response.status_code', if(error, '502', '200'),
        'gen_ai.provider.name', 'openai', 'gen_ai.operation.name', 'chat', 'gen_ai.request.model', 'gpt-4o',
        'gen_ai.request.temperature', toString((n % 5) / 10), 'gen_ai.usage.input_tokens', toString(40 + n % 3000),
        'gen_ai.usage.output_tokens', toString(1 + n % 900), 'gen_ai.response.model', 'gpt-4o-2024-08-06'),
    map('service.version', '1.0.0', 'deployment.environment.name', 'bench',
        'host.name', concat('node-', toString(s), '-', toString(i))),
    CAST(arrayMap(c -> (c, concat(c, '-v', toString({_EPOCH} + {revision}))), [{_COMPONENTS_SQL}]),
         'Map(String, String)') AS versions,
    versions,
    CAST(arrayMap(c -> (c, concat('r-', toString(s), '-', c, '-', toString({_EPOCH}))), [{_COMPONENTS_SQL}]),
         'Map(String, String)'),
    mid,
    if(mid, [concat('r-', toString(s), '-model-', toString(intDiv(hour + s + 5, 4)))], []),
    {revision}
FROM
(
    SELECT
        number AS n,
        intDiv(number, {SPANS_PER_TRACE}) AS t,
        number % {SPANS_PER_TRACE} AS p,
        (t + if(p = 4, 1, 0)) % {SERVICES} AS s,
        intDiv(t, 7) % 3 AS i,
        {BASE_S} * 1000000000 + t * {ns_per_trace} + p * 7000000 AS start_ns,
        intDiv(t * {ns_per_trace}, 3600000000000) AS hour,
        20000000 + sipHash64(t, 4) % 400000000 AS duration_ns,
        sipHash64(t, 5) % 100 < 2 AS error,
        sipHash64(n, 6) % 100 = 0 AS mid
    FROM numbers({spans})
    WHERE sipHash64(t, 7) % 100 < {traces_percent}
)
"""


def reloads_sql() -> str:
    """A reload of each component of each service at every hour its spans' version changes.

    10% of them FAILED, 10% canaries (instance-scoped).
    """
    return f"""
INSERT INTO reload_events (reload_id, service_name, service_instance_id, component, old_version, new_version,
    requested_time, effective_time, status, source, trace_id, span_id, model_context, changed_keys)
SELECT
    concat('r-', toString(s), '-', c, '-', toString({_EPOCH})),
    concat('service-', toString(s)),
    if(sipHash64(n, 9) % 10 = 1, concat('service-', toString(s), '-0'), NULL),
    c,
    if({_EPOCH} = 0, NULL, concat(c, '-v', toString({_EPOCH} - 1))),
    concat(c, '-v', toString({_EPOCH})),
    fromUnixTimestamp64Nano(
        toInt64(({BASE_S} + hour * 3600) * 1000000000 - 50000000 - sipHash64(n, 10) % 900000000), 'UTC'),
    fromUnixTimestamp64Nano(toInt64(({BASE_S} + hour * 3600) * 1000000000), 'UTC'),
    if(sipHash64(n, 8) % 10 = 0, 'FAILED', 'SUCCEEDED'),
    'deploy-pipeline', NULL, NULL, map(), []
FROM
(
    SELECT number AS n, number % {SERVICES} AS s, [{_COMPONENTS_SQL}][intDiv(number, {SERVICES}) % 7 + 1] AS c,
           intDiv(number, {SERVICES * 7}) AS hour
    FROM numbers({SERVICES * 7 * 24})
)
WHERE (hour + s + length(c)) % 4 = 0
"""


def anomalies_sql() -> str:
    return """
INSERT INTO anomalies (anomaly_id, reload_id, service_name, component, old_version, new_version, metric,
    baseline_value, observed_value, p_value, baseline_count, observed_count, detected_time, severity, severity_rank)
SELECT concat(reload_id, ':latency'), reload_id, service_name, component, old_version, new_version, 'latency',
    240.0, 510.0, 1e-9, 300, 40, effective_time + toIntervalMillisecond(2500 + sipHash64(reload_id) % 8000),
    if(sipHash64(reload_id, 1) % 2 = 0, 'CRITICAL', 'WARNING'), if(sipHash64(reload_id, 1) % 2 = 0, 3, 2)
FROM reload_events FINAL
WHERE status = 'SUCCEEDED' AND sipHash64(reload_id, 2) % 10 = 0
"""


def view_select(statements: list[Any]) -> str:
    """The SELECT of the shipped ``otel_traces`` view (from the DDL files)."""
    for statement in statements:
        if statement.sql.startswith("CREATE OR REPLACE VIEW otel_traces AS"):
            return statement.sql.removeprefix("CREATE OR REPLACE VIEW otel_traces AS").strip()
    raise AssertionError("no otel_traces view in schemas/clickhouse")


def alternatives(select: str) -> list[str]:
    """DDL of the measured alternatives, in ``DATABASE``: the shipped view without its FINAL settings, the
    exact-type view, and the MV-fed table with its FINAL view and its materialized view (last)."""
    timestamp = "start_time AS Timestamp,"
    source = "FROM spans_enriched FINAL\nSETTINGS "
    assert timestamp in select and source in select
    plain = select[: select.index(source) + len("FROM spans_enriched FINAL")]
    exact = select.replace(timestamp, "reinterpret(start_time, 'DateTime64(9)') AS Timestamp,")
    fed_select = plain.replace(timestamp, "reinterpret(start_time, 'DateTime64(9)') AS Timestamp,").replace(
        "FROM spans_enriched FINAL", ", enrichment_revision AS EnrichmentRevision FROM spans_enriched"
    )
    columns = [
        "Timestamp",
        "TraceId",
        "SpanId",
        "ParentSpanId",
        "TraceState",
        "SpanName",
        "SpanKind",
        "ServiceName",
        "ResourceAttributes",
        "ScopeName",
        "ScopeVersion",
        "SpanAttributes",
        "Duration",
        "StatusCode",
        "StatusMessage",
        "`Events.Timestamp`",
        "`Events.Name`",
        "`Events.Attributes`",
        "`Links.TraceId`",
        "`Links.SpanId`",
        "`Links.TraceState`",
        "`Links.Attributes`",
    ]
    return [
        f"CREATE OR REPLACE VIEW otel_traces_default_final AS {plain}",
        f"CREATE OR REPLACE VIEW otel_traces_exact AS {exact}",
        """CREATE TABLE otel_traces_fed_table (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)), TraceId String CODEC(ZSTD(1)), SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)), TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)), ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)), ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)), SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)), StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested(Timestamp DateTime64(9), Name LowCardinality(String),
                  Attributes Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    Links Nested(TraceId String, SpanId String, TraceState String,
                 Attributes Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    EnrichmentRevision UInt64,
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = ReplacingMergeTree(EnrichmentRevision)
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), TraceId, SpanId)""",
        # its SpanAttributes index holds enrichment, which a revision changes: FINAL must stay exact here
        f"CREATE OR REPLACE VIEW otel_traces_fed AS SELECT {', '.join(columns)} FROM otel_traces_fed_table FINAL"
        " SETTINGS do_not_merge_across_partitions_select_final = 1",
        f"CREATE MATERIALIZED VIEW otel_traces_fed_mv TO otel_traces_fed_table AS {fed_select}",
    ]


NATIVE_TRACE_SEARCH = """
SELECT trace_id AS traceID, service_name AS serviceName, name AS operationName, start_time AS startTime,
       duration_ns * 0.000001 AS duration
FROM spans_enriched FINAL
WHERE start_time >= toDateTime({start}) AND start_time <= toDateTime({end}) AND parent_span_id = '' AND duration_ns > 0
ORDER BY start_time DESC, duration_ns DESC
LIMIT 1000"""
NATIVE_RELOADS = """
SELECT requested_time, effective_time, service_name, component, old_version, new_version, status
FROM reload_events FINAL
WHERE requested_time >= toDateTime({start}) AND requested_time <= toDateTime({end})
ORDER BY requested_time"""
NATIVE_ANOMALIES = """
SELECT a.detected_time, a.service_name, a.metric, a.severity, r.effective_time
FROM anomalies AS a FINAL
LEFT JOIN (SELECT reload_id, effective_time FROM reload_events FINAL) AS r ON r.reload_id = a.reload_id
WHERE a.detected_time >= toDateTime({start}) AND a.detected_time <= toDateTime({end})
ORDER BY a.detected_time"""


def grafana_context(window: tuple[int, int], **variables: Any) -> Any:
    from tests.sinks.grafana_macros import GrafanaContext

    return GrafanaContext(from_ms=window[0] * 1000, to_ms=window[1] * 1000, interval_s=60, variables=variables)


def shapes(trace_id: str, exporter: bool, fed: bool) -> list[tuple[str, dict[str, str]]]:
    """(shape, {variant: SQL}) for every timed query shape."""
    from sinks.report.queries import load_cookbook, parse_cookbook
    from tests.sinks.grafana_macros import ALL, expand

    docs = parse_cookbook((Path(__file__).resolve().parents[2] / "docs" / "grafana.md").read_text(encoding="utf-8"))
    dashboard = json.loads(
        (Path(__file__).resolve().parents[2] / "docs" / "grafana" / "reloadtrace-dashboard.json").read_text(
            encoding="utf-8"
        )
    )
    panel_sql = {panel["title"]: panel["targets"][0]["rawSql"] for panel in dashboard["panels"]}
    main = f'"{DATABASE}"."otel_traces"'
    lookup = f'"{DATABASE}"."otel_traces_trace_id_ts"'

    def variants(sql: str, native: str, *, every: bool = True) -> dict[str, str]:
        out = {"views": sql}
        if every or fed:
            out["views, default FINAL"] = sql.replace(main, f'"{DATABASE}"."otel_traces_default_final"')
            out["exact-type view"] = sql.replace(main, f'"{DATABASE}"."otel_traces_exact"')
        if fed:
            out["MV-fed table"] = sql.replace(main, f'"{DATABASE}"."otel_traces_fed"')
        if exporter:
            out["exporter's tables"] = sql.replace(main, f'"{EXPORTER_DATABASE}"."otel_traces"').replace(
                lookup, f'"{EXPORTER_DATABASE}"."otel_traces_trace_id_ts"'
            )
        out["native"] = native
        return out

    def qualified(sql: str) -> str:  # dashboard panels name the tables bare, the data source's default database
        return re.sub(r'(?<![."\w])"?otel_traces"?(?![\w"])', main, sql)

    hour, six, day = (
        grafana_context(w, service=ALL, component="model", trace_id=trace_id)
        for w in (LAST_HOUR, LAST_6_HOURS, WHOLE_DAY)
    )
    by_id = expand(docs["grafana_trace_by_id"].sql, day)
    select_part = by_id[by_id.index(" SELECT ") + 1 : by_id.index(" WHERE traceID")]
    native_columns = (
        "trace_id, span_id, parent_span_id, service_name, name, start_time, duration_ns, attributes, "
        "resource_attributes, versions, versions_at_end, reload_ids, mid_flight, mid_flight_reload_ids, "
        "enrichment_revision, status_code, kind, status_message"
    )
    trace_lookup = load_cookbook()["trace_lookup"].sql.replace("{trace_id:String}", f"'{trace_id}'")
    f1, t1 = LAST_HOUR
    fd, td = WHOLE_DAY
    return [
        (
            "trace search, last hour (the data source's default)",
            variants(
                expand(docs["grafana_trace_search"].sql, hour),
                NATIVE_TRACE_SEARCH.format(start=f1, end=t1),
            ),
        ),
        (
            "trace by id, bounded by `_trace_id_ts`",
            variants(
                by_id,
                trace_lookup.replace(
                    "SELECT\n    start_time,", "SELECT\n    attributes, resource_attributes, start_time,"
                ),
            ),
        ),
        (
            "trace by id, no `_trace_id_ts` table (the data source's fallback)",
            variants(
                f"{select_part} WHERE traceID = '{trace_id}'",
                f"SELECT {native_columns} FROM spans_enriched FINAL WHERE trace_id = '{trace_id}'",
            ),
        ),
        (
            "reload annotations, 24 h",
            {
                "views": expand(docs["reload_annotations"].sql, day),
                "native": NATIVE_RELOADS.format(start=fd, end=td),
            },
        ),
        (
            "anomaly annotations, 24 h",
            {
                "views": expand(docs["anomaly_annotations"].sql, day),
                "native": NATIVE_ANOMALIES.format(start=fd, end=td),
            },
        ),
        (
            "p95 latency by model version, 6 h (native: the dashboard's panel)",
            variants(
                expand(qualified(docs["p95_latency_by_version_from_otel_traces"].sql), six),
                expand(panel_sql["p95 latency by $component version"], six),
                every=False,
            ),
        ),
        (
            "requests by model version, 6 h (native: the dashboard's panel)",
            variants(
                expand(qualified(docs["requests_by_version_from_otel_traces"].sql), six),
                expand(panel_sql["Requests by $component version"], six),
                every=False,
            ),
        ),
    ]


def wait_for_merges(client: Any, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    time.sleep(0.5)
    while client.command("SELECT count() FROM system.merges") and time.monotonic() < deadline:
        time.sleep(0.2)


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def p50s(client: Any, variants: dict[str, str]) -> dict[str, list[float | int]]:
    """{variant: [p50 seconds of RUNS runs, rows of the answer]}, the variants' runs interleaved (one run of
    each in turn), so a neighbour's load on the shared machine spreads over all of them."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    rows: dict[str, int] = {}
    for _ in range(RUNS):
        for name, sql in variants.items():
            started = time.perf_counter()
            rows[name] = len(client.query(sql).result_rows)
            times[name].append(time.perf_counter() - started)
    return {name: [statistics.median(times[name]), rows[name]] for name in variants}


def measure(directory: str) -> dict[str, Any]:
    """Build the store in ``directory`` and time every shape (runs in the child process)."""
    import clickhouse_connect

    from sinks.ddl import apply_schema, load_statements
    from tests.sinks.exporter_ddl import ExporterUnavailable, exporter_trace_ddl

    client = clickhouse_connect.get_client(dsn=f"chdb://{directory}")
    apply_schema(client, DATABASE)
    settings = {"max_insert_threads": 2, "max_threads": 2}
    result: dict[str, Any] = {"spans": SPANS, "runs": RUNS, "ingest_spans": INGEST_SPANS, "timings": {}}
    build = result["timings"]
    build["spans_enriched (revision 0)"] = timed(lambda: client.command(spans_sql(SPANS), settings=settings))
    build["corrections (revision 1)"] = timed(
        lambda: client.command(spans_sql(SPANS, revision=1, traces_percent=CORRECTED_PERCENT), settings=settings)
    )
    client.command(reloads_sql())
    client.command(anomalies_sql())
    statements = load_statements()
    fed_ddl = alternatives(view_select(statements))
    for ddl in fed_ddl[: 2 if not ALTERNATIVES else -1]:
        client.command(ddl)
    if ALTERNATIVES:
        fed_select = fed_ddl[-1].split(" AS ", 1)[1]
        build["MV-fed table (the rows its view would have received)"] = timed(
            lambda: client.command(f"INSERT INTO otel_traces_fed_table {fed_select}", settings=settings)
        )
    exporter = None
    result["exporter"] = "measured with `BENCH_STORE_ALTERNATIVES=1`"
    try:
        exporter = exporter_trace_ddl(EXPORTER_DATABASE) if ALTERNATIVES else None
    except ExporterUnavailable as error:
        result["exporter"] = f"not measured: {error}"
    if exporter is not None:
        client.command(f"CREATE DATABASE IF NOT EXISTS {EXPORTER_DATABASE}")
        for ddl in exporter.statements():
            client.command(ddl)
        build["exporter's tables (SELECT * FROM otel_traces)"] = timed(
            lambda: client.command(
                f"INSERT INTO {EXPORTER_DATABASE}.otel_traces SELECT * FROM {DATABASE}.otel_traces", settings=settings
            )
        )
        result["exporter"] = f"{exporter.module_dir.name}"
    build["waiting for background merges"] = timed(lambda: wait_for_merges(client))
    result["store"] = client.query(
        "SELECT table, sum(rows), sum(bytes_on_disk), count() FROM system.parts WHERE active"
        " AND database IN ({databases:Array(String)})"
        " AND table IN ('spans_enriched', 'otel_traces_fed_table', 'otel_traces')"
        " GROUP BY database, table ORDER BY database, table",
        parameters={"databases": [DATABASE, EXPORTER_DATABASE]},
    ).result_rows
    result["final_spans"] = client.command("SELECT count() FROM otel_traces")
    trace_id = client.command(
        "SELECT trace_id FROM spans_enriched WHERE enrichment_revision = 1 AND start_time >= toDateTime({at:UInt32})"
        " ORDER BY start_time LIMIT 1",
        parameters={"at": BASE_S + 12 * HOUR},
    )
    result["queries"] = []
    for shape, variants in shapes(trace_id, exporter is not None, ALTERNATIVES):
        result["queries"].append({"shape": shape, "variants": p50s(client, variants)})
    if ALTERNATIVES:
        result["ingest"] = measure_ingest(client, fed_ddl)
    return result


def measure_ingest(client: Any, fed_ddl: list[str]) -> dict[str, float]:
    """Spans/s of INSERT ... SELECT into spans_enriched (its own two views run) without and with the MV-fed table."""
    from sinks.ddl import apply_schema

    rates = {}
    for name, extra in (("without", []), ("with", fed_ddl[2:])):
        database = f"ingest_{name}"
        apply_schema(client, database)
        for ddl in extra:
            client.command(
                ddl.replace("CREATE TABLE otel_traces_fed_table", "CREATE TABLE IF NOT EXISTS otel_traces_fed_table")
            )
        seconds = timed(lambda: client.command(spans_sql(INGEST_SPANS), settings={"max_insert_threads": 2}))
        rates[name] = INGEST_SPANS / seconds
        wait_for_merges(client)
    client.database = DATABASE
    return rates


def section(result: dict[str, Any]) -> str:
    variants = []
    for row in result["queries"]:
        variants += [name for name in row["variants"] if name not in variants]
    header = "| query shape | " + " | ".join(variants) + " |"
    lines = [header, "|---|" + "---:|" * len(variants)]
    for row in result["queries"]:
        cells = []
        for name in variants:
            if name in row["variants"]:
                seconds, rows = row["variants"][name]
                cells.append(f"{seconds * 1000:,.0f} ms ({rows:,} rows)")
            else:
                cells.append("")
        lines.append(f"| {row['shape']} | " + " | ".join(cells) + " |")
    store = "; ".join(
        f"{table}: {rows:,} rows in {parts} parts, {size / 1e6:,.0f} MB" for table, rows, size, parts in result["store"]
    )
    build = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result["timings"].items())
    ingest = result.get("ingest")
    return "\n".join(
        [
            "## Store: Grafana's queries on the otel_traces views",
            "",
            f"{result['spans']:,} generated spans of 24 h (12 services x 3 instances, traces of 5 spans, 7 components'"
            f" versions, {CORRECTED_PERCENT}% of traces corrected by a late reload, a reload per component every 4 h),"
            f" {result['final_spans']:,} after FINAL. Store: {store}. Built in: {build}.",
            f"Exporter's tables: {result['exporter']}.",
            "",
            f"p50 of {result['runs']} runs (wall, embedded engine, 2 cores shared with the machine's other work):",
            "",
            *lines,
            "",
            "Columns: `views` = what ships (views over `spans_enriched FINAL` with skip indexes not widened by"
            " FINAL's exact mode, and no merging across partitions); `views, default FINAL` = the same views"
            " without those two settings; `exact-type view` = the shipped view with `Timestamp` cast to the"
            " exporter's `DateTime64(9)` (no time pruning); `MV-fed table` = a ReplacingMergeTree in the"
            " exporter's order fed by a materialized view, read through a FINAL view; `exporter's tables` = the"
            " Collector exporter's own DDL (plain MergeTree, no FINAL) holding the same final spans; `native` ="
            " the same question written on `spans_enriched FINAL`, `trace_time_ranges`, `reload_events`.",
            (
                f"Feeding the table costs ingest: {result['ingest_spans']:,} spans inserted into `spans_enriched` at"
                f" {ingest['without']:,.0f} spans/s without its materialized view,"
                f" {ingest['with']:,.0f} spans/s with it"
                f" ({ingest['with'] / ingest['without']:.0%})."
            )
            if ingest
            else "The MV-fed table, the exporter's tables and the view variants on the aggregate shapes are measured"
            " with `BENCH_STORE_ALTERNATIVES=1` (figures, and the choice they decided: `performance_log.md`).",
            "",
            "Command: `make bench BENCH=store` (`BENCH_STORE_SPANS`, `BENCH_STORE_RUNS` set the sizes;"
            " `BENCH_STORE_ALTERNATIVES=1` adds the alternatives, `BENCH_STORE_INGEST_SPANS` the fed table's ingest"
            " run; the exporter's tables need `go` on PATH).",
        ]
    )


def main() -> str:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as directory:
        done = subprocess.run(
            [sys.executable, "-m", "tests.benchmarks.bench_store", "--measure", directory],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parents[2],
        )
    if done.returncode != 0:
        raise RuntimeError(f"the store benchmark's child failed:\n{done.stderr[-4000:]}")
    return section(json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        print(json.dumps(measure(sys.argv[2])))
    else:
        print(main())
