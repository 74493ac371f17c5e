"""Unit tests of the detection core: windows, cut, one-sidedness, canaries, floors, looks, severity, health."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.records import Anomaly, ReloadEvent
from streams.detection import (
    ERROR_RATE,
    LATENCY,
    RELOAD_DURATION,
    RELOAD_FAILED,
    DetectionError,
    DetectionSettings,
    RegressionDetector,
    RequestObservation,
    anomaly_id,
    detect_offline,
    strongest,
)
from streams.request_feed import RequestRow
from tests.streams.test_detect_traffic import EPOCH_NS, generate

S = 1_000_000_000
T = EPOCH_NS + 600 * S  # every reload of these tests is effective here unless said otherwise


def reload(
    reload_id: str = "r1",
    *,
    at: int = T,
    service: str = "svc",
    component: str = "model",
    status: str = "SUCCEEDED",
    instance: str | None = None,
    duration_ns: int = S // 10,
    requested: int | None = None,
) -> ReloadEvent:
    return ReloadEvent(
        reload_id=reload_id,
        service_name=service,
        component=component,
        old_version="v1",
        new_version="v2",
        requested_time_unix_nano=at - duration_ns if requested is None else requested,
        effective_time_unix_nano=at,
        status=status,  # type: ignore[arg-type]
        source="test",
        service_instance_id=instance,
    )


def traffic(
    start: int,
    end: int,
    *,
    median_ms: float = 40.0,
    error_rate: float = 0.0,
    every_ns: int = S // 10,
    instances: tuple[str, ...] = ("i0",),
    kind: str = "SERVER",
    seed: int = 0,
) -> list[RequestRow]:
    """One request every ``every_ns`` on a grid, log-normal latencies, errors at a fixed rate."""
    rng = np.random.default_rng(seed)
    starts = list(range(start, end, every_ns))
    latencies = median_ms * rng.lognormal(0, 0.3, len(starts))
    errors = rng.random(len(starts)) < error_rate
    return [
        RequestRow(instances[i % len(instances)], s, s + int(latency * 1e6), bool(error), kind)
        for i, (s, latency, error) in enumerate(zip(starts, latencies, errors, strict=True))
    ]


def detector_with(*rows_lists: list, settings: DetectionSettings | None = None, service: str = "svc") -> RegressionDetector:
    detector = RegressionDetector(settings or DetectionSettings())
    for rows in rows_lists:
        detector.add_rows(service, rows)
    return detector


def metrics(anomalies: list[dict]) -> set[tuple[str, str]]:
    return {(a.reload_id, a.metric) for a in anomalies}


# --- windows ---------------------------------------------------------------------------------


def test_baseline_is_the_window_before_and_candidate_starts_at_the_reload() -> None:
    settings = DetectionSettings(window_ms=60_000)
    detector = detector_with(traffic(T - 120 * S, T + 120 * S, every_ns=S), settings=settings)
    latency, _ = detector.judge_window(reload(), T + 10 * S)
    # [T-60s, T) holds 60 one-per-second requests (T-60s included, T excluded); [T, T+10s) holds 10.
    assert (latency.baseline_count, latency.observed_count) == (60, 10)


def test_candidate_is_cut_at_the_next_succeeded_reload_of_any_component() -> None:
    settings = DetectionSettings(window_ms=60_000, look_schedule_ms=(10_000,))
    slow_after_next = traffic(T + 20 * S, T + 60 * S, median_ms=400.0, seed=2)
    detector = detector_with(traffic(T - 60 * S, T + 20 * S), slow_after_next, settings=settings)
    detector.add_reload(reload("r1"))
    detector.add_reload(reload("r2", at=T + 20 * S, component="routing_rules"))
    anomalies = detector.finish()
    assert ("r1", LATENCY) not in metrics(anomalies)  # the slowdown is r2's, not r1's
    assert ("r2", LATENCY) in metrics(anomalies)


def test_a_failed_next_reload_does_not_cut_the_window() -> None:
    settings = DetectionSettings(window_ms=60_000, look_schedule_ms=(10_000,))
    detector = detector_with(
        traffic(T - 60 * S, T + 20 * S), traffic(T + 20 * S, T + 60 * S, median_ms=400.0, seed=2), settings=settings
    )
    detector.add_reload(reload("r1"))
    detector.add_reload(reload("r2", at=T + 20 * S, status="FAILED"))
    anomalies = detector.finish()
    latency = [a for a in anomalies if a.metric == LATENCY]
    assert [a.reload_id for a in latency] == ["r1"]
    assert latency[0].detected_time_unix_nano == T + 60 * S  # only the full window saw the slowdown


# --- one-sidedness, floors, minimum counts ------------------------------------------------------


def test_latency_regression_is_flagged_and_an_improvement_is_not() -> None:
    slower = detector_with(traffic(T - 300 * S, T), traffic(T, T + 300 * S, median_ms=80.0, seed=1))
    slower.add_reload(reload())
    assert (("r1", LATENCY)) in metrics(slower.finish())
    faster = detector_with(traffic(T - 300 * S, T), traffic(T, T + 300 * S, median_ms=20.0, seed=1))
    faster.add_reload(reload())
    assert faster.finish() == []


def test_error_regression_is_flagged_and_fewer_errors_are_not() -> None:
    worse = detector_with(traffic(T - 300 * S, T, error_rate=0.01), traffic(T, T + 300 * S, error_rate=0.2, seed=1))
    worse.add_reload(reload())
    assert metrics(worse.finish()) == {("r1", ERROR_RATE)}
    better = detector_with(traffic(T - 300 * S, T, error_rate=0.2), traffic(T, T + 300 * S, error_rate=0.01, seed=1))
    better.add_reload(reload())
    assert better.finish() == []


def test_significant_but_immaterial_changes_do_not_alert() -> None:
    # 10% slower over 3000 requests is highly significant yet below the 1.3 ratio floor.
    small = detector_with(traffic(T - 300 * S, T), traffic(T, T + 300 * S, median_ms=44.0, seed=1))
    small.add_reload(reload())
    latency, _ = small.judge_window(reload(), T + 300 * S)
    assert latency.p_value < 1e-6 and latency.severity is None
    assert small.finish() == []
    # Doubling a 1 ms latency is under the absolute floor (5 ms).
    tiny = detector_with(traffic(T - 300 * S, T, median_ms=1.0), traffic(T, T + 300 * S, median_ms=2.0, seed=1))
    tiny.add_reload(reload())
    assert tiny.finish() == []
    # 1% -> 3% errors: under the 5-point delta floor.
    errors = detector_with(traffic(T - 300 * S, T, error_rate=0.01), traffic(T, T + 300 * S, error_rate=0.03, seed=1))
    errors.add_reload(reload())
    assert errors.finish() == []


def test_minimum_sample_counts_in_both_windows() -> None:
    settings = DetectionSettings(min_baseline_samples=30, min_candidate_samples=20)
    # 29 baseline requests: nothing is judged, however slow the candidate.
    few_before = detector_with(
        traffic(T - 29 * S, T, every_ns=S), traffic(T, T + 300 * S, median_ms=400.0, seed=1), settings=settings
    )
    few_before.add_reload(reload())
    assert few_before.finish() == []
    # 19 candidate requests: same.
    few_after = detector_with(traffic(T - 300 * S, T), traffic(T, T + 19 * S, median_ms=400.0, every_ns=S), settings=settings)
    few_after.add_reload(reload())
    assert few_after.finish() == []
    # One more of each is enough.
    enough = detector_with(
        traffic(T - 30 * S, T, every_ns=S), traffic(T, T + 20 * S, median_ms=400.0, every_ns=S, seed=1), settings=settings
    )
    enough.add_reload(reload())
    assert ("r1", LATENCY) in metrics(enough.finish())


def test_no_prior_traffic_means_no_verdict() -> None:
    detector = detector_with(traffic(T, T + 300 * S, median_ms=400.0, error_rate=0.5))
    detector.add_reload(reload())
    assert detector.finish() == []


def test_server_spans_are_the_requests_and_other_kinds_count_only_without_them() -> None:
    slow_clients = traffic(T, T + 300 * S, median_ms=400.0, kind="CLIENT", seed=3)
    servers = detector_with(traffic(T - 300 * S, T), traffic(T, T + 300 * S, seed=1), slow_clients)
    servers.add_reload(reload())
    assert servers.finish() == []  # the slow CLIENT spans are not requests of the service
    internal_only = detector_with(
        traffic(T - 300 * S, T, kind="INTERNAL"), traffic(T, T + 300 * S, median_ms=400.0, kind="INTERNAL", seed=1)
    )
    internal_only.add_reload(reload())
    assert ("r1", LATENCY) in metrics(internal_only.finish())


# --- canaries ------------------------------------------------------------------------------------


def test_canary_is_compared_with_its_peers_over_the_same_period() -> None:
    peers = ("i0", "i1", "i2")
    settings = DetectionSettings(window_ms=120_000)
    detector = detector_with(
        traffic(T - 120 * S, T + 120 * S, instances=peers),
        traffic(T, T + 120 * S, median_ms=90.0, instances=("canary",), every_ns=S // 2, seed=4),
        settings=settings,
    )
    detector.add_reload(reload("c1", instance="canary"))
    anomalies = [a for a in detector.finish() if a.metric == LATENCY]
    assert len(anomalies) >= 1 and anomalies[0].baseline_value == pytest.approx(40.0, rel=0.1)
    assert anomalies[0].observed_value == pytest.approx(90.0, rel=0.1)


def test_canary_unchanged_while_the_whole_service_slows_is_not_blamed() -> None:
    # Everything is slower after T (another cause); the canary is as slow as its peers.
    detector = detector_with(
        traffic(T - 300 * S, T, instances=("i0", "i1", "canary")),
        traffic(T, T + 300 * S, median_ms=120.0, instances=("i0", "i1", "canary"), seed=5),
    )
    detector.add_reload(reload("c1", instance="canary"))
    assert detector.finish() == []


# --- sequential looks --------------------------------------------------------------------------


def test_look_waits_for_the_watermark_and_uses_only_requests_started_before_it() -> None:
    detector = detector_with(traffic(T - 300 * S, T), traffic(T, T + 300 * S, median_ms=200.0, seed=1))
    detector.add_reload(reload())
    assert detector.advance(T + 2 * S - 1) == []  # the 2 s look is not due yet
    anomalies = detector.advance(T + 2 * S)
    assert [(a.metric, a.observed_count, a.detected_time_unix_nano) for a in anomalies] == [
        (LATENCY, 20, T + 2 * S)
    ]


def test_looks_past_the_cut_collapse_into_one_look_at_the_cut() -> None:
    settings = DetectionSettings(look_schedule_ms=(10_000, 20_000, 60_000))
    detector = detector_with(traffic(T - 300 * S, T), traffic(T, T + 300 * S, seed=1), settings=settings)
    detector.add_reload(reload("r1"))
    detector.add_reload(reload("r2", at=T + 15 * S))
    detector.advance(T + 30 * S)  # looks at 10 s and at the cut (15 s) are due; r1 is done
    assert detector.pending_count == 1  # only r2 is still being judged


def test_first_sufficient_look_sets_detection_time_and_severity_only_rises() -> None:
    detector = detector_with(traffic(T - 300 * S, T), traffic(T, T + 300 * S, median_ms=60.0, seed=1))
    detector.add_reload(reload())
    anomalies = detector.finish()
    latency = [a for a in anomalies if a.metric == LATENCY]
    assert [a.severity for a in latency] == ["WARNING"]  # 1.5x: never CRITICAL (ratio 1.8)
    double = detector_with(traffic(T - 300 * S, T), traffic(T, T + 300 * S, median_ms=80.0, seed=1))
    double.add_reload(reload())
    records = [a for a in double.finish() if a.metric == LATENCY]
    severities = [a.severity for a in records]
    assert severities in (["CRITICAL"], ["WARNING", "CRITICAL"])
    assert len({a.anomaly_id for a in records}) == 1 == len({a.detected_time_unix_nano for a in records})
    assert records[0].anomaly_id == anomaly_id("r1", LATENCY)


def test_each_reload_is_judged_once_and_duplicates_are_ignored() -> None:
    detector = detector_with(traffic(T - 300 * S, T), traffic(T, T + 300 * S, median_ms=200.0, seed=1))
    assert detector.add_reload(reload()) is True
    first = detector.finish()
    assert detector.add_reload(reload()) is False
    assert detector.finish() == [] and len(first) >= 1


def test_streaming_in_chunks_equals_offline() -> None:
    data = generate(7)
    offline = detect_offline(data.spans(), data.reloads, DetectionSettings())
    detector = RegressionDetector(DetectionSettings())
    requests = sorted(data.requests, key=lambda r: r.start_time_unix_nano)
    streamed: list[dict] = []
    reloads = sorted(data.reloads, key=lambda r: r.effective_time_unix_nano)
    for chunk_start in range(0, len(requests), 777):
        chunk = requests[chunk_start : chunk_start + 777]
        for request in chunk:
            detector.add_request(request)
        while reloads and reloads[0].effective_time_unix_nano <= chunk[-1].start_time_unix_nano:
            detector.add_reload(reloads.pop(0))
        # Every request started before the next one, and every reload effective before the next, is in.
        rest = requests[chunk_start + 777 : chunk_start + 778]
        watermark = min([r.start_time_unix_nano for r in rest] + [r.effective_time_unix_nano for r in reloads[:1]] + [2**62])
        streamed += detector.advance(watermark)
        detector.prune(watermark)
    for remaining in reloads:
        detector.add_reload(remaining)
    streamed += detector.finish()
    key = lambda a: (a.anomaly_id, a.severity)
    assert sorted(streamed, key=key) == sorted(offline, key=key) and offline


# --- reload health -----------------------------------------------------------------------------


def test_failed_reloads_in_a_row_raise_severity() -> None:
    detector = RegressionDetector(DetectionSettings())
    for number in range(4):
        detector.add_reload(reload(f"f{number}", at=T + number * S, status="FAILED"))
    detector.add_reload(reload("ok", at=T + 10 * S))
    detector.add_reload(reload("f-after", at=T + 20 * S, status="FAILED"))
    failed = {a.reload_id: a.severity for a in detector.finish() if a.metric == RELOAD_FAILED}
    assert failed == {"f0": "INFO", "f1": "WARNING", "f2": "CRITICAL", "f3": "CRITICAL", "f-after": "INFO"}


def test_slow_reloads_are_reported_against_history_and_ceiling() -> None:
    detector = RegressionDetector(DetectionSettings())
    for number in range(5):
        detector.add_reload(reload(f"h{number}", at=T + number * 60 * S, duration_ns=S // 5))
    detector.add_reload(reload("slow", at=T + 400 * S, duration_ns=3 * S))
    detector.add_reload(reload("stuck", at=T + 800 * S, duration_ns=90 * S, component="credentials"))
    health = {a.reload_id: (a.severity, a.observed_value) for a in detector.finish() if a.metric == RELOAD_DURATION}
    assert health == {"slow": ("WARNING", 3000.0), "stuck": ("CRITICAL", 90000.0)}


# --- inputs and settings -----------------------------------------------------------------------


def test_settings_from_environment_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELOADTRACE_DETECTION_LOOK_SCHEDULE_MS", "1000,3000")
    monkeypatch.setenv("RELOADTRACE_DETECTION_WINDOW_MS", "60000")
    settings = DetectionSettings()
    assert settings.looks_ms == (1_000, 3_000, 60_000)
    assert DetectionSettings(window_ms=30_000, look_schedule_ms=(10_000, 60_000)).looks_ms == (10_000, 30_000)
    assert settings.alpha_per_look == pytest.approx(settings.alpha / 3)
    with pytest.raises(ValidationError):
        DetectionSettings(window_ms=60_000, look_schedule_ms=(-5,))
    with pytest.raises(ValidationError):
        DetectionSettings(alpha=0.001, critical_alpha=0.01)


def test_a_span_without_the_fields_detection_needs_is_a_clear_error() -> None:
    with pytest.raises(DetectionError):
        detect_offline([{"service_name": "svc"}], [], DetectionSettings())
    observation = RequestObservation.from_span(
        {"service_name": "s", "service_instance_id": "i", "start_time_unix_nano": 1, "end_time_unix_nano": 2,
         "status_code": "ERROR", "kind": "SERVER"}
    )
    assert observation.is_error


def test_strongest_keeps_the_highest_severity_per_anomaly() -> None:
    def record(identity: str, severity: str, n: int) -> Anomaly:
        return Anomaly(identity, "r1", "svc", "model", "v1", "v2", LATENCY, 40.0, 80.0, 1e-9, 100, n, T, severity)

    records = [record("a", "WARNING", 1), record("a", "CRITICAL", 2), record("b", "INFO", 3)]
    assert {k: v.observed_count for k, v in strongest(records).items()} == {"a": 2, "b": 3}


@given(seed=st.integers(0, 10_000), max_delay_s=st.floats(0.0, 90.0), chunk=st.integers(1, 500))
@settings(max_examples=6)
def test_any_arrival_order_within_the_watermark_bound_gives_the_offline_answer(seed: int, max_delay_s: float, chunk: int) -> None:
    """Requests and reloads arriving up to D late, in any batching, with a watermark of arrival time - D, change nothing."""
    data = generate(seed, rate_per_s=6.0)
    settings = DetectionSettings()
    offline = detect_offline(data.spans(), data.reloads, settings)
    rng = np.random.default_rng(seed)
    max_delay = int(max_delay_s * 1_000_000_000)
    arrivals = [(r.start_time_unix_nano + int(rng.integers(0, max_delay + 1)), 0, i) for i, r in enumerate(data.requests)]
    arrivals += [(r.effective_time_unix_nano + int(rng.integers(0, max_delay + 1)), 1, i) for i, r in enumerate(data.reloads)]
    arrivals.sort()
    detector = RegressionDetector(settings)
    streamed: list[dict] = []
    for position in range(0, len(arrivals), chunk):
        batch = arrivals[position : position + chunk]
        for _, what, index in batch:
            if what == 0:
                detector.add_request(data.requests[index])
            else:
                detector.add_reload(data.reloads[index])
        streamed += detector.advance(batch[-1][0] - max_delay)  # what arrives later started after this
    streamed += detector.finish()
    key = lambda a: (a.anomaly_id, a.severity)
    assert sorted(streamed, key=key) == sorted(offline, key=key)


def test_a_request_delivered_twice_counts_once() -> None:
    once = detector_with(traffic(T - 300 * S, T), traffic(T, T + 300 * S, median_ms=60.0, seed=1))
    rows = traffic(T, T + 300 * S, median_ms=60.0, seed=1)
    twice = detector_with(traffic(T - 300 * S, T), rows, rows[:1000])
    for detector in (once, twice):
        detector.add_reload(reload())
    assert twice.request_count() == once.request_count()
    assert twice.finish() == once.finish()


def test_an_ongoing_regression_is_blamed_on_the_next_reload_unless_the_baseline_starts_at_the_previous_one() -> None:
    # r1 doubles latency at T; r2 (no change) follows 30 s later while the regression goes on.
    rows = [traffic(T - 300 * S, T), traffic(T, T + 300 * S, median_ms=80.0, seed=1)]
    as_designed = detector_with(*rows)
    since_previous = detector_with(*rows, settings=DetectionSettings(baseline_since_previous_reload=True))
    for detector in (as_designed, since_previous):
        detector.add_reload(reload("r1"))
        detector.add_reload(reload("r2", at=T + 30 * S, component="feature_flags"))
    assert ("r2", LATENCY) in metrics(as_designed.finish())  # baseline [T2 - W, T2) is mostly pre-regression
    flagged = metrics(since_previous.finish())
    assert ("r1", LATENCY) in flagged and ("r2", LATENCY) not in flagged
