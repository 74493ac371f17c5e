"""The ClickHouse writer on the embedded engine (chDB): DDL, revisions, idempotence, dead letters."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from schemas.codec import SchemaStore, SingleObjectCodec, codec_for, default_store
from schemas.records import LOSSLESS_FIELDS
from sinks.avro_blocks import container
from sinks.base import SinkRecord
from sinks.clickhouse import ClickHouseSink, open_client
from sinks.ddl import DDL_DIR, apply_schema
from sinks.settings import SinkSettings
from sinks.testing import BASE_TIME_UNIX_NANO, enriched_spans

pytestmark = pytest.mark.clickhouse

RECORD_NAMES = {
    "spans_enriched": "EnrichedSpan",
    "reload_events": "ReloadEvent",
    "anomalies": "Anomaly",
    "dead_letters": "DeadLetter",
}


@pytest.fixture(scope="module")
def engine_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("chdb_sink"))


@pytest.fixture
def sink(engine_path: str) -> Iterator[ClickHouseSink]:
    """A sink on this module's engine, in a database of its own (one chDB path per process)."""
    database = f"t_{uuid.uuid4().hex[:10]}"
    sink = ClickHouseSink(SinkSettings(url=f"chdb://{engine_path}", database=database, retry_timeout_ms=0))
    try:
        yield sink
    finally:
        sink.close()


def message(table: str, record: Mapping[str, Any], partition: int = 0, offset: int = 0, topic: str = "") -> SinkRecord:
    """The SinkRecord the consumer makes of a Kafka message holding ``record``."""
    codec = codec_for(RECORD_NAMES[table])
    value = codec.encode(record)
    writer, body_offset = codec.split(value)
    return SinkRecord(
        table, None, topic or table, partition, offset, b"key", value, avro_body=value[body_offset:], writer_schema=writer
    )


def land(sink: ClickHouseSink, items: list[SinkRecord]) -> None:
    for item in items:
        sink.add(item)
    sink.flush()


def test_ddl_applied_twice_is_a_no_op_and_ttl_is_optional(sink: ClickHouseSink) -> None:
    tables_sql = "SELECT name, engine, create_table_query FROM system.tables WHERE database = {db:String} ORDER BY name"
    before = sink.query(tables_sql, {"db": sink.database})
    assert {row[0] for row in before} >= {
        "spans_enriched", "reload_events", "anomalies", "dead_letters", "trace_time_ranges", "span_minutes",
        "spans_enriched_avro", "span_minutes_mv", "trace_time_ranges_mv", "spans_enriched_from_avro",
    }
    land(sink, [message("spans_enriched", span, 0, i) for i, span in enumerate(enriched_spans(10))])
    statements = apply_schema(sink.client, sink.database)
    assert statements > 10
    assert sink.query(tables_sql, {"db": sink.database}) == before
    assert sink.count("spans_enriched", final=False) == 10
    apply_schema(sink.client, sink.database, ttl_days=3650)
    create = sink.query("SHOW CREATE TABLE spans_enriched")[0][0]
    assert "TTL toDateTime(start_time) + toIntervalDay(3650)" in create
    assert sink.count("spans_enriched") == 10  # rows younger than the TTL stay
    apply_schema(sink.client, sink.database, ttl_days=0)
    assert "TTL" not in sink.query("SHOW CREATE TABLE spans_enriched")[0][0]


def test_the_highest_enrichment_revision_wins_whatever_the_arrival_order(sink: ClickHouseSink) -> None:
    spans = enriched_spans(40)
    land(sink, [message("spans_enriched", span, 0, i) for i, span in enumerate(spans)])
    land(sink, [message("spans_enriched", dict(spans[i], versions={"model": "late-2"}, enrichment_revision=2), 0, 100 + i)
                for i in range(0, 40, 4)])
    land(sink, [message("spans_enriched", dict(spans[i], versions={"model": "late-1"}, enrichment_revision=1), 0, 200 + i)
                for i in range(0, 40, 4)])
    assert sink.count("spans_enriched") == 40
    rows = dict(sink.query("SELECT span_id, (enrichment_revision, model_version) FROM spans_enriched FINAL"))
    for index, span in enumerate(spans):
        expected = (2, "late-2") if index % 4 == 0 else (0, span["versions"]["model"])
        assert rows[span["span_id"]] == expected


