"""A worker stops cleanly on SIGTERM or SIGINT, sent to it alone or to its whole process group (exit 0, all committed).

Sent to the group, the signal reaches the worker and its child stages (sink, detector) at once, so
a child may exit first: that must read as a clean stop, not a crash. Each way is tried 10 times,
at a different moment of the worker's life each time; spans sent before the signal are all
answered, landed and committed when it exits.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from infra.processes import ManagedProcess, wait_until
from schemas.settings import KafkaSettings
from tests.scenarios import build_scenario

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RUNS = 10


def committed_all(kafka: KafkaSettings, group: str, topic: str) -> bool:
    consumer = Consumer(kafka.confluent_config() | {"group.id": group, "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(topic, p) for p in range(kafka.partitions)]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
        done = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
        return all(done[p] >= end for p, end in ends.items() if end > 0)
    finally:
        consumer.close()


@pytest.mark.parametrize("to_group", [False, True], ids=["worker-alone", "process-group"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_worker_cleanly(kafka_settings: KafkaSettings, tmp_path: Path, signum: int, to_group: bool) -> None:
    rng = random.Random(signum * 10 + to_group)
    span_codec = kafka_settings.codec("Span")
    spans = build_scenario(seed=3, base_time_unix_nano=time.time_ns(), duration_s=1, spans_per_second=40).spans
    producer = Producer(kafka_settings.confluent_config())
    for run in range(RUNS):
        group = f"sd-{uuid.uuid4().hex[:8]}"
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
            "RELOADTRACE_TOPIC_PREFIX": kafka_settings.topic_prefix,
            "RELOADTRACE_PARTITIONS": str(kafka_settings.partitions),
            "RELOADTRACE_GRACE_PERIOD_MS": "100",
            "RELOADTRACE_COMMIT_INTERVAL_MS": "200",
            "RELOADTRACE_SINK_FLUSH_INTERVAL_MS": "100",
        }
        argv = [sys.executable, "-m", "streams.cli", "worker", "--group-id", group, "--sink-url", f"chdb://{tmp_path / f'chdb{run}'}"]
        log = tmp_path / f"worker{run}.log"
        worker = ManagedProcess(argv, log_path=log, env=env, cwd=REPO).start()
        try:
            wait_until(lambda: "[^Worker]: Ready" in log.read_text(errors="replace"), timeout_s=60, interval_s=0.05,
                       what="the worker to start", alive=[worker])
            if run % 2 == 0:  # half the runs: with work done before the signal, which must be committed
                for span in spans[run::RUNS]:
                    producer.produce(kafka_settings.topics.spans, key=span["trace_id"].encode(), value=span_codec.encode(span))
                assert producer.flush(30) == 0
                wait_until(lambda: committed_all(kafka_settings, group, kafka_settings.topics.spans)
                           and committed_all(kafka_settings, f"{group}-sink", kafka_settings.topics.spans_enriched),
                           timeout_s=60, interval_s=0.2, what="the spans to be landed", alive=[worker])
            else:  # the others: the signal comes at a random moment of the start-up
                time.sleep(rng.uniform(0.0, 2.0))
            assert worker.pid is not None
            if to_group:
                os.killpg(worker.pid, signum)
            else:
                os.kill(worker.pid, signum)
            code = worker.wait(60)
        finally:
            worker.stop()
        text = log.read_text(errors="replace")
        assert code == 0, f"run {run}: exit {code}\n{worker.log_tail(60)}"
        assert "Crashed" not in text and "exited with code" not in text, f"run {run}:\n{worker.log_tail(60)}"
