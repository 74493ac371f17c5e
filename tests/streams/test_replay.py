"""`reloadtrace replay`: same answers as enrich() for every span, any file order and format, bad records reported."""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.files import write_records
from schemas.errors import InvalidRecordError
from schemas.records import ReloadEvent, Span, lossless_defaults, validate_span
from streams.enrichment import enrich
from streams.replay import RecordFileError, ReplayError, plainly_valid, run_replay
from streams.timeline import VersionTimeline
from tests.scenarios import build_scenario
from tests.strategies import spans

BASE = 1_763_900_000_000_000_000


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def expected_output(scenario) -> dict[tuple[str, str], dict]:
    timeline = VersionTimeline()
    for record in scenario.reloads:
        timeline.add(ReloadEvent.from_dict(record))
    return {(s["trace_id"], s["span_id"]): enrich(s, timeline) for s in scenario.spans}  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", [".jsonl", ".avro"])
def test_replay_equals_enrich_for_every_span_in_input_order(tmp_path: Path, suffix: str) -> None:
    scenario = build_scenario(seed=7, base_time_unix_nano=BASE, duration_s=3, spans_per_second=100)
    spans_path, reloads_path = scenario.write(tmp_path, suffix)
    summary = run_replay(spans_path, reloads_path, tmp_path / "out", progress=False, detect=False)
    rows = read_jsonl(summary.enriched_path)
    expected = expected_output(scenario)
    if suffix == ".avro":  # read back with the newest Span schema: the v2 fields at their defaults
        expected = {key: {**lossless_defaults(), **row} for key, row in expected.items()}
    assert [(r["trace_id"], r["span_id"]) for r in rows] == [  # file order kept
        (s["trace_id"], s["span_id"]) for s in (read_jsonl(spans_path) if suffix == ".jsonl" else rows)
    ]
    assert {(r["trace_id"], r["span_id"]): r for r in rows} == expected
    assert summary.spans_written == len(scenario.spans) and summary.spans_skipped == 0
    assert summary.reloads_used == len(scenario.reloads)
    assert any(r["mid_flight"] for r in rows) and any(len(r["mid_flight_reload_ids"]) > 1 for r in rows)
    assert summary.distinct_answers < len(rows)  # the segment memo is doing its job
    assert summary.anomalies_path.read_bytes() == b""


def test_the_order_of_either_file_does_not_matter(tmp_path: Path) -> None:
    scenario = build_scenario(seed=3, base_time_unix_nano=BASE, duration_s=2, spans_per_second=80)
    outputs = []
    for attempt in range(3):
        spans, reloads = list(scenario.spans), list(scenario.reloads)
        random.Random(attempt).shuffle(spans)
        random.Random(attempt + 10).shuffle(reloads)
        directory = tmp_path / str(attempt)
        write_records(directory / "spans.jsonl", "Span", spans)
        write_records(directory / "reloads.avro", "ReloadEvent", reloads)
        summary = run_replay(directory / "spans.jsonl", directory / "reloads.avro", directory / "out", detect=False)
        outputs.append(sorted(read_jsonl(summary.enriched_path), key=lambda r: r["span_id"]))
    assert outputs[0] == outputs[1] == outputs[2]


def test_invalid_records_are_skipped_and_reported_with_their_line_numbers(tmp_path: Path) -> None:
    scenario = build_scenario(seed=5, base_time_unix_nano=BASE, duration_s=1, spans_per_second=20)
    good = scenario.spans[0]
    lines = [
        orjson.dumps(good),
        b"{not json",
        orjson.dumps({**scenario.spans[1], "end_time_unix_nano": 0}),  # end < start
        b"",
        orjson.dumps({k: v for k, v in scenario.spans[2].items() if k != "span_id"}),
        b"[1, 2]",
        orjson.dumps(scenario.spans[3]),
    ]
    (tmp_path / "spans.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    reload_lines = [orjson.dumps(r) for r in scenario.reloads] + [orjson.dumps({"reload_id": "x"})]
    (tmp_path / "reloads.jsonl").write_bytes(b"\n".join(reload_lines) + b"\n")
    summary = run_replay(tmp_path / "spans.jsonl", tmp_path / "reloads.jsonl", tmp_path / "out", detect=False)
    assert summary.spans_written == 2 and summary.spans_skipped == 4 and summary.reloads_skipped == 1
    positions = {(Path(s.path).name, s.position) for s in summary.skipped}
    assert positions == {("spans.jsonl", 2), ("spans.jsonl", 3), ("spans.jsonl", 5), ("spans.jsonl", 6),
                         ("reloads.jsonl", len(scenario.reloads) + 1)}
    reasons = {s.position: s.reason for s in summary.skipped if s.path.endswith("spans.jsonl")}
    assert "not JSON" in reasons[2] and "end_time_unix_nano" in reasons[3] and "span_id" in reasons[5]
    assert [r["span_id"] for r in read_jsonl(summary.enriched_path)] == [good["span_id"], scenario.spans[3]["span_id"]]


def test_unreadable_inputs_raise_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "reloads.jsonl").write_bytes(b"")
    with pytest.raises(RecordFileError, match="cannot open"):
        run_replay(tmp_path / "missing.jsonl", tmp_path / "reloads.jsonl", tmp_path / "out")
    (tmp_path / "spans.csv").write_text("a,b\n")
    with pytest.raises(RecordFileError, match="unknown extension"):
        run_replay(tmp_path / "spans.csv", tmp_path / "reloads.jsonl", tmp_path / "out")
    (tmp_path / "spans.avro").write_bytes(b"definitely not avro")
    with pytest.raises(RecordFileError, match="Avro"):
        run_replay(tmp_path / "spans.avro", tmp_path / "reloads.jsonl", tmp_path / "out")
    write_records(tmp_path / "ok.jsonl", "Span", [])
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(ReplayError, match="cannot write"):
        run_replay(tmp_path / "ok.jsonl", tmp_path / "reloads.jsonl", tmp_path / "a-file")


