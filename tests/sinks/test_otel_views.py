"""The otel_traces views and the annotation views on the embedded engine, and the exporter's own DDL taking their rows.

Data: the analyst data sets (planted and simulated traffic, late corrections, canaries, FAILED reloads,
anomalies), written through the project's sink with background merges stopped, so revision-0 rows stay
beside their corrections and only a view that really reads the latest revision passes. Every expected
row is computed in Python (``otel_expected``). The compatibility test takes the OpenTelemetry Collector
clickhouseexporter's DDL from the Go module cache at test time (skipped, saying so, without ``go``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from sinks.clickhouse import ClickHouseSink
from sinks.settings import SinkSettings
from tests.sinks import otel_expected as expected
from tests.sinks.exporter_ddl import ExporterUnavailable, exporter_trace_ddl
from tests.sinks.test_queries import open_database
from tests.sinks.test_queries_data import AnalystDataset, load_through_sink

pytestmark = pytest.mark.clickhouse

OTEL_COLUMNS = (
    "toUnixTimestamp64Nano(Timestamp) AS timestamp_ns, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind,"
    " ServiceName, ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage,"
    " arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`) AS `Events.Timestamp`, `Events.Name`,"
    " `Events.Attributes`, `Links.TraceId`, `Links.SpanId`, `Links.TraceState`,"
    " `Links.Attributes`"
)


@pytest.fixture(scope="module")
def engine_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("chdb_otel_views"))


@pytest.fixture(scope="module", params=["planted", "simulated"])
def dataset(request: pytest.FixtureRequest) -> AnalystDataset:
    found = expected.cached_dataset(request.param)
    if found is None:
        pytest.skip("gateway.simulation.simulator is not importable")
    return found


@pytest.fixture(scope="module")
def client(engine_path: str, dataset: AnalystDataset) -> Iterator[Any]:
    client = open_database(engine_path, "otel_planted" if dataset.source.startswith("planted") else "otel_simulated")
    load_through_sink(client, dataset)
    try:
        yield client
    finally:
        client.close()


def rows(client: Any, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=parameters)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def test_the_store_holds_stale_revisions_beside_their_corrections(client: Any, dataset: AnalystDataset) -> None:
    """The premise of the next test: reading the table without FINAL would show the stale answers."""
    stored = client.command("SELECT count() FROM spans_enriched")
    assert stored == len(dataset.all_span_rows) > len(dataset.final_spans)


def test_otel_traces_is_each_span_once_at_its_latest_revision_in_the_exporters_values(
    client: Any, dataset: AnalystDataset
) -> None:
    actual = rows(client, f"SELECT {OTEL_COLUMNS} FROM otel_traces ORDER BY TraceId, SpanId")
    wanted = sorted(
        (expected.otel_row(span) for span in dataset.final_spans), key=lambda r: (r["TraceId"], r["SpanId"])
    )
    assert len(actual) == len(wanted)
    for got, want in zip(actual, wanted, strict=True):
        assert got == want, {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    corrected = [s for s in dataset.final_spans if s["enrichment_revision"] > 0]
    assert corrected and all(
        expected.span_attributes(s)["reload.enrichment_revision"] == str(s["enrichment_revision"]) for s in corrected
    )
    duplicated = client.command(
        "SELECT count() FROM otel_traces"
        " WHERE length(mapKeys(SpanAttributes)) != length(arrayDistinct(mapKeys(SpanAttributes)))"
        " OR length(mapKeys(ResourceAttributes)) != length(arrayDistinct(mapKeys(ResourceAttributes)))"
    )
    assert duplicated == 0, "one entry per key (Grafana lists every entry as a tag; [] reads only the first)"
    by_key = rows(
        client,
        "SELECT SpanId, SpanAttributes['reload.version.model'] AS model, SpanAttributes['reload.mid_flight']"
        " AS mid_flight FROM otel_traces",
    )
    truth = {s["span_id"]: s for s in dataset.final_spans}
    assert all(
        (row["model"], row["mid_flight"])
        == (
            truth[row["SpanId"]]["versions"].get("model", ""),
            "true" if truth[row["SpanId"]]["mid_flight"] else "false",
        )
        for row in by_key
    )
    kinds = {row["SpanKind"] for row in actual}
    assert {"Server", "Client"} <= kinds and {row["StatusCode"] for row in actual} >= {"Error"}


def test_the_enrichment_overrides_stamped_attributes_of_the_same_name(engine_path: str) -> None:
    """A gateway stamp the enrichment contradicts is replaced; a stamp it has no answer for is kept."""
    client = open_database(engine_path, "otel_override")
    try:
        sink = ClickHouseSink(
            SinkSettings(url=f"chdb://{client.path}", database=client.database), client=client, apply_ddl=False
        )
        span = {
            "trace_id": "a" * 32,
            "span_id": "b" * 16,
            "parent_span_id": None,
            "name": "POST /v1/chat",
            "kind": "SERVER",
            "service_name": "llm-gateway",
            "service_instance_id": "",
            "start_time_unix_nano": 1_767_225_600 * 10**9,
            "end_time_unix_nano": 1_767_225_600 * 10**9 + 5_000_000,
            "status_code": "UNSET",
            "status_message": None,
            "attributes": {
                "reload.version.model": "stamped-m1",
                "reload.version.config": "stamped-c1",
                "reload.mid_flight": True,
                "reload.mid_flight.reload_ids": '["r-gateway-saw"]',
                "http.route": "/v1/chat",
            },
            "resource_attributes": {"service.version": "1.2.3"},
            "versions": {"model": "derived-m2"},
            "versions_at_end": {"model": "derived-m2"},
            "reload_ids": {"model": "r-m2"},
            "mid_flight": False,
            "mid_flight_reload_ids": [],
            "enrichment_revision": 0,
        }
        sink.write_records("spans_enriched", [span])
        (row,) = rows(
            client,
            "SELECT SpanAttributes, ResourceAttributes, length(mapKeys(SpanAttributes)) AS entries,"
            " SpanAttributes['reload.version.model'] AS model FROM otel_traces",
        )
        assert (row["entries"], row["model"]) == (7, "derived-m2")
        assert row["SpanAttributes"] == {
            "reload.version.model": "derived-m2",
            "reload.version.config": "stamped-c1",
            "reload.mid_flight": "false",
            "http.route": "/v1/chat",
            "reload.version_at_end.model": "derived-m2",
            "reload.reload_id.model": "r-m2",
            "reload.enrichment_revision": "0",
        }
        # no instance id known: the resource says only what is known
        assert row["ResourceAttributes"] == {"service.version": "1.2.3", "service.name": "llm-gateway"}
    finally:
        client.close()


def test_trace_id_ts_bounds_every_span_of_every_trace(client: Any, dataset: AnalystDataset) -> None:
    ranges = {
        row["TraceId"]: (row["start"], row["end"])
        for row in rows(
            client,
            "SELECT TraceId, toUnixTimestamp(Start) AS start, toUnixTimestamp(End) AS end FROM otel_traces_trace_id_ts",
        )
    }
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for span in dataset.final_spans:
        by_trace.setdefault(span["trace_id"], []).append(span)
    assert set(ranges) == set(by_trace)
    for trace_id, spans in by_trace.items():
        first = min(s["start_time_unix_nano"] for s in spans)
        last_end = max(s["end_time_unix_nano"] for s in spans)
        assert ranges[trace_id] == (first // expected.NS_PER_S, last_end // expected.NS_PER_S)
        # the data source's bound: Timestamp in [min(Start), max(End) + 1]
        start, end = ranges[trace_id]
        assert all(
            start * expected.NS_PER_S <= s["start_time_unix_nano"] <= (end + 1) * expected.NS_PER_S for s in spans
        )
    looked_up = rows(
        client, "SELECT min(Start) AS s FROM otel_traces_trace_id_ts WHERE TraceId = {t:String}", {"t": "f" * 32}
    )
    assert looked_up[0]["s"] is None or looked_up[0]["s"].year == 1970  # an unknown trace has no range


def test_reload_annotations_say_when_what_how_and_the_verdict(client: Any, dataset: AnalystDataset) -> None:
    actual = {
        row["reload_id"]: row
        for row in rows(
            client,
            "SELECT toUnixTimestamp64Nano(time) AS time_ns, toUnixTimestamp64Nano(timeEnd) AS time_end_ns,"
            " title, text, tags, reload_id FROM reload_annotations",
        )
    }
    assert set(actual) == {r.reload_id for r in dataset.reloads}
    blamed = 0
    for reload in dataset.reloads:
        want, got = expected.reload_annotation(reload, dataset.anomalies), actual[reload.reload_id]
        assert (got["time_ns"], got["time_end_ns"], got["title"], got["tags"]) == (
            want["time_ns"],
            want["time_end_ns"],
            want["title"],
            want["tags"],
        )
        for fact in want["text_states"]:
            assert fact in got["text"], (fact, got["text"])
        stated = float(re.search(r" after ([0-9.e+-]+) ms", got["text"]).group(1))
        assert stated == pytest.approx(want["duration_ms"], abs=0.0005)
        blamed += any(tag.startswith("anomaly:") for tag in got["tags"])
    assert blamed, "some reload carries an anomaly verdict"
    assert any(r.service_instance_id for r in dataset.reloads) and any(not r.succeeded for r in dataset.reloads)


def test_anomaly_annotations_span_the_reload_to_the_detection(client: Any, dataset: AnalystDataset) -> None:
    actual = {
        row["anomaly_id"]: row
        for row in rows(
            client,
            "SELECT toUnixTimestamp64Nano(time) AS time_ns, toUnixTimestamp64Nano(timeEnd) AS time_end_ns,"
            " title, text, tags, anomaly_id, severity FROM anomaly_annotations",
        )
    }
    strongest = expected.strongest(dataset.anomalies)
    assert set(actual) == {a["anomaly_id"] for a in strongest}
    for anomaly in strongest:
        want, got = expected.anomaly_annotation(anomaly, dataset.reloads), actual[anomaly["anomaly_id"]]
        assert (got["time_ns"], got["time_end_ns"], got["title"], got["tags"], got["severity"]) == (
            want["time_ns"],
            want["time_end_ns"],
            want["title"],
            want["tags"],
            anomaly["severity"],
        )
        for fact in want["text_states"]:
            assert fact in got["text"], (fact, got["text"])
        if want["time_to_detect_ms"] is not None:
            stated = float(re.search(r"detected ([0-9.e+-]+) ms after", got["text"]).group(1))
            assert stated == pytest.approx(want["time_to_detect_ms"], abs=0.0005)


# ---------------------------------------------------------------- the exporter's own DDL


def render_or_skip(database: str) -> Any:
    try:
        return exporter_trace_ddl(database)
    except ExporterUnavailable as error:
        pytest.skip(f"the exporter's DDL comes from the Go module cache: {error}")


def describe(client: Any, table: str) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in client.query(f"DESCRIBE TABLE {table}").result_rows]


def test_the_exporters_tables_take_select_star_of_the_views(client: Any, dataset: AnalystDataset) -> None:
    ours = client.database
    theirs, lookup_only = f"{ours}_exporter", f"{ours}_exporter_lookup"
    ddl = render_or_skip(theirs)
    assert "traces_table.sql" in {p.name for p in (ddl.module_dir / "internal" / "sqltemplates").iterdir()}
    for database in (theirs, lookup_only):
        client.command(f"DROP DATABASE IF EXISTS {database}")
        client.command(f"CREATE DATABASE {database}")
    for statement in ddl.statements():
        client.command(statement)
    client.command(render_or_skip(lookup_only).trace_id_ts_table)

    # names, order and types: the exporter's, but Timestamp's time zone (see 110_otel_traces.sql)
    exporter_columns, view_columns = describe(client, f"{theirs}.otel_traces"), describe(client, f"{ours}.otel_traces")
    assert [name for name, _ in view_columns] == [name for name, _ in exporter_columns]
    differing = {
        name: (mine, exporter)
        for (name, mine), (_, exporter) in zip(view_columns, exporter_columns, strict=True)
        if mine != exporter
    }
    assert differing == {"Timestamp": ("DateTime64(9, 'UTC')", "DateTime64(9)")}
    assert describe(client, f"{ours}.otel_traces_trace_id_ts") == describe(client, f"{theirs}.otel_traces_trace_id_ts")

    client.command(f"INSERT INTO {theirs}.otel_traces SELECT * FROM {ours}.otel_traces")
    client.command(f"INSERT INTO {lookup_only}.otel_traces_trace_id_ts SELECT * FROM {ours}.otel_traces_trace_id_ts")
    landed = rows(client, f"SELECT {OTEL_COLUMNS} FROM {theirs}.otel_traces ORDER BY TraceId, SpanId")
    assert landed == rows(client, f"SELECT {OTEL_COLUMNS} FROM {ours}.otel_traces ORDER BY TraceId, SpanId")
    assert len(landed) == len(dataset.final_spans)

    # the exporter's own look-up table (fed by its materialized view) against ours: ours never narrower
    mine = {r["TraceId"]: r for r in rows(client, f"SELECT * FROM {lookup_only}.otel_traces_trace_id_ts")}
    exporters = rows(
        client,
        f"SELECT TraceId, min(Start) AS Start, max(End) AS End FROM {theirs}.otel_traces_trace_id_ts GROUP BY TraceId",
    )
    assert len(mine) == len(exporters) == len({s["trace_id"] for s in dataset.final_spans})
    for row in exporters:
        assert mine[row["TraceId"]]["Start"] == row["Start"] and mine[row["TraceId"]]["End"] >= row["End"]


@pytest.mark.parametrize("database", ["r", "a", "reload_events", "otel_traces"])
def test_the_views_answer_in_a_database_of_any_name_and_for_a_readonly_user(engine_path: str, database: str) -> None:
    """A view's tables are stored qualified with its database: no alias inside may shadow that name."""
    client = open_database(engine_path, database)
    try:
        sink = ClickHouseSink(
            SinkSettings(url=f"chdb://{client.path}", database=database), client=client, apply_ddl=False
        )
        dataset = expected.cached_dataset("planted")
        sink.write_records("spans_enriched", dataset.span_batches[0][:20])
        sink.write_records("reload_events", [r.to_dict() for r in dataset.reloads])
        sink.write_records("anomalies", dataset.anomalies)
        for readonly in (0, 1, 2):
            counts = [
                client.query(f"SELECT count() FROM {database}.{view}", settings={"readonly": readonly}).result_rows[0][
                    0
                ]
                for view in ("otel_traces", "otel_traces_trace_id_ts", "reload_annotations", "anomaly_annotations")
            ]
            assert counts[0] == 20 and counts[1] >= 1 and counts[2] == len(dataset.reloads) and counts[3] >= 1, counts
    finally:
        client.close()