def test_the_same_batch_twice_changes_no_count_anywhere(sink: ClickHouseSink) -> None:
    items = [message("spans_enriched", span, i % 2, i) for i, span in enumerate(enriched_spans(500))]
    land(sink, items)
    counts_sql = (
        "SELECT (SELECT count() FROM spans_enriched), (SELECT sum(spans) FROM span_minutes),"
        " (SELECT count() FROM trace_time_ranges)"
    )
    once = sink.query(counts_sql)[0]
    land(sink, items)  # e.g. a retry after a timeout that had in fact succeeded
    assert sink.query(counts_sql)[0] == once
    assert once[0] == 500 and once[1] == 500 * 2  # each span counts under model and config


def test_rows_re_read_into_other_batches_are_exact_after_final(sink: ClickHouseSink) -> None:
    spans = enriched_spans(150)
    land(sink, [message("spans_enriched", spans[i], 0, i) for i in range(100)])
    land(sink, [message("spans_enriched", spans[i], 0, i) for i in range(50, 150)])  # a crash replay, cut differently
    assert sink.count("spans_enriched", final=False) == 200
    assert sink.count("spans_enriched") == 150
    assert sink.query("SELECT uniqExact(trace_id, span_id) FROM spans_enriched")[0][0] == 150


def test_rows_clickhouse_refuses_or_cannot_read_land_in_dead_letters(sink: ClickHouseSink) -> None:
    spans = enriched_spans(30)
    items = [message("spans_enriched", span, 0, i) for i, span in enumerate(spans)]
    backwards = dict(spans[4], end_time_unix_nano=spans[4]["start_time_unix_nano"] - 1)
    items[4] = message("spans_enriched", backwards, 0, 4)
    truncated = items[9]
    items[9] = SinkRecord(truncated.table, None, truncated.topic, 0, 9, None, truncated.raw_value[:-7],
                          avro_body=truncated.avro_body[:-7], writer_schema=truncated.writer_schema)
    unfit = SinkRecord("spans_enriched", dict(spans[13], enrichment_revision="three"), "tools", -1, -1)
    items[13] = unfit
    land(sink, items)
    assert sink.count("spans_enriched") == 27
    stored = {row[0] for row in sink.query("SELECT span_id FROM spans_enriched")}
    assert stored == {span["span_id"] for i, span in enumerate(spans) if i not in (4, 9, 13)}
    dead = sink.query(
        "SELECT source_topic, source_offset, error_kind, stage, error FROM dead_letters FINAL ORDER BY error_kind"
    )
    raw = sink.query("SELECT raw_value FROM dead_letters FINAL ORDER BY error_kind", binary_strings=True)
    assert [(row[0], row[1], row[2], row[3]) for row in dead] == [
        ("spans_enriched", 9, "malformed", "sink"),
        ("spans_enriched", 4, "rejected_by_sink", "sink"),
        ("tools", -1, "unconvertible", "sink"),
    ]
    assert "span_ends_after_start" in dead[1][4]
    assert raw[0][0] == truncated.raw_value[:-7]  # the original bytes, whole
    assert raw[1][0] == items[4].raw_value


def test_a_body_with_trailing_bytes_is_not_silently_misread(sink: ClickHouseSink) -> None:
    spans = enriched_spans(8)
    items = [message("spans_enriched", span, 0, i) for i, span in enumerate(spans)]
    bad = items[3]
    items[3] = SinkRecord(bad.table, None, bad.topic, 0, 3, None, bad.raw_value + b"\x02x",
                          avro_body=bad.avro_body + b"\x02x", writer_schema=bad.writer_schema)
    land(sink, items)
    stored = sink.query("SELECT span_id, trace_id, name FROM spans_enriched ORDER BY span_id")
    expected = sorted((s["span_id"], s["trace_id"], s["name"]) for i, s in enumerate(spans) if i != 3)
    assert stored == expected
    assert sink.query("SELECT source_offset, error_kind FROM dead_letters") == [(3, "malformed")]


