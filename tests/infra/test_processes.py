"""Managed child processes stop with their whole group; consumer lag counts what is not committed."""

from __future__ import annotations

import os
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from infra.consumer_lag import consumer_group_lag
from infra.kafka import create_topics
from infra.processes import ManagedProcess, ProcessError, wait_until

# A parent that starts a grandchild and ignores SIGTERM itself: only a group-wide SIGKILL ends both.
_STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_stop_escalates_and_takes_the_whole_group(tmp_path) -> None:
    process = ManagedProcess([sys.executable, "-c", _STUBBORN], log_path=tmp_path / "log").start()
    wait_until(lambda: process.log_path.read_text().strip() != "", timeout_s=20, what="grandchild started")
    grandchild = int(process.log_path.read_text().split()[0])
    started = time.monotonic()
    process.stop(timeout_s=1.0)
    assert not process.running()
    assert time.monotonic() - started < 15
    wait_until(lambda: not _alive(grandchild), timeout_s=10, what="grandchild gone")


def test_wait_until_reports_a_dead_process_with_its_log(tmp_path) -> None:
    process = ManagedProcess(
        [sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"], log_path=tmp_path / "log"
    ).start()
    with pytest.raises(ProcessError, match="boom: bad config"):
        wait_until(lambda: False, timeout_s=30, alive=[process])
    assert process.returncode == 3


def test_wait_until_times_out() -> None:
    with pytest.raises(TimeoutError, match="never"):
        wait_until(lambda: False, timeout_s=0.2, interval_s=0.05, what="never")


@pytest.mark.kafka
def test_consumer_group_lag_counts_uncommitted_messages(kafka_bootstrap_servers: str) -> None:
    topic = f"lag-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap_servers, [topic], partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap_servers})
    for index in range(10):
        producer.produce(topic, value=b"x", partition=index % 2)
    assert producer.flush(30) == 0
    group = f"g-{uuid.uuid4().hex[:8]}"
    assert consumer_group_lag(kafka_bootstrap_servers, group, [topic]) == 10
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap_servers, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 5)], asynchronous=False)
    finally:
        consumer.close()
    assert consumer_group_lag(kafka_bootstrap_servers, group, [topic]) == 2
