"""The simulator: determinism to the byte, and a ground truth consistent with the spans and the DESIGN rules."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.attributes import MID_FLIGHT, MID_FLIGHT_RELOAD_IDS
from gateway.simulation.config import Regression, ScheduledReload, SimulationConfig, SimulationConfigError
from gateway.simulation.output import write_simulation
from gateway.simulation.simulator import mid_flight_reloads, simulate
from gateway.versioning import COMPONENT_KINDS
from schemas.records import ReloadEvent, validate_span

REPO = Path(__file__).resolve().parents[3]
BUSY = SimulationConfig(
    seed=11,
    duration_s=40,
    reloads_per_service=7,
    failed_fraction=0.2,
    canary_fraction=0.3,
    late_fraction=0.3,
    requests_per_second_per_service=8,
)


@pytest.fixture(scope="module")
def busy():
    return simulate(BUSY)


def _version_at(reloads, span, component, t):
    """DESIGN: the SUCCEEDED reload with the greatest effective <= t; instance-specific wins ties."""
    best = None
    for event in reloads:
        if event.component != component or not event.succeeded or event.effective_time_unix_nano > t:
            continue
        if not event.applies_to(span["service_name"], span["service_instance_id"]):
            continue
        key = (event.effective_time_unix_nano, event.service_instance_id is not None)
        if best is None or key > best[0]:
            best = (key, event.new_version)
    return None if best is None else best[1]


def test_same_seed_same_bytes_other_seed_other_traffic(tmp_path: Path) -> None:
    config = SimulationConfig(seed=5, duration_s=15, regressions=(Regression(reload_index=0, latency_factor=2.0),))
    first, second = simulate(config), simulate(config)
    assert first.spans == second.spans and first.reloads == second.reloads
    assert first.publish_order == second.publish_order and first.ground_truth == second.ground_truth
    for file_format in ("jsonl", "avro"):
        a = write_simulation(first, tmp_path / f"a-{file_format}", file_format=file_format)
        b = write_simulation(second, tmp_path / f"b-{file_format}", file_format=file_format)
        for name in a:
            assert a[name].read_bytes() == b[name].read_bytes(), name
    other = simulate(SimulationConfig(seed=6, duration_s=15))
    assert other.spans != first.spans


def test_the_command_writes_identical_files_across_processes(tmp_path: Path) -> None:
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        subprocess.run(
            [
                sys.executable,
                "-m",
                "streams.cli",
                "simulate",
                "--seed",
                "9",
                "--duration-s",
                "8",
                "--out",
                str(out),
                "--format",
                "avro",
            ],
            cwd=REPO,
            env=os.environ | {"PYTHONHASHSEED": hash_seed},
            check=True,
            capture_output=True,
        )
        outputs.append({path.name: path.read_bytes() for path in sorted(out.iterdir())})
    assert outputs[0] == outputs[1] and set(outputs[0]) == {"spans.avro", "reloads.avro", "ground_truth.json"}


def test_the_command_without_flags_runs_the_default_config(monkeypatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gateway.simulation import commands
    from streams.cli import app

    seen = []
    monkeypatch.setattr(commands, "run_simulate", lambda config, **_: seen.append(config) or 0)
    result = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen == [SimulationConfig()]


def test_records_follow_the_contract(busy) -> None:
    for span in busy.spans:
        validate_span(span)
    for event in busy.reloads:
        assert ReloadEvent.from_dict(event.to_dict()) == event
    kinds = {span["kind"] for span in busy.spans}
    assert {"SERVER", "CLIENT", "INTERNAL"} <= kinds
    client = next(s for s in busy.spans if s["kind"] == "CLIENT")
    assert {
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.request.temperature",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.response.model",
    } <= set(client["attributes"])
    deprecated = {"gen_ai.system", "feature_flag.variant", "feature_flag.provider_name", "deployment.environment"}
    assert not any(
        deprecated & (set(span["attributes"]) | set(span["resource_attributes"] or {})) for span in busy.spans
    )
    assert all(span["resource_attributes"]["deployment.environment.name"] == "simulation" for span in busy.spans)
    for span in busy.spans:  # the flag set names itself on every span, with the version serving it
        assert span["attributes"]["feature_flag.set.id"] == f"{span['service_name']}/flags"
        assert span["attributes"]["feature_flag.version"] == span["attributes"]["reload.version.feature_flags"]
    flag_reloads = [event for event in busy.reloads if event.component == "feature_flags"]
    assert flag_reloads and all(
        event.model_context
        == {"feature_flag.set.id": f"{event.service_name}/flags", "feature_flag.version": event.new_version}
        for event in flag_reloads
    )
    assert not any("authorization" in key for span in busy.spans for key in span["attributes"])
    assert len({(s["service_name"], s["service_instance_id"]) for s in busy.spans}) == 6
    durations = [s["end_time_unix_nano"] - s["start_time_unix_nano"] for s in busy.spans if s["kind"] == "SERVER"]
    assert max(durations) >= 2 * 10**9  # long streaming requests exist


def test_schedule_covers_every_kind_canaries_failures_and_late_publication(busy) -> None:
    rows = [row for row in busy.ground_truth["reloads"] if not row["initial"]]
    assert {row["component"] for row in rows} == set(COMPONENT_KINDS)
    assert any(row["service_instance_id"] for row in rows) and any(row["service_instance_id"] is None for row in rows)
    assert any(row["status"] == "FAILED" for row in rows)
    late = [row for row in rows if row["late"]]
    assert late and all(row["publication_delay_ns"] >= 10**9 for row in late)
    positions = {(item.kind, item.index): n for n, item in enumerate(busy.publish_order)}
    reload_index = {event.reload_id: i for i, event in enumerate(busy.reloads)}
    for row in late:  # spans that ended after it took effect but before it was published come first
        event_position = positions[("reload", reload_index[row["reload_id"]])]
        ended_meanwhile = [
            i
            for i, s in enumerate(busy.spans)
            if row["effective_time_unix_nano"] < s["end_time_unix_nano"] < row["published_time_unix_nano"]
        ]
        assert ended_meanwhile and all(positions[("span", i)] < event_position for i in ended_meanwhile)


def test_stamped_versions_and_mid_flight_marks_match_the_design_rules(busy) -> None:
    control_plane = set(busy.ground_truth["control_plane_span_ids"])
    failed_versions = {e.new_version for e in busy.reloads if not e.succeeded}
    mid_flight = busy.ground_truth["mid_flight_spans"]
    checked = 0
    for span in busy.spans:
        if span["span_id"] in control_plane:
            continue
        expected = mid_flight_reloads(span, busy.reloads)
        assert mid_flight.get(span["span_id"], []) == expected
        assert span["attributes"][MID_FLIGHT] is bool(expected)
        if expected:
            assert json.loads(span["attributes"][MID_FLIGHT_RELOAD_IDS]) == expected
        if span["kind"] == "SERVER":  # requests pin at their start: stamps = the timeline at start
            for component in COMPONENT_KINDS:
                stamped = span["attributes"][f"reload.version.{component}"]
                assert stamped == _version_at(busy.reloads, span, component, span["start_time_unix_nano"])
                assert stamped not in failed_versions
            checked += 1
    assert checked > 500 and len(mid_flight) > 20
    for reload_id, span_ids in busy.ground_truth["spans_by_reload"].items():
        assert all(reload_id in mid_flight[span_id] for span_id in span_ids)


def test_injected_regression_shows_in_latency_and_errors_and_ends_at_the_next_reload() -> None:
    schedule = (
        ScheduledReload(at_s=20.0, service="llm-gateway", component="model"),
        ScheduledReload(at_s=40.0, service="llm-gateway", component="config"),
        ScheduledReload(at_s=10.0, service="chat-api", component="feature_flags", instance=0),  # benign canary
    )
    config = SimulationConfig(
        seed=3,
        services=("llm-gateway", "chat-api"),
        duration_s=60,
        reloads=schedule,
        streaming_fraction=0.0,
        requests_per_second_per_service=10,
        regressions=(Regression(reload_id="sim3-r000", latency_factor=2.0, error_rate=0.15),),
    )
    simulation = simulate(config)
    requests = [s for s in simulation.spans if s["kind"] == "SERVER" and s["service_name"] == "llm-gateway"]
    start = config.start_time_unix_nano

    def window(low_s, high_s):
        return [s for s in requests if start + low_s * 10**9 <= s["start_time_unix_nano"] < start + high_s * 10**9]

    def median_ms(spans):
        return statistics.median((s["end_time_unix_nano"] - s["start_time_unix_nano"]) / 1e6 for s in spans)

    def error_rate(spans):
        return sum(s["status_code"] == "ERROR" for s in spans) / len(spans)

    before, during, after = window(0, 20), window(20, 40), window(40, 60)
    assert median_ms(during) > 1.6 * median_ms(before) and median_ms(after) < 1.3 * median_ms(before)
    assert error_rate(during) > 0.08 and error_rate(before) < 0.05 and error_rate(after) < 0.05
    (row,) = [r for r in simulation.ground_truth["reloads"] if r["reload_id"] == "sim3-r000"]
    assert row["regression"]["kind"] == "latency+error_rate"
    assert set(row["regression"]["until_unix_nano_by_instance"].values()) == {start + 40 * 10**9}
    assert simulation.ground_truth["regression_reload_ids"] == ["sim3-r000"]


def test_traffic_windows_express_a_reload_with_no_prior_traffic() -> None:
    config = SimulationConfig(
        seed=1,
        services=("quiet",),
        duration_s=20,
        traffic_windows={"quiet": (10.0, 20.0)},
        reloads=(ScheduledReload(at_s=5.0, service="quiet", component="config"),),
    )
    simulation = simulate(config)
    starts = [s["start_time_unix_nano"] for s in simulation.spans if s["kind"] == "SERVER"]
    assert starts and min(starts) >= config.start_time_unix_nano + 10 * 10**9


def test_impossible_scenarios_are_refused() -> None:
    failing = (ScheduledReload(at_s=5.0, service="llm-gateway", component="model", fail=True),)
    with pytest.raises(SimulationConfigError, match="FAIL"):
        simulate(
            SimulationConfig(
                duration_s=10, reloads=failing, regressions=(Regression(reload_index=0, latency_factor=2),)
            )
        )
    with pytest.raises(SimulationConfigError):
        simulate(
            SimulationConfig(duration_s=10, reloads=(), regressions=(Regression(reload_index=3, latency_factor=2),))
        )
    with pytest.raises(SimulationConfigError):
        SimulationConfig(reloads=(ScheduledReload(at_s=1, service="nope", component="model"),))


def test_detection_scenario_labels_match_what_happened() -> None:
    from gateway.simulation.scenarios import BENIGN_FAILED, BENIGN_NO_PRIOR_TRAFFIC, REGRESSION, detection_scenario

    config = detection_scenario(seed=2, duration_s=60, late_fraction=0.5)
    assert config == detection_scenario(seed=2, duration_s=60, late_fraction=0.5)
    simulation = simulate(config)
    rows = {row["reload_id"]: row for row in simulation.ground_truth["reloads"] if not row["initial"]}
    assert len(rows) == 8 and any(row["late"] for row in rows.values())
    for row in rows.values():
        assert (row["regression"] is not None) == (row["label"] == REGRESSION)
        assert (row["status"] == "FAILED") == (row["label"] == BENIGN_FAILED)
        if row["label"] == BENIGN_NO_PRIOR_TRAFFIC:
            before = [
                s
                for s in simulation.spans
                if s["service_name"] == row["service_name"]
                and s["kind"] == "SERVER"
                and s["start_time_unix_nano"] < row["effective_time_unix_nano"]
            ]
            assert before == []


def test_calls_between_services_nest_in_one_trace_and_carry_baggage() -> None:
    config = SimulationConfig(seed=8, duration_s=20, calls={"chat-api": "llm-gateway"})
    simulation = simulate(config)
    assert simulation.spans == simulate(config).spans
    by_id = {span["span_id"]: span for span in simulation.spans}
    called = [
        s
        for s in simulation.spans
        if s["service_name"] == "llm-gateway" and s["kind"] == "SERVER" and s["parent_span_id"] is not None
    ]
    callers = [s for s in simulation.spans if s["service_name"] == "chat-api" and s["kind"] == "SERVER"]
    assert called and len(called) == len(callers)
    for span in called:
        client = by_id[span["parent_span_id"]]
        caller = by_id[client["parent_span_id"]]
        assert (
            client["kind"] == "CLIENT"
            and client["service_name"] == "chat-api"
            and client["trace_id"] == span["trace_id"]
        )
        assert (
            client["start_time_unix_nano"]
            < span["start_time_unix_nano"]
            <= span["end_time_unix_nano"]
            < client["end_time_unix_nano"]
        )
        assert client["end_time_unix_nano"] <= caller["end_time_unix_nano"]
        for component in COMPONENT_KINDS:
            assert (
                span["attributes"][f"upstream.chat-api.{component}.version"]
                == caller["attributes"][f"reload.version.{component}"]
            )
        if span["status_code"] == "ERROR":
            assert caller["status_code"] == "ERROR"
    with pytest.raises(SimulationConfigError):
        SimulationConfig(calls={"chat-api": "chat-api"})
