"""Ready-made simulation scenarios: regressions and the benign reloads a detector must stay quiet about."""

from __future__ import annotations

import random

from gateway.simulation.config import Regression, ScheduledReload, SimulationConfig

REGRESSION = "regression"
BENIGN_NO_CHANGE = "benign:no-change"
BENIGN_AFTER_REGRESSION = "benign:right-after-regression-ends"
BENIGN_NO_PRIOR_TRAFFIC = "benign:no-prior-traffic"
BENIGN_FAILED = "benign:failed"
BENIGN_CANARY_NO_CHANGE = "benign:canary-no-change"


def detection_scenario(
    seed: int,
    *,
    duration_s: float = 300.0,
    requests_per_second_per_service: float = 10.0,
    latency_factor: float = 2.0,
    regressed_error_rate: float = 0.15,
    base_error_rate: float = 0.01,
    late_fraction: float = 0.0,
    max_lateness_s: float = 5.0,
) -> SimulationConfig:
    """Three services, two instances each, with labelled reloads (``ground_truth["reloads"][i]["label"]``).

    - ``llm-gateway``: model reload at 25% → regression (latency x ``latency_factor`` and error rate
      ``regressed_error_rate``); config reload at 45% ends it (benign, right after a regression);
      a FAILED feature-flags reload at 65%; a canary routing-rules reload with no change at 80%.
    - ``chat-api``: prompt-template reload at 30% with no change; rate-limit reload at 60% →
      latency-only regression; credentials reload at 85% ends it (benign).
    - ``batch-api``: a config reload at 20% with no traffic before it (requests start at 50%).

    Times move by up to ±2% of the run with the seed; the same seed gives the same scenario.
    ``late_fraction`` publishes that share of the reloads up to ``max_lateness_s`` late.
    """
    rng = random.Random(seed * 104_729 + 3)

    def at(fraction: float) -> float:
        return round(duration_s * (fraction + rng.uniform(-0.02, 0.02)), 3)

    def late() -> float:
        return round(rng.uniform(1.0, max(1.0, max_lateness_s)), 3) if rng.random() < late_fraction else 0.0

    schedule = (
        ScheduledReload(at(0.25), "llm-gateway", "model", lateness_s=late(), label=REGRESSION),
        ScheduledReload(at(0.45), "llm-gateway", "config", lateness_s=late(), label=BENIGN_AFTER_REGRESSION),
        ScheduledReload(at(0.65), "llm-gateway", "feature_flags", fail=True, lateness_s=late(), label=BENIGN_FAILED),
        ScheduledReload(
            at(0.80), "llm-gateway", "routing_rules", instance=0, lateness_s=late(), label=BENIGN_CANARY_NO_CHANGE
        ),
        ScheduledReload(at(0.30), "chat-api", "prompt_template", lateness_s=late(), label=BENIGN_NO_CHANGE),
        ScheduledReload(at(0.60), "chat-api", "rate_limit_policy", lateness_s=late(), label=REGRESSION),
        ScheduledReload(at(0.85), "chat-api", "credentials", lateness_s=late(), label=BENIGN_AFTER_REGRESSION),
        ScheduledReload(at(0.20), "batch-api", "config", lateness_s=late(), label=BENIGN_NO_PRIOR_TRAFFIC),
    )
    return SimulationConfig(
        seed=seed,
        services=("llm-gateway", "chat-api", "batch-api"),
        instances_per_service=2,
        requests_per_second_per_service=requests_per_second_per_service,
        duration_s=duration_s,
        reloads=schedule,
        regressions=(
            Regression(reload_index=0, latency_factor=latency_factor, error_rate=regressed_error_rate),
            Regression(reload_index=5, latency_factor=latency_factor),
        ),
        base_error_rate=base_error_rate,
        traffic_windows={"batch-api": (duration_s * 0.5, duration_s)},
    )