def test_contract_fields_map_to_typed_columns(sink: ClickHouseSink) -> None:
    span = enriched_spans(1)[0] | {
        "parent_span_id": None,
        "status_message": None,
        "attributes": {"s": "text", "i": 42, "f": 0.7, "whole": 1.0, "t": True, "b": False},
        "resource_attributes": None,
        "versions": {"model": "m9", "prompt_template": "p3"},
        "versions_at_end": {"model": "m10"},
        "reload_ids": {"model": "r9"},
        "mid_flight": True,
        "mid_flight_reload_ids": ["r10"],
        "enrichment_revision": 3,
    }
    span["end_time_unix_nano"] = span["start_time_unix_nano"] + 12_345_678
    land(sink, [message("spans_enriched", span)])
    row = sink.query(
        "SELECT parent_span_id, status_message, attributes, resource_attributes, model_version, prompt_template_version,"
        " config_version, versions_at_end, mid_flight, mid_flight_reload_ids, enrichment_revision, duration_ns, duration_ms,"
        " start_time_unix_nano, kind, status_code FROM spans_enriched"
    )[0]
    assert row[:2] == ("", "")
    assert row[2] == {"s": "text", "i": "42", "f": "0.7", "whole": "1", "t": "true", "b": "false"}
    assert row[3] == {}
    assert row[4:7] == ("m9", "p3", "")
    assert row[7] == {"model": "m10"}
    assert row[8:11] == (True, ["r10"], 3)
    assert row[11] == 12_345_678 and row[12] == pytest.approx(12.345678)
    assert row[13] == span["start_time_unix_nano"]
    assert row[14:] == (span["kind"], span["status_code"])
    temperature = sink.query("SELECT count() FROM spans_enriched WHERE toFloat64OrNull(attributes['f']) = 0.7")
    assert temperature == [(1,)]


def reload_event(reload_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "reload_id": reload_id, "service_name": "llm-gateway", "service_instance_id": None, "component": "model",
        "old_version": None, "new_version": "m2", "requested_time_unix_nano": BASE_TIME_UNIX_NANO,
        "effective_time_unix_nano": BASE_TIME_UNIX_NANO + 250_000_000, "status": "SUCCEEDED", "source": "operator",
        "trace_id": None, "span_id": None, "model_context": {"model.id": "gpt"}, "changed_keys": ["model.id"],
    } | changes


def anomaly(severity: str, observed: float) -> dict[str, Any]:
    return {
        "anomaly_id": "a1", "reload_id": "r1", "service_name": "llm-gateway", "component": "model", "old_version": "m1",
        "new_version": "m2", "metric": "latency", "baseline_value": 100.0, "observed_value": observed, "p_value": 0.001,
        "baseline_count": 500, "observed_count": 80, "detected_time_unix_nano": BASE_TIME_UNIX_NANO + 10**10,
        "severity": severity,
    }


def test_reloads_anomalies_and_dead_letters_keep_one_row_per_identity(sink: ClickHouseSink) -> None:
    land(sink, [message("reload_events", reload_event("r1"), 0, 0), message("reload_events", reload_event("r2", status="FAILED"), 0, 1)])
    land(sink, [message("reload_events", reload_event("r1"), 0, 0), message("reload_events", reload_event("r1"), 1, 7)])
    assert sink.query("SELECT reload_id, status, reload_duration_ms, service_instance_id, model_context FROM reload_events FINAL ORDER BY reload_id") == [
        ("r1", "SUCCEEDED", 250.0, None, {"model.id": "gpt"}),
        ("r2", "FAILED", 250.0, None, {"model.id": "gpt"}),
    ]
    land(sink, [message("anomalies", anomaly("WARNING", 150.0), 0, 0)])
    land(sink, [message("anomalies", anomaly("CRITICAL", 300.0), 0, 1)])
    land(sink, [message("anomalies", anomaly("WARNING", 140.0), 0, 2)])  # a weaker verdict arriving late
    assert sink.query("SELECT anomaly_id, severity, severity_rank, observed_value FROM anomalies FINAL") == [
        ("a1", "CRITICAL", 3, 300.0)
    ]
    letter = {
        "source_topic": "spans", "source_partition": 1, "source_offset": 77, "raw_key": None, "raw_value": b"\xc3\x01junk",
        "error_kind": "unknown_fingerprint", "error": "no such schema", "stage": "decode",
        "dead_lettered_time_unix_nano": BASE_TIME_UNIX_NANO,
    }
    land(sink, [message("dead_letters", letter, 0, 0)])
    land(sink, [message("dead_letters", letter | {"dead_lettered_time_unix_nano": BASE_TIME_UNIX_NANO + 5}, 0, 1)])
    assert sink.query("SELECT source_topic, source_offset, raw_key, raw_value FROM dead_letters FINAL", binary_strings=True) == [
        (b"spans", 77, None, b"\xc3\x01junk")
    ]


