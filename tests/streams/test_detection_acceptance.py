"""Acceptance: on simulated traffic, every injected regression is flagged and no benign reload alarms.

Traffic: about 10 requests/s per service on 4 instances; injected regressions are latency x2,
error rate 1% -> 15%, and a canary with latency x2 on its instance; benign reloads are a
no-change reload, the revert right after each regression, a reload with no prior traffic, a
FAILED reload, a no-change canary and a no-change reload of another component. This is the
quick generator of the detection tests; ``test_detection_simulated.py`` runs the same property on
the gateway simulator's OTel spans.
"""

from __future__ import annotations

from streams.detection import ERROR_RATE, LATENCY, DetectionSettings, detect_offline
from tests.streams.test_detect_traffic import generate

SEEDS = range(24)
REGRESSION_METRICS = {LATENCY, ERROR_RATE}


def test_injected_regressions_are_flagged_and_benign_reloads_stay_quiet() -> None:
    misses, false_alarms = [], []
    for seed in SEEDS:
        data = generate(seed)
        anomalies = detect_offline(data.spans(), data.reloads, DetectionSettings())
        assert all(a.reload_id for a in anomalies)
        alarms = {(a.reload_id, a.metric) for a in anomalies if a.severity != "INFO"}
        for expectation in data.truth:
            flagged = {metric for reload_id, metric in alarms if reload_id == expectation.reload_id}
            if expectation.metric is not None and expectation.metric not in flagged:
                misses.append((seed, expectation.label))
            wrong = flagged - {expectation.metric}
            if wrong:
                false_alarms.append((seed, expectation.label, sorted(wrong)))
    assert misses == []
    assert false_alarms == []


def test_the_failed_reload_is_recorded_as_info_not_an_alarm() -> None:
    data = generate(3)
    anomalies = detect_offline(data.spans(), data.reloads, DetectionSettings())
    failed = [a for a in anomalies if a.reload_id == "steady-r2"]
    assert [(a.metric, a.severity) for a in failed] == [("reload_failed", "INFO")]
