"""The short hostile-producer soak of ``make test`` (the long one: ``make fuzz``, tests/benchmarks/bench_fuzz.py).

A few thousand mutated and oversized messages of every kind in :data:`tests.e2e.hostile.KINDS` go
into one running worker beside simulated traffic: the worker never restarts, the valid spans land
exactly as the replay enriches them, and every bad message is in ``dead_letters`` exactly once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from schemas.settings import KafkaSettings
from tests.e2e.hostile import KINDS, report_lines, run_soak

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

BAD_MESSAGES = int(os.environ.get("RELOADTRACE_SOAK_MESSAGES", "2500"))


def test_hostile_messages_never_stop_the_worker_nor_corrupt_the_store(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    from gateway.simulation.config import ScheduledReload, SimulationConfig
    from gateway.simulation.simulator import simulate

    simulation = simulate(
        SimulationConfig(
            seed=14,
            services=("llm-gateway", "chat-api"),
            instances_per_service=2,
            requests_per_second_per_service=60.0,
            duration_s=20.0,
            start_time_unix_nano=time.time_ns() // 1_000_000 * 1_000_000,
            reloads=(
                ScheduledReload(at_s=5.0, service="llm-gateway", component="model", lateness_s=3.0),
                ScheduledReload(at_s=11.0, service="chat-api", component="config"),
            ),
        )
    )
    notes: list[str] = []
    result = run_soak(kafka_settings, tmp_path, simulation=simulation, bad_messages=BAD_MESSAGES, pace=2.0, log=notes.append)
    summary = "\n".join(report_lines(result) + notes[-3:])
    assert set(result.by_kind) == set(KINDS), summary
    assert result.restarts == 0, summary
    assert result.lost == result.unexpected == result.duplicate_spans == result.wrong == result.reloads_missing == 0, summary
    assert result.not_dead_lettered == result.dead_lettered_twice == result.dead_lettered_valid == 0, summary
    assert result.truncated_letters >= 2, summary  # the oversized ones kept a prefix
