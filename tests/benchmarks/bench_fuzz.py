"""Hostile-producer soak: ``FUZZ_MESSAGES`` (default 50,000) mutated and oversized messages into a running worker.

Beside simulated traffic (3 services, reloads, ~1.5k spans/s), on topics of its own on the broker
from ``KAFKA_BOOTSTRAP_SERVERS``: one ``reloadtrace worker`` with the embedded ClickHouse. Reported:
worker restarts (must be 0), valid spans lost / unexpected / duplicated / enriched unlike the replay
(all must be 0), and bad messages not in ``dead_letters`` or there more than once (must be 0). See
:mod:`tests.e2e.hostile` for the kinds of message and how each is judged. ``make fuzz`` runs it.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path

from infra.kafka import create_topics
from schemas.settings import KafkaSettings
from schemas.topics import TopicNames
from tests.e2e.hostile import report_lines, run_soak

MESSAGES = int(os.environ.get("FUZZ_MESSAGES", "50000"))
PARTITIONS = 4


def main() -> str:
    from gateway.simulation.config import ScheduledReload, SimulationConfig
    from gateway.simulation.simulator import simulate

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    topics = TopicNames(prefix=f"fuzz{uuid.uuid4().hex[:8]}.")
    create_topics(bootstrap, topics.with_configs(), partitions=PARTITIONS)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=topics.prefix, partitions=PARTITIONS)
    duration_s = max(30.0, MESSAGES / 400)  # ~400 bad messages per second of event time
    simulation = simulate(
        SimulationConfig(
            seed=14,
            services=("llm-gateway", "chat-api", "rag-api"),
            instances_per_service=2,
            requests_per_second_per_service=150.0,
            duration_s=duration_s,
            start_time_unix_nano=time.time_ns() // 1_000_000 * 1_000_000,
            reloads=tuple(
                ScheduledReload(at_s=duration_s * fraction, service=service, component=component, lateness_s=lateness)
                for fraction, service, component, lateness in (
                    (0.2, "llm-gateway", "model", 5.0), (0.45, "chat-api", "config", 0.0), (0.7, "rag-api", "prompt_template", 8.0),
                )
            ),
        )
    )
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="reloadtrace-fuzz-") as directory:
        result = run_soak(kafka, Path(directory), simulation=simulation, bad_messages=MESSAGES, pace=2.0, log=notes.append)
    verdict = "PASS" if result.clean else "FAIL"
    lines = [
        "## Hostile-producer soak (`make fuzz`)",
        "",
        f"**{verdict}**: {MESSAGES:,} mutated and oversized messages (`FUZZ_MESSAGES`) into one running"
        " `reloadtrace worker` (real broker, embedded ClickHouse) beside simulated traffic at 2x event time."
        " Limits: 0 restarts, 0 valid spans lost or duplicated or enriched unlike `replay`, every bad message in"
        " `dead_letters` exactly once.",
        "",
        *report_lines(result),
    ]
    if not result.clean:
        lines += ["", "```", *notes[-1:], "```"]
    return "\n".join(lines) + "\n"
