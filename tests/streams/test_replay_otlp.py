"""`reloadtrace replay --spans FILE.otlp.jsonl|.otlp.pb`: OTLP spans enriched as their Avro twins are, reload
spans taken as reload events, bad messages and spans reported with their position."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from schemas.files import RecordFileError, write_records
from schemas.otlp import span_otlp_request
from schemas.otlp_files import read_otlp_messages, write_otlp_file
from schemas.records import ReloadEvent, lossless_defaults
from schemas.reload_span import is_reload_span, reload_event_from_span, reload_span_attributes
from streams.replay import run_replay
from tests.scenarios import build_scenario

BASE = 1_763_900_000_000_000_000


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def reload_as_span(record: dict, index: int) -> dict:
    """The reload span an SDK following the convention would have sent for this reload event."""
    event = ReloadEvent.from_dict(record)
    return {
        "trace_id": f"{index + 1:032x}", "span_id": f"{index + 1:016x}", "parent_span_id": None,
        "name": f"reload {event.component}", "kind": "INTERNAL", "service_name": event.service_name,
        "service_instance_id": event.service_instance_id or "control-plane",
        "start_time_unix_nano": event.requested_time_unix_nano,
        "end_time_unix_nano": max(event.requested_time_unix_nano, event.effective_time_unix_nano),
        "status_code": "OK" if event.succeeded else "ERROR", "status_message": None, "resource_attributes": None,
        "attributes": {key: list(value) if isinstance(value, tuple) else value
                       for key, value in reload_span_attributes(event).items()},
    }


def otlp_requests(spans: list[dict], per_message: int = 7) -> list[ExportTraceServiceRequest]:
    return [span_otlp_request(spans[i : i + per_message]) for i in range(0, len(spans), per_message)]


@pytest.mark.parametrize("suffix", [".otlp.jsonl", ".otlp.pb"])
def test_otlp_spans_with_their_reload_spans_replay_like_the_avro_records(tmp_path: Path, suffix: str) -> None:
    scenario = build_scenario(seed=11, base_time_unix_nano=BASE, duration_s=3, spans_per_second=80)
    spans_path, reloads_path = scenario.write(tmp_path / "avro", ".avro")
    expected = {(row["trace_id"], row["span_id"]): row
                for row in read_jsonl(run_replay(spans_path, reloads_path, tmp_path / "avro-out", detect=False)
                                      .enriched_path)}
    # The same spans through OTLP, the reloads as reload spans in the same file: no reloads file at all.
    reload_spans = [reload_as_span(record, index) for index, record in enumerate(scenario.reloads)]
    otlp_path = tmp_path / f"traffic{suffix}"
    write_otlp_file(otlp_path, otlp_requests(reload_spans[::2] + scenario.spans + reload_spans[1::2]))
    summary = run_replay(otlp_path, None, tmp_path / "otlp-out", detect=False)
    assert summary.spans_skipped == 0 and summary.reloads_skipped == 0
    assert summary.reloads_used == len(scenario.reloads)
    rows = read_jsonl(summary.enriched_path)
    assert len(rows) == len(scenario.spans) + len(reload_spans)
    request_rows = [row for row in rows if not is_reload_span(row)]
    # (an OTLP message groups its spans by resource: order is kept within a resource of a message)
    assert sorted((r["trace_id"], r["span_id"]) for r in request_rows) == sorted(expected)
    for row in request_rows:
        assert row == expected[(row["trace_id"], row["span_id"])] | {
            "resource_attributes": expected[(row["trace_id"], row["span_id"])]["resource_attributes"] or None
        }
    assert any(row["mid_flight"] for row in request_rows) and any(row["versions"] for row in request_rows)
    # Given a reloads file as well, holding the events the reload spans stand for: exact duplicates.
    derived = tmp_path / "derived-reloads.jsonl"
    write_records(derived, "ReloadEvent", [reload_event_from_span(span).to_dict() for span in reload_spans])
    again = run_replay(otlp_path, derived, tmp_path / "both-out", detect=False)
    assert again.duplicate_reloads == len(scenario.reloads) and again.conflicting_reloads == 0
    assert read_jsonl(again.enriched_path) == rows


def test_bad_messages_spans_and_reload_spans_are_reported_with_their_position(tmp_path: Path) -> None:
    scenario = build_scenario(seed=2, base_time_unix_nano=BASE, duration_s=1, spans_per_second=20)
    good = scenario.spans[:5]
    backwards = dict(scenario.spans[5], end_time_unix_nano=scenario.spans[5]["start_time_unix_nano"] - 1)
    broken_reload = reload_as_span(scenario.reloads[0], 0)
    del broken_reload["attributes"]["reload.new_version"]
    path = tmp_path / "traffic.otlp.jsonl"
    write_otlp_file(path, [span_otlp_request(good[:2]), span_otlp_request([good[2], backwards, broken_reload])])
    with path.open("ab") as handle:
        handle.write(b"not json\n")
        handle.write(b'{"resourceSpans": 5}\n')
    write_records(tmp_path / "reloads.jsonl", "ReloadEvent", scenario.reloads)
    summary = run_replay(path, tmp_path / "reloads.jsonl", tmp_path / "out", detect=False)
    assert summary.spans_written == 4  # 3 good + the broken reload span, kept as a span
    assert summary.spans_skipped == 3 and summary.spans_read == 7
    assert summary.reloads_skipped == 1
    reasons = sorted((skipped.position, skipped.reason[:40]) for skipped in summary.skipped)
    assert [position for position, _ in reasons] == [2, 2, 3, 4]
    assert any("span 1" in skipped.reason and "end_time" in skipped.reason for skipped in summary.skipped)
    assert any("reload.new_version" in skipped.reason for skipped in summary.skipped)


def test_a_length_prefixed_file_cut_short_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "cut.otlp.pb"
    write_otlp_file(path, [span_otlp_request(build_scenario(seed=1, base_time_unix_nano=BASE, duration_s=1,
                                                            spans_per_second=5).spans)])
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(RecordFileError, match="cut"):
        list(read_otlp_messages(path))
    with pytest.raises(RecordFileError, match="cut"):
        run_replay(path, None, tmp_path / "out", detect=False)


def test_the_collector_file_exporter_form_and_the_cli(tmp_path: Path) -> None:
    # A line as the Collector's fileexporter (format: json) writes it: ids hex, ints as strings, enums as numbers.
    line = (b'{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"gw"}}]},'
            b'"scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",'
            b'"spanId":"eee19b7ec3c1b174","name":"reload model","kind":1,"startTimeUnixNano":"1763900000000000000",'
            b'"endTimeUnixNano":"1763900000010000000","attributes":[{"key":"reload.id","value":{"stringValue":"r1"}},'
            b'{"key":"reload.component","value":{"stringValue":"model"}},{"key":"reload.new_version","value":'
            b'{"stringValue":"m2"}},{"key":"reload.status","value":{"stringValue":"SUCCEEDED"}}],"status":{}},'
            b'{"traceId":"6b8efff798038103d269b633813fc60c","spanId":"fee19b7ec3c1b174","name":"GET /","kind":2,'
            b'"startTimeUnixNano":"1763900000020000000","endTimeUnixNano":"1763900000030000000","status":{"code":1}}'
            b']}]}]}\n')
    path = tmp_path / "collector.otlp.jsonl"
    path.write_bytes(line)
    command = [sys.executable, "-m", "streams.cli", "replay", "--spans", str(path), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 2 enriched spans" in done.stdout and "1 reloads" in done.stdout
    request = next(row for row in read_jsonl(tmp_path / "out" / "enriched_spans.jsonl") if row["name"] == "GET /")
    assert request["versions"] == {"model": "m2"} and request["reload_ids"] == {"model": "r1"}
    assert {key: request[key] for key in lossless_defaults()} == lossless_defaults() | {"scope_name": "s"}
