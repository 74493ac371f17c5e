"""Acceptance on the gateway simulator (real OTel SDK spans): 20 seeds, every regression flagged, benign reloads quiet.

Per seed, four services at 10 requests/s on 3 instances (10% long streaming requests, as the
simulator draws them): latency x2 and error rate 1% -> 15% after a service-wide reload, each ended
by the next reload (the benign "right after a regression" case), a canary with latency x2 on its
instance, and benign reloads: no change, FAILED, a no-change canary, and a service whose traffic
starts with its reload. The simulator's ground truth says which reloads regressed and how.
"""

from __future__ import annotations

import pytest

from gateway.simulation.config import Regression, ScheduledReload, SimulationConfig
from gateway.simulation.simulator import Simulation, simulate
from streams.detection import ERROR_RATE, LATENCY, DetectionSettings, detect_offline

SEEDS = range(20)


def scenario(seed: int) -> SimulationConfig:
    """The acceptance scenario (also timed by ``tests/benchmarks/bench_detection.py``)."""
    return SimulationConfig(
        seed=seed,
        services=("lat", "err", "steady", "cold"),
        instances_per_service=3,
        requests_per_second_per_service=10.0,
        duration_s=150.0,
        reloads=(
            ScheduledReload(45, "lat", "model"),
            ScheduledReload(90, "lat", "config"),
            ScheduledReload(45, "err", "model"),
            ScheduledReload(90, "err", "routing_rules", lateness_s=3.0),
            ScheduledReload(45, "steady", "feature_flags"),
            ScheduledReload(75, "steady", "model", fail=True),
            ScheduledReload(105, "steady", "prompt_template", instance=1),
            ScheduledReload(45, "cold", "model"),
            ScheduledReload(120, "lat", "prompt_template", instance=0, lateness_s=2.0),
        ),
        regressions=(
            Regression(reload_index=0, latency_factor=2.0),
            Regression(reload_index=2, error_rate=0.15),
            Regression(reload_index=8, latency_factor=2.0),
        ),
        traffic_windows={"cold": (45.0, 150.0)},
    )


def expected_metrics(simulation: Simulation) -> dict[str, set[str]]:
    """reload_id -> the metrics that must be flagged (empty = benign), from the ground truth."""
    expected = {}
    for row in simulation.ground_truth["reloads"]:
        regression = row["regression"]
        expected[row["reload_id"]] = set(regression["kind"].split("+")) if regression else set()
    return expected


@pytest.mark.slow
def test_simulated_regressions_are_flagged_and_benign_reloads_stay_quiet() -> None:
    misses, false_alarms, regressions = [], [], 0
    for seed in SEEDS:
        simulation = simulate(scenario(seed))
        anomalies = detect_offline(simulation.spans, simulation.reloads, DetectionSettings())
        alarms: dict[str, set[str]] = {}
        for anomaly in anomalies:
            if anomaly.severity != "INFO":
                alarms.setdefault(anomaly.reload_id, set()).add(anomaly.metric)
        for reload_id, metrics in expected_metrics(simulation).items():
            regressions += bool(metrics)
            flagged = alarms.get(reload_id, set())
            if metrics - flagged:
                misses.append((seed, reload_id, sorted(metrics - flagged)))
            if flagged - metrics:
                false_alarms.append((seed, reload_id, sorted(flagged - metrics)))
        assert {LATENCY, ERROR_RATE} <= set().union(*expected_metrics(simulation).values())
    assert regressions == 3 * len(SEEDS)
    assert misses == []
    assert false_alarms == []