def test_cli_writes_both_files_reports_skips_and_fails_on_unreadable_input(tmp_path: Path) -> None:
    scenario = build_scenario(seed=9, base_time_unix_nano=BASE, duration_s=1, spans_per_second=30)
    spans_path, reloads_path = scenario.write(tmp_path)
    with spans_path.open("ab") as handle:
        handle.write(b"garbage\n")
    command = [sys.executable, "-m", "streams.cli", "replay", "--spans", str(spans_path), "--reloads",
               str(reloads_path), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"wrote {len(scenario.spans)} enriched spans" in done.stdout
    assert "skipped 1 invalid spans" in done.stderr and f"line {len(scenario.spans) + 1}" in done.stderr
    assert len(read_jsonl(tmp_path / "out" / "enriched_spans.jsonl")) == len(scenario.spans)
    assert (tmp_path / "out" / "anomalies.jsonl").exists()
    command[command.index("--spans") + 1] = str(tmp_path / "nope.avro")
    failed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and "nope.avro" in failed.stderr and "cannot open" in failed.stderr


EDGE_VALUES = [
    None, True, 0, -1, 1.5, 2**63 - 1, 2**63, "", "x", "0" * 16, "0" * 32, "A" * 16, "g" * 32, "a" * 17, "SERVER",
    "ERROR", "server", [], {}, {"k": None}, {"k": [1]}, {1: "x"}, {"k": 1.5, "b": True}, b"bytes",
]
edge_values = st.sampled_from(EDGE_VALUES)
junk = st.one_of(edge_values, st.integers(0, 2**62), st.text("0123456789abcdef", min_size=15, max_size=33),
                 st.integers(-(2**64), 2**64), st.floats(), st.text(max_size=5))


FIELDS = sorted(Span.__annotations__)


@settings(max_examples=600)
@given(span=spans(), broken=st.lists(st.tuples(st.sampled_from(FIELDS), junk), max_size=2),
       dropped=st.sets(st.sampled_from(FIELDS), max_size=1), swap=st.booleans())
def test_the_fast_validity_check_never_accepts_what_validate_span_rejects(span, broken, dropped, swap) -> None:
    assert plainly_valid(span)  # valid spans take the fast path
    mutated = {name: value for name, value in {**span, **dict(broken)}.items() if name not in dropped}
    if swap:
        mutated["start_time_unix_nano"], mutated["end_time_unix_nano"] = span["end_time_unix_nano"], span["start_time_unix_nano"]
    if plainly_valid(mutated):
        validate_span(mutated)  # must not raise
    else:
        with contextlib.suppress(InvalidRecordError):
            validate_span(mutated)


def test_the_fast_check_agrees_with_validate_span_on_every_single_field_edge_case() -> None:
    base = build_scenario(seed=1, base_time_unix_nano=BASE, duration_s=1, spans_per_second=5).spans[0]
    cases = [{**base, name: value} for name in FIELDS for value in EDGE_VALUES]
    cases += [{k: v for k, v in base.items() if k != name} for name in FIELDS]
    cases.append({**base, "start_time_unix_nano": base["end_time_unix_nano"] + 1})
    rejected = 0
    for case in cases:
        try:
            validate_span(case)
        except InvalidRecordError:
            rejected += 1
            assert not plainly_valid(case), case
    assert rejected > 100  # the table really probes the rules
