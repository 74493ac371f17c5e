"""Faults under sustained load: after recovery ClickHouse holds exactly the produced spans, as replay enriches them.

Each test publishes the same simulated traffic (three services, late reload events, canaries, a
FAILED reload, 1% poison messages) at a sustained rate to topics of its own, injects one fault
while the load runs, waits until every consumer group has committed the end of its topics, stops
the pipeline and checks the tables (see :mod:`tests.e2e.pipeline`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from infra.kafka import KafkaBroker, create_topics, free_port
from schemas.settings import KafkaSettings
from schemas.topics import TopicNames
from tests.e2e.pipeline import PipelineRun, run_with_fault

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

PACE = 2.0
"""Event time runs this much faster than the wall clock while publishing (~1.5k spans/s)."""


@pytest.fixture(scope="module")
def simulation():
    from gateway.simulation.config import ScheduledReload, SimulationConfig
    from gateway.simulation.simulator import simulate

    schedule = (
        ScheduledReload(at_s=5.0, service="llm-gateway", component="model", lateness_s=6.0),
        ScheduledReload(at_s=9.0, service="chat-api", component="config", instance=1),
        ScheduledReload(at_s=14.0, service="rag-api", component="prompt_template", lateness_s=8.0),
        ScheduledReload(at_s=18.0, service="llm-gateway", component="routing_rules", fail=True),
        ScheduledReload(at_s=24.0, service="chat-api", component="feature_flags", lateness_s=4.0),
        ScheduledReload(at_s=30.0, service="llm-gateway", component="credentials", instance=0, lateness_s=5.0),
        ScheduledReload(at_s=36.0, service="rag-api", component="model"),
    )
    config = SimulationConfig(
        seed=11,
        services=("llm-gateway", "chat-api", "rag-api"),
        instances_per_service=2,
        requests_per_second_per_service=250.0,
        duration_s=44.0,
        start_time_unix_nano=time.time_ns() // 1_000_000 * 1_000_000,
        reloads=schedule,
    )
    return simulate(config)


@pytest.fixture
def run(kafka_settings: KafkaSettings, tmp_path: Path) -> PipelineRun:
    pipeline = PipelineRun(kafka_settings, tmp_path)
    yield pipeline
    pipeline.stop()


def test_poison_messages_only(run: PipelineRun, simulation) -> None:
    worker = run.start_worker()
    load = run_with_fault(run, simulation, pace=PACE, fault=lambda: None, watch=lambda: [worker])
    tables = run.verify(simulation, load)
    assert len(load.poison) >= len(simulation.spans) // 100 - 1
    assert {row[3] for row in tables["dead_letters"]} >= {"invalid_record", "truncated", "unknown_fingerprint"}


def test_worker_sigkilled_mid_stream_and_restarted(run: PipelineRun, simulation) -> None:
    workers = [run.start_worker()]

    def crash_and_restart() -> None:
        workers[0].kill()
        time.sleep(2.0)
        workers[0] = run.start_worker()

    load = run_with_fault(run, simulation, pace=PACE, fault=crash_and_restart, watch=lambda: workers)
    run.verify(simulation, load)


def test_two_workers_share_the_partitions_and_one_is_killed(run: PipelineRun, simulation) -> None:
    # chDB allows one process per data path, so with several workers the sink runs on its own.
    sink = run.start_sink()
    survivor = run.start_worker(with_sink=False)
    victim = run.start_worker(with_sink=False)
    load = run_with_fault(run, simulation, pace=PACE, fault=victim.kill, watch=lambda: [sink, survivor])
    run.verify(simulation, load)


@pytest.fixture
def own_broker(tmp_path: Path):
    """A broker of this test's own, so that it can be restarted without disturbing the others."""
    broker = KafkaBroker(port=free_port(), controller_port=free_port(), data_dir=tmp_path / "kafka")
    broker.start()
    yield broker
    broker.stop()


def test_broker_restarted_mid_stream(own_broker: KafkaBroker, simulation, tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap_servers=own_broker.bootstrap_servers, topic_prefix=f"t{uuid.uuid4().hex[:8]}.", partitions=2)
    create_topics(own_broker.bootstrap_servers, TopicNames(kafka.topic_prefix).with_configs(), partitions=2)
    run = PipelineRun(kafka, tmp_path / "run")
    try:
        worker = run.start_worker()

        def restart_broker() -> None:
            own_broker.stop()
            time.sleep(3.0)
            own_broker.start()

        load = run_with_fault(run, simulation, pace=PACE, fault=restart_broker, watch=lambda: [worker])
        run.verify(simulation, load)
    finally:
        run.stop()


def _can_mount_tmpfs(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True, check=False)
    if probe.returncode != 0:
        return False
    subprocess.run(["umount", str(path)], check=True)
    return True


def test_clickhouse_writes_failing_for_a_while(run: PipelineRun, simulation, tmp_path: Path) -> None:
    """The embedded engine's disk fills up (a real ENOSPC, on a small tmpfs) and frees again."""
    chdb_dir = tmp_path / "chdb"
    if not _can_mount_tmpfs(chdb_dir):
        pytest.skip("needs root and tmpfs mounts to fill the engine's disk for real")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(chdb_dir)], check=True)
    filler = chdb_dir / "filler"
    try:
        worker = run.start_worker()

        def fill_disk_for_a_while() -> None:
            with filler.open("wb") as handle:
                block = b"\0" * (1 << 20)
                try:
                    while True:
                        handle.write(block)
                        handle.flush()
                except OSError:
                    pass  # the disk is full: every ClickHouse write now fails
            time.sleep(8.0)
            filler.unlink()

        load = run_with_fault(run, simulation, pace=PACE, fault=fill_disk_for_a_while, watch=lambda: [worker])
        run.verify(simulation, load)
        log = (run.directory / "worker-1.log").read_text()
        assert "NOT_ENOUGH_SPACE" in log and "retrying" in log, "the disk never filled up: the fault was not real"
    finally:
        run.stop()
        subprocess.run(["umount", "-l", str(chdb_dir)], check=False)