def test_trace_time_ranges_give_each_trace_its_span_extent(sink: ClickHouseSink) -> None:
    spans = enriched_spans(12)
    land(sink, [message("spans_enriched", span, 0, i) for i, span in enumerate(spans[:6])])
    land(sink, [message("spans_enriched", span, 0, 6 + i) for i, span in enumerate(spans[6:])])
    ranges = sink.query(
        "SELECT trace_id, toUnixTimestamp64Nano(min(start_time)), toUnixTimestamp64Nano(max(end_time))"
        " FROM trace_time_ranges GROUP BY trace_id ORDER BY trace_id"
    )
    expected: dict[str, list[int]] = {}
    for span in spans:
        low_high = expected.setdefault(span["trace_id"], [span["start_time_unix_nano"], span["end_time_unix_nano"]])
        low_high[0] = min(low_high[0], span["start_time_unix_nano"])
        low_high[1] = max(low_high[1], span["end_time_unix_nano"])
    assert ranges == [(trace, low, high) for trace, (low, high) in sorted(expected.items())]


class FlakyClient:
    """A real chDB client whose first inserts fail like a dropped connection (after storing, for one)."""

    def __init__(self, client: Any, failures: int, store_before_failing: bool) -> None:
        self._client = client
        self.failures = failures
        self.store_before_failing = store_before_failing

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            if self.store_before_failing:
                self._client.raw_insert(*args, **kwargs)  # the insert happened; only the answer was lost
            from clickhouse_connect.driver.exceptions import OperationalError

            raise OperationalError("connection reset by peer")
        return self._client.raw_insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_client", "failures", "store_before_failing"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._client, name, value)


@pytest.mark.parametrize("store_before_failing", [False, True], ids=["lost-request", "lost-answer"])
def test_retried_writes_store_each_row_once(engine_path: str, store_before_failing: bool) -> None:
    database = f"t_{uuid.uuid4().hex[:10]}"
    settings = SinkSettings(url=f"chdb://{engine_path}", database=database, retry_initial_backoff_ms=1)
    plain = ClickHouseSink(settings)
    sleeps: list[float] = []
    flaky = ClickHouseSink(
        settings, client=FlakyClient(plain.client, 3, store_before_failing), apply_ddl=False, sleep=sleeps.append
    )
    try:
        land(flaky, [message("spans_enriched", span, 0, i) for i, span in enumerate(enriched_spans(200))])
        assert sleeps == [0.001, 0.002, 0.004]
        assert flaky.count("spans_enriched", final=False) == 200  # the token absorbed the stored-but-failed tries
        assert flaky.query("SELECT sum(spans) FROM span_minutes")[0][0] == 400
    finally:
        plain.close()


def test_write_records_takes_plain_dicts(sink: ClickHouseSink) -> None:
    events = [reload_event("r1"), reload_event("r2", old_version="m1", service_instance_id="llm-gateway-0")]
    assert sink.write_records("reload_events", events) == 2
    assert sink.write_records("reload_events", events) == 2  # the same content: the same token
    assert sink.query("SELECT reload_id, old_version, service_instance_id FROM reload_events ORDER BY reload_id") == [
        ("r1", None, None),
        ("r2", "m1", "llm-gateway-0"),
    ]


# --- lossless spans (EnrichedSpan.v2) and the migration of an existing store ---------------------------

EVENT = {"time_unix_nano": BASE_TIME_UNIX_NANO + 5_000, "name": "exception",
         "attributes": {"exception.type": "TimeoutError", "retry": 2, "fatal": False}, "dropped_attributes_count": 1}
LINK = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
        "trace_state": "rojo=00f067aa0ba902b7", "attributes": {"link.kind": "batch"}, "dropped_attributes_count": 0}
LOSSLESS = {"trace_state": "congo=t61rcWkgMzE", "scope_name": "opentelemetry.instrumentation.httpx",
            "scope_version": "0.66b2", "events": [EVENT, dict(EVENT, name="retry", attributes={})], "links": [LINK],
            "dropped_attributes_count": 3, "dropped_events_count": 4, "dropped_links_count": 5}
LOSSLESS_COLUMNS = (
    "trace_state, scope_name, scope_version, dropped_attributes_count, dropped_events_count, dropped_links_count,"
    " arrayMap(time -> toUnixTimestamp64Nano(time), `Events.Timestamp`), `Events.Name`, `Events.Attributes`,"
    " `Events.DroppedAttributesCount`, `Links.TraceId`,"
    " `Links.SpanId`, `Links.TraceState`, `Links.Attributes`, `Links.DroppedAttributesCount`"
)
EXPECTED_LOSSLESS = (
    "congo=t61rcWkgMzE", "opentelemetry.instrumentation.httpx", "0.66b2", 3, 4, 5,
    [EVENT["time_unix_nano"]] * 2, ["exception", "retry"],
    [{"exception.type": "TimeoutError", "retry": "2", "fatal": "false"}, {}], [1, 1],
    [LINK["trace_id"]], [LINK["span_id"]], [LINK["trace_state"]], [{"link.kind": "batch"}], [0],
)
NO_LOSSLESS = ("", "", "", 0, 0, 0, [], [], [], [], [], [], [], [], [])


