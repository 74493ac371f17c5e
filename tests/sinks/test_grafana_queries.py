"""Every query of docs/grafana.md and of the provisioned dashboard, run on the embedded engine as Grafana sends them.

The data source's macros and the dashboard's variables are expanded as its backend expands them
(``grafana_macros``); the data sets are the analyst ones written through the sink with merges stopped.
The trace search and trace-by-id blocks are the shapes the data source's OpenTelemetry query builder
generates (read from its source, github.com/grafana/clickhouse-datasource ``src/data/sqlGenerator.ts``);
the annotation blocks are what docs/grafana.md tells users to paste. Answers are checked against
Python over the same records (``otel_expected``), not only run.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sinks.report.queries import parse_cookbook
from tests.sinks import otel_expected as expected
from tests.sinks.grafana_macros import ALL, GrafanaContext, MacroError, expand
from tests.sinks.test_queries import as_datetime, expect_traces_mixing_versions, open_database
from tests.sinks.test_queries_data import AnalystDataset, load_through_sink

pytestmark = pytest.mark.clickhouse

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = REPO / "docs" / "grafana.md"
DASHBOARD = REPO / "docs" / "grafana" / "reloadtrace-dashboard.json"
BLOCKS = parse_cookbook(DOCUMENT.read_text(encoding="utf-8"))
NS = expected.NS_PER_S
CHECKED: set[str] = set()


def checks(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    CHECKED.update(names)
    return lambda test: test


@pytest.fixture(scope="module")
def engine_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("chdb_grafana"))


@pytest.fixture(scope="module", params=["planted", "simulated"])
def dataset(request: pytest.FixtureRequest) -> AnalystDataset:
    found = expected.cached_dataset(request.param)
    if found is None:
        pytest.skip("gateway.simulation.simulator is not importable")
    return found


@pytest.fixture(scope="module")
def client(engine_path: str, dataset: AnalystDataset) -> Iterator[Any]:
    client = open_database(
        engine_path, "grafana_planted" if dataset.source.startswith("planted") else "grafana_simulated"
    )
    load_through_sink(client, dataset)
    try:
        yield client
    finally:
        client.close()


def window(dataset: AnalystDataset) -> tuple[int, int]:
    """Dashboard time range in seconds: a minute after the data starts to its middle, so both bounds cut."""
    first = dataset.start_unix_nano // NS
    last = max(s["end_time_unix_nano"] for s in dataset.final_spans) // NS
    return first + 60, first + 60 + (last - first) // 2


def context(dataset: AnalystDataset, **variables: Any) -> GrafanaContext:
    start, end = window(dataset)
    return GrafanaContext(from_ms=start * 1000, to_ms=end * 1000, interval_s=60, variables=variables)


def within(dataset: AnalystDataset, unix_nano: int) -> bool:
    start, end = window(dataset)
    return start * NS <= unix_nano <= end * NS


def run(client: Any, sql: str, grafana: GrafanaContext) -> list[dict[str, Any]]:
    text = expand(sql, grafana).replace('"reloadtrace".', f'"{client.database}".')
    result = client.query(text)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def block(client: Any, name: str, grafana: GrafanaContext) -> list[dict[str, Any]]:
    return run(client, BLOCKS[name].sql, grafana)


def requests(dataset: AnalystDataset) -> list[dict[str, Any]]:
    return [s for s in dataset.final_spans if s["kind"] == "SERVER" and within(dataset, s["start_time_unix_nano"])]


def duration_ms(span: dict[str, Any]) -> float:
    return (span["end_time_unix_nano"] - span["start_time_unix_nano"]) / 1e6


def test_every_block_of_the_document_is_checked_by_a_test() -> None:
    assert set(BLOCKS) == CHECKED, f"untested: {sorted(set(BLOCKS) - CHECKED)}; gone: {sorted(CHECKED - set(BLOCKS))}"


def test_the_macro_expander_refuses_what_it_does_not_know() -> None:
    grafana = GrafanaContext(from_ms=1_000, to_ms=61_000, variables={"one": "x", "many": ["a", "b'c"], "all": ALL})
    assert expand("$__timeFilter(T) AND s IN ($many) AND v = '$one'", grafana) == (
        "T >= toDateTime(1) AND T <= toDateTime(61) AND s IN ('a','b\\'c') AND v = 'x'"
    )
    assert expand("$__conditionalAll(s IN ($all), $all) AND $__conditionalAll(s IN ($many), $many)", grafana) == (
        "1=1 AND s IN ('a','b\\'c')"
    )
    for bad in ("$__adHocFilters('t')", "$unknown", "$__timeFilter(a, b)", "s IN ($all)"):
        with pytest.raises(MacroError):
            expand(bad, grafana)


# ---------------------------------------------------------------- traces


@checks("grafana_trace_search")
def test_the_data_sources_trace_search_lists_root_spans_newest_and_longest_first(
    client: Any, dataset: AnalystDataset
) -> None:
    actual = block(client, "grafana_trace_search", context(dataset))
    roots = [
        s
        for s in dataset.final_spans
        if not s["parent_span_id"]
        and s["end_time_unix_nano"] > s["start_time_unix_nano"]
        and within(dataset, s["start_time_unix_nano"])
    ]
    roots.sort(key=lambda s: (-s["start_time_unix_nano"], -duration_ms(s)))
    wanted = [
        {
            "traceID": s["trace_id"],
            "serviceName": s["service_name"],
            "operationName": s["name"],
            "startTime": as_datetime(s["start_time_unix_nano"]),
            "duration": pytest.approx(duration_ms(s)),
        }
        for s in roots[:1000]
    ]
    assert wanted and [{**row, "startTime": row["startTime"].replace(tzinfo=None)} for row in actual] == wanted


def trace_spans(dataset: AnalystDataset, trace_id: str) -> dict[str, dict[str, Any]]:
    return {s["span_id"]: s for s in dataset.final_spans if s["trace_id"] == trace_id}


def assert_trace_view(actual: list[dict[str, Any]], spans: dict[str, dict[str, Any]]) -> None:
    assert {row["spanID"] for row in actual} == set(spans)
    for row in actual:
        span = spans[row["spanID"]]
        assert row["traceID"] == span["trace_id"] and row["parentSpanID"] == (span["parent_span_id"] or "")
        assert (row["serviceName"], row["operationName"]) == (span["service_name"], span["name"])
        assert row["startTime"] == pytest.approx(span["start_time_unix_nano"] / 1e6)
        assert row["duration"] == pytest.approx(duration_ms(span))
        assert {tag["key"]: tag["value"] for tag in row["tags"]} == expected.span_attributes(span)
        assert len(row["tags"]) == len(expected.span_attributes(span))
        assert {tag["key"]: tag["value"] for tag in row["serviceTags"]} == expected.resource_attributes(span)
        assert row["statusCode"] == (2 if span["status_code"] == "ERROR" else 0)
        assert row["kind"] == expected.SPAN_KINDS[span["kind"]]
        assert row.get("logs", []) == [] and row.get("references", []) == []


def looked_up_traces(dataset: AnalystDataset) -> list[str]:
    corrected = next(s["trace_id"] for s in dataset.final_spans if s["enrichment_revision"] > 0)
    mixed = expect_traces_mixing_versions(dataset, dataset.start_unix_nano)[0]["trace_id"]
    return [corrected, mixed]


@checks("grafana_trace_by_id")
def test_the_data_sources_trace_view_shows_each_spans_latest_versions(client: Any, dataset: AnalystDataset) -> None:
    for trace_id in looked_up_traces(dataset):
        spans = trace_spans(dataset, trace_id)
        assert len(spans) >= 2
        # the look-up is bounded by the trace's own range, whatever the dashboard's time range
        assert_trace_view(block(client, "grafana_trace_by_id", context(dataset, trace_id=trace_id)), spans)
    assert block(client, "grafana_trace_by_id", context(dataset, trace_id="f" * 32)) == []


@checks("traces_served_by_a_version")
def test_traces_served_by_one_model_version(client: Any, dataset: AnalystDataset) -> None:
    served: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in requests(dataset):
        served[span["versions"].get("model", "")].append(span)
    for version in sorted(v for v in served if v):
        actual = block(client, "traces_served_by_a_version", context(dataset, version=version))
        wanted = sorted(served[version], key=lambda s: -s["start_time_unix_nano"])[:100]
        assert [(r["TraceId"], r["ServiceName"], r["StatusCode"]) for r in actual] == [
            (s["trace_id"], s["service_name"], expected.STATUS_CODES[s["status_code"]]) for s in wanted
        ]
    assert len([v for v in served if v]) >= 2


@checks("p95_latency_by_version_from_otel_traces")
def test_p95_by_version_over_time_from_the_otel_shape(client: Any, dataset: AnalystDataset) -> None:
    actual = block(client, "p95_latency_by_version_from_otel_traces", context(dataset))
    groups: dict[tuple[Any, str], list[float]] = defaultdict(list)
    for span in requests(dataset):
        bucket = as_datetime(span["start_time_unix_nano"] // (60 * NS) * 60 * NS)
        groups[(bucket, f"{span['service_name']} {span['versions'].get('model', '')}")].append(duration_ms(span))
    assert [(row["time"].replace(tzinfo=None), row["version"]) for row in actual] == sorted(groups)
    for row in actual:
        durations = groups[(row["time"].replace(tzinfo=None), row["version"])]
        assert min(durations) - 1e-6 <= row["p95_ms"] <= max(durations) + 1e-6


def requests_by_version(
    dataset: AnalystDataset, service_key: str, version_of: Callable[[dict[str, Any]], str]
) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for span in requests(dataset):
        groups[(span["service_name"], version_of(span))].append(span)
    return [
        {
            service_key: service,
            "version": version,
            "requests": len(spans),
            "errors": sum(s["status_code"] == "ERROR" for s in spans),
            "mid_flight": sum(s["mid_flight"] for s in spans),
            "durations": [duration_ms(s) for s in spans],
        }
        for (service, version), spans in sorted(groups.items())
    ]


def assert_requests_by_version(actual: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> None:
    assert len(actual) == len(wanted) > 1
    for got, want in zip(actual, wanted, strict=True):
        assert {k: got[k] for k in ("service", "version", "requests", "errors", "mid_flight")} == {
            k: want[k] for k in ("service", "version", "requests", "errors", "mid_flight")
        }
        assert got["error_rate"] == pytest.approx(round(want["errors"] / want["requests"], 4))
        assert min(want["durations"]) - 0.1 <= got["p50_ms"] <= got["p95_ms"] <= max(want["durations"]) + 0.1


@checks("requests_by_version_from_otel_traces")
def test_requests_by_version_from_the_otel_shape(client: Any, dataset: AnalystDataset) -> None:
    actual = block(client, "requests_by_version_from_otel_traces", context(dataset))
    assert_requests_by_version(
        actual, requests_by_version(dataset, "service", lambda s: s["versions"].get("model", ""))
    )


# ---------------------------------------------------------------- annotations


def annotations(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["time"].replace(tzinfo=None), r["timeEnd"].replace(tzinfo=None), r["title"], r["tags"]) for r in rows]


def wanted_reload_annotations(dataset: AnalystDataset, services: set[str] | None = None) -> list[tuple[Any, ...]]:
    chosen = [
        r
        for r in dataset.reloads
        if within(dataset, r.requested_time_unix_nano) and (services is None or r.service_name in services)
    ]
    chosen.sort(key=lambda r: r.requested_time_unix_nano)
    rows = []
    for reload in chosen:
        want = expected.reload_annotation(reload, dataset.anomalies)
        rows.append((as_datetime(want["time_ns"]), as_datetime(want["time_end_ns"]), want["title"], want["tags"]))
    return rows


@checks("reload_annotations", "reload_annotations_of_services")
def test_reload_annotations_as_pasted_into_grafana(client: Any, dataset: AnalystDataset) -> None:
    every = block(client, "reload_annotations", context(dataset))
    assert set(every[0]) == {"time", "timeEnd", "title", "text", "tags"}
    assert sorted(annotations(every), key=lambda a: a[0]) == wanted_reload_annotations(dataset)
    assert annotations(block(client, "reload_annotations_of_services", context(dataset, service=ALL))) == annotations(
        every
    )
    service = sorted({r.service_name for r in dataset.reloads})[0]
    one = block(client, "reload_annotations_of_services", context(dataset, service=[service]))
    assert sorted(annotations(one), key=lambda a: a[0]) == wanted_reload_annotations(dataset, {service}) != []
    assert len(one) < len(every)


@checks("anomaly_annotations")
def test_anomaly_annotations_as_pasted_into_grafana(client: Any, dataset: AnalystDataset) -> None:
    def wanted(services: set[str] | None) -> list[tuple[Any, ...]]:
        rows = []
        for anomaly in expected.strongest(dataset.anomalies):
            if within(dataset, anomaly["detected_time_unix_nano"]) and (
                services is None or anomaly["service_name"] in services
            ):
                want = expected.anomaly_annotation(anomaly, dataset.reloads)
                rows.append(
                    (as_datetime(want["time_ns"]), as_datetime(want["time_end_ns"]), want["title"], want["tags"])
                )
        return sorted(rows, key=lambda a: (a[0], a[2]))

    every = block(client, "anomaly_annotations", context(dataset, service=ALL))
    assert sorted(annotations(every), key=lambda a: (a[0], a[2])) == wanted(None) != []
    service = every[0]["tags"][0].removeprefix("service:")
    one = block(client, "anomaly_annotations", context(dataset, service=[service]))
    assert sorted(annotations(one), key=lambda a: (a[0], a[2])) == wanted({service})


@checks("change_detection_preset_on_the_model_version")
def test_the_change_detection_preset_only_guesses_what_the_reload_annotations_know(
    client: Any, dataset: AnalystDataset
) -> None:
    whole = GrafanaContext(
        from_ms=dataset.start_unix_nano // 10**6, to_ms=(dataset.start_unix_nano // NS + 86_400) * 1000
    )
    guessed = block(client, "change_detection_preset_on_the_model_version", whole)
    assert guessed, "the preset sees some model version change"
    succeeded = {(r.service_name, r.new_version) for r in dataset.reloads if r.component == "model" and r.succeeded}
    for row in guessed:
        version = re.search(r"changed to (\S+)", row["text"]).group(1)
        assert (row["tags"], version) in succeeded  # every guess names a real SUCCEEDED model reload
    known = block(client, "reload_annotations", whole)
    model_reloads = [a for a in known if "component:model" in a["tags"]]
    assert len(model_reloads) > len(guessed)  # the initial versions, FAILED and canary reloads, exactly
    assert any("status:FAILED" in a["tags"] for a in model_reloads)


# ---------------------------------------------------------------- the dashboard


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_queries() -> list[tuple[str, str, int]]:
    """(where, rawSql, format) of every query the dashboard sends: panels, annotations, variables."""
    board = dashboard()
    found = [(f"panel {p['title']!r}", t["rawSql"], t["format"]) for p in board["panels"] for t in p["targets"]]
    found += [
        (f"annotation {a['name']!r}", a["target"]["rawSql"], a["target"]["format"])
        for a in board["annotations"]["list"]
        if "target" in a
    ]
    found += [
        (f"variable ${v['name']}", v["query"]["rawSql"], 1) for v in board["templating"]["list"] if v["type"] == "query"
    ]
    return found


def dashboard_sql(where: str) -> str:
    return next(sql for name, sql, _ in dashboard_queries() if name == where)


def test_the_dashboard_asks_for_a_clickhouse_data_source_and_names_it_everywhere() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "grafana-clickhouse-datasource"
    assert set(variables) == {"datasource", "service", "component", "trace_id"}
    assert board["uid"] and board["title"]
    sources = [p["datasource"] for p in board["panels"]] + [
        t["datasource"] for p in board["panels"] for t in p["targets"]
    ]
    sources += [a["datasource"] for a in board["annotations"]["list"] if "target" in a]
    assert all(s == {"type": "grafana-clickhouse-datasource", "uid": "${datasource}"} for s in sources)
    formats = {p["type"]: {t["format"] for t in p["targets"]} for p in board["panels"]}
    assert formats == {"timeseries": {0}, "table": {1}, "traces": {3}}
    names = {a["name"] for a in board["annotations"]["list"] if "target" in a}
    assert names == {"Reloads", "Anomalies"}


def dashboard_context(dataset: AnalystDataset, **overrides: Any) -> GrafanaContext:
    variables = {"service": ALL, "component": "model", "trace_id": looked_up_traces(dataset)[0]} | overrides
    return context(dataset, **variables)


def test_every_dashboard_query_runs_and_answers(client: Any, dataset: AnalystDataset) -> None:
    queries = dashboard_queries()
    assert len(queries) == 12  # 8 panels, 2 annotations, 2 query variables
    service = sorted({s["service_name"] for s in requests(dataset)})[0]
    for where, sql, _ in queries:
        every = run(client, sql, dashboard_context(dataset))
        assert every, f"{where} answered nothing"
        one = run(client, sql, dashboard_context(dataset, service=[service]))
        assert len(one) <= len(every), where


def test_the_dashboards_version_panels_count_every_request_once(client: Any, dataset: AnalystDataset) -> None:
    table = run(client, dashboard_sql("panel 'Requests by $component version'"), dashboard_context(dataset))
    assert_requests_by_version(table, requests_by_version(dataset, "service", lambda s: s["versions"].get("model", "")))
    rates = run(client, dashboard_sql("panel 'Error rate by $component version'"), dashboard_context(dataset))
    groups: dict[tuple[Any, str], list[dict[str, Any]]] = defaultdict(list)
    for span in requests(dataset):
        bucket = as_datetime(span["start_time_unix_nano"] // (60 * NS) * 60 * NS)
        groups[(bucket, f"{span['service_name']} {span['versions'].get('model', '')}")].append(span)
    assert [(r["time"].replace(tzinfo=None), r["version"]) for r in rates] == sorted(groups)
    for row in rates:
        spans = groups[(row["time"].replace(tzinfo=None), row["version"])]
        assert row["error_rate"] == pytest.approx(sum(s["status_code"] == "ERROR" for s in spans) / len(spans))
    p95 = run(client, dashboard_sql("panel 'p95 latency by $component version'"), dashboard_context(dataset))
    assert [(r["time"].replace(tzinfo=None), r["version"]) for r in p95] == sorted(groups)


def test_the_dashboards_reload_panels(client: Any, dataset: AnalystDataset) -> None:
    reloads = run(client, dashboard_sql("panel 'Reloads'"), dashboard_context(dataset))
    assert sorted(r["reload_id"] for r in reloads) == sorted(
        r.reload_id for r in dataset.reloads if within(dataset, r.effective_time_unix_nano)
    )
    in_flight = run(client, dashboard_sql("panel 'Requests in flight at each reload'"), dashboard_context(dataset))
    counted: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in dataset.final_spans:
        if within(dataset, span["start_time_unix_nano"]):
            for reload_id in span["mid_flight_reload_ids"]:
                counted[reload_id].append(span)
    assert {r["reload_id"]: (r["mid_flight_spans"], r["traces"]) for r in in_flight} == {
        reload_id: (len(spans), len({s["trace_id"] for s in spans})) for reload_id, spans in counted.items()
    }
    anomalies = run(client, dashboard_sql("panel 'Anomalies'"), dashboard_context(dataset))
    assert sorted(a["title"] for a in anomalies) == sorted(
        expected.anomaly_annotation(a, dataset.reloads)["title"]
        for a in expected.strongest(dataset.anomalies)
        if within(dataset, a["detected_time_unix_nano"])
    )


def test_the_dashboards_trace_panels_and_variables(client: Any, dataset: AnalystDataset) -> None:
    grafana = dashboard_context(dataset)
    search = run(client, dashboard_sql("panel 'Trace search'"), grafana)
    assert search == block(client, "grafana_trace_search", context(dataset))
    trace_id = looked_up_traces(dataset)[1]
    view = run(client, dashboard_sql("panel 'Trace $trace_id'"), dashboard_context(dataset, trace_id=trace_id))
    assert_trace_view(view, trace_spans(dataset, trace_id))
    services = run(client, dashboard_sql("variable $service"), grafana)
    assert [r["service_name"] for r in services] == sorted({r.service_name for r in dataset.reloads})
    components = run(client, dashboard_sql("variable $component"), grafana)
    assert [r["component"] for r in components] == sorted({r.component for r in dataset.reloads})