def v1_message(record: Mapping[str, Any], offset: int) -> SinkRecord:
    """A Kafka message an EnrichedSpan.v1 writer (a worker from before v2) produced."""
    v1 = default_store().versions("EnrichedSpan")[0]
    assert v1.version == 1
    value = SingleObjectCodec("EnrichedSpan", SchemaStore([v1])).encode(record)
    return SinkRecord("spans_enriched", None, "spans.enriched", 0, offset, b"key", value, avro_body=value[10:],
                      writer_schema=v1)


def lossless_row(sink: ClickHouseSink, span_id: str) -> tuple[Any, ...]:
    row = sink.query(f"SELECT {LOSSLESS_COLUMNS} FROM spans_enriched FINAL WHERE span_id = {{id:String}}",
                     {"id": span_id})
    assert len(row) == 1
    return tuple(row[0])


def test_v2_spans_keep_events_links_trace_state_scope_and_dropped_counts(sink: ClickHouseSink) -> None:
    spans = enriched_spans(2)
    land(sink, [message("spans_enriched", spans[0] | LOSSLESS, 0, 0), message("spans_enriched", spans[1], 0, 1)])
    assert lossless_row(sink, spans[0]["span_id"]) == EXPECTED_LOSSLESS
    assert lossless_row(sink, spans[1]["span_id"]) == NO_LOSSLESS  # a v2 span without them: the defaults
    nanos = sink.query(
        "SELECT toUnixTimestamp64Nano(`Events.Timestamp`[1]) FROM spans_enriched WHERE length(`Events.Name`) > 0"
    )
    assert nanos == [(EVENT["time_unix_nano"],)]
    retries = "SELECT count() FROM spans_enriched ARRAY JOIN `Events.Name` AS event WHERE event = 'retry'"
    assert sink.query(retries) == [(1,)]


def test_an_existing_store_migrates_and_keeps_landing_both_writer_versions(engine_path: str, tmp_path) -> None:
    database = f"t_{uuid.uuid4().hex[:10]}"
    old_ddl = tmp_path / "ddl-before-v2"
    old_ddl.mkdir()
    for path in sorted(DDL_DIR.glob("*.sql")):
        if int(path.name.split("_")[0]) < 100:
            shutil.copy(path, old_ddl)
    spans = enriched_spans(60)
    v1_records = [{key: value for key, value in span.items() if key not in LOSSLESS_FIELDS} for span in spans]
    client = open_client(f"chdb://{engine_path}")
    try:
        # The store as the sink before v2 built it, holding rows its v1 writers sent.
        apply_schema(client, database, directory=old_ddl)
        v1 = default_store().versions("EnrichedSpan")[0]
        bodies = [v1_message(record, i).avro_body for i, record in enumerate(v1_records[:20])]
        client.raw_insert(f"{database}.spans_enriched_avro", None, container(v1, bodies), fmt="Avro")
        # The new sink starts on it: the DDL migrates the store, then v2 and late v1 messages both land.
        settings = SinkSettings(url=f"chdb://{engine_path}", database=database, retry_timeout_ms=0)
        sink = ClickHouseSink(settings, client=client)
        land(sink, [message("spans_enriched", spans[i] | LOSSLESS, 0, 100 + i) for i in range(20, 40)])
        land(sink, [v1_message(v1_records[i], 200 + i) for i in range(40, 60)])
        assert sink.count("spans_enriched") == 60
        assert sink.query("SELECT sum(spans) FROM span_minutes")[0][0] == 60 * 2  # downstream views still fed
        for index in (0, 19, 40, 59):
            assert lossless_row(sink, spans[index]["span_id"]) == NO_LOSSLESS
        for index in (20, 39):
            assert lossless_row(sink, spans[index]["span_id"]) == EXPECTED_LOSSLESS
        tables = "SELECT name, create_table_query FROM system.tables WHERE database = {db:String} ORDER BY name"
        before = sink.query(tables, {"db": database})
        apply_schema(client, database)  # again: nothing changes
        assert sink.query(tables, {"db": database}) == before
        columns = dict(sink.query("SELECT name, type FROM system.columns WHERE database = {db:String}"
                                  " AND table = 'spans_enriched'", {"db": database}))
        assert columns["Events.Attributes"] == "Array(Map(LowCardinality(String), String))"
        assert columns["Links.TraceId"] == "Array(String)"
    finally:
        client.close()
