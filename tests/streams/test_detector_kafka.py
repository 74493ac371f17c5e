"""The streaming detector on the real broker: same anomalies as detect_offline, across a restart."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Consumer

from schemas.records import Anomaly
from schemas.settings import KafkaSettings
from streams.detection import DetectionSettings, detect_offline
from streams.detector import DetectorSettings, detector_runtime
from streams.stage import StageRuntime
from tests.streams.feed import FeedItem, feed, produce_feed
from tests.streams.test_detect_traffic import Traffic, generate
from tests.threads import start_stoppable

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def feed_of(data: Traffic, **options) -> list[FeedItem]:
    return feed(data.requests, data.reloads, **options)


def produce(kafka: KafkaSettings, items: list[FeedItem]) -> None:
    produce_feed(kafka, items, feed_partitions=kafka.partitions)


class AnomalyReader:
    def __init__(self, kafka: KafkaSettings) -> None:
        self._codec = kafka.codec("Anomaly")
        self._consumer = Consumer(
            kafka.confluent_config() | {"group.id": f"reader-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
        )
        self._consumer.subscribe([kafka.topics.reload_anomalies])
        self.records: list[Anomaly] = []
        self.keys: list[bytes] = []

    def read_until(self, count: int, timeout_s: float) -> list[Anomaly]:
        deadline = time.monotonic() + timeout_s
        while len(self.records) < count and time.monotonic() < deadline:
            for message in self._consumer.consume(100, timeout=0.5):
                if message.error() is None:
                    self.records.append(Anomaly.from_dict(self._codec.decode(message.value())))
                    self.keys.append(message.key())
        return self.records

    def close(self) -> None:
        self._consumer.close()


def start(detector: StageRuntime) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    return start_stoppable(detector.run)


def key(record: Anomaly) -> tuple[str, str]:
    return record.anomaly_id, record.severity


def fast_settings(group: str) -> DetectorSettings:
    return DetectorSettings(group_id=group, commit_interval_ms=200, poll_timeout_ms=50, session_timeout_ms=6_000)


def test_streaming_anomalies_equal_offline_and_bad_messages_are_dead_lettered(kafka_settings: KafkaSettings) -> None:
    data = generate(11)
    offline = detect_offline(data.spans(), data.reloads, DetectionSettings())
    messages = feed_of(data)
    bad = FeedItem(b"latency", b"{not json")
    produce(kafka_settings, messages[:100] + [bad] + messages[100:])
    detector = detector_runtime(kafka_settings, DetectionSettings(), fast_settings(f"det-{uuid.uuid4().hex}"))
    thread, stop, errors = start(detector)
    reader = AnomalyReader(kafka_settings)
    try:
        streamed = reader.read_until(len(offline), timeout_s=90)
        time.sleep(1.0)
        streamed = reader.read_until(len(offline) + 1, timeout_s=1)
    finally:
        stop.set()
        thread.join(30)
        reader.close()
    assert errors == []
    assert sorted(streamed, key=key) == sorted(offline, key=key)
    assert all(k == r.service_name.encode() for k, r in zip(reader.keys, streamed, strict=True))
    assert detector.stage.stats.dead_letters == 1
    dead = Consumer(kafka_settings.confluent_config() | {"group.id": f"dl-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
    dead.subscribe([kafka_settings.topics.dead_letter])
    letters = []
    deadline = time.monotonic() + 20
    while not letters and time.monotonic() < deadline:
        letters = [m for m in dead.consume(10, timeout=0.5) if m.error() is None]
    dead.close()
    record = kafka_settings.codec("DeadLetter").decode(letters[0].value())
    assert record["raw_value"] == b"{not json" and record["stage"] == "detect"


def test_restart_rebuilds_windows_and_neither_loses_nor_repeats_anomalies(kafka_settings: KafkaSettings) -> None:
    data = generate(12)
    offline = detect_offline(data.spans(), data.reloads, DetectionSettings())
    messages = feed_of(data)
    first, second = messages[: len(messages) * 7 // 10], messages[len(messages) * 7 // 10 :]
    group = f"det-{uuid.uuid4().hex}"
    produce(kafka_settings, first)
    before = detector_runtime(kafka_settings, DetectionSettings(), fast_settings(group))
    thread, stop, errors = start(before)
    expected_messages = sum(kafka_settings.partitions if item.broadcast else 1 for item in first)
    deadline = time.monotonic() + 60
    while before.stage.stats.messages < expected_messages and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    thread.join(30)
    assert errors == [] and before.stage.stats.messages == expected_messages and before.stage.stats.anomalies > 0

    produce(kafka_settings, second)
    after = detector_runtime(kafka_settings, DetectionSettings(), fast_settings(group))
    thread, stop, errors = start(after)
    reader = AnomalyReader(kafka_settings)
    try:
        streamed = reader.read_until(len(offline), timeout_s=90)
        time.sleep(1.0)
        streamed = reader.read_until(len(offline) + 1, timeout_s=1)
    finally:
        stop.set()
        thread.join(30)
        reader.close()
    assert errors == []
    assert after.stage.stats.restored_partitions >= 1 and after.stage.stats.suppressed_on_restore == before.stage.stats.anomalies
    assert Counter(key(r) for r in streamed).most_common(1)[0][1] == 1  # nothing emitted twice
    assert sorted(streamed, key=key) == sorted(offline, key=key)


def test_detect_command_publishes_the_offline_anomalies_and_stops_on_sigterm(kafka_settings: KafkaSettings) -> None:
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    data = generate(13)
    offline = detect_offline(data.spans(), data.reloads, DetectionSettings())
    produce(kafka_settings, feed_of(data))
    env = os.environ | {"RELOADTRACE_DETECTOR_COMMIT_INTERVAL_MS": "200"}
    command = [
        str(Path(sys.executable).with_name("reloadtrace")), "detect",
        "--bootstrap-servers", kafka_settings.bootstrap_servers,
        "--topic-prefix", kafka_settings.topic_prefix,
        "--group-id", f"cmd-{uuid.uuid4().hex}",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reader = AnomalyReader(kafka_settings)
    try:
        streamed = reader.read_until(len(offline), timeout_s=90)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        reader.close()
    assert process.returncode == 0, output
    assert sorted(streamed, key=key) == sorted(offline, key=key)


def test_a_detector_killed_mid_stream_loses_nothing_and_repeats_only_same_ids(kafka_settings: KafkaSettings) -> None:
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    data = generate(14)
    offline = detect_offline(data.spans(), data.reloads, DetectionSettings())
    messages = feed_of(data)
    split = len(messages) * 7 // 10
    produce(kafka_settings, messages[:split])
    group = f"det-{uuid.uuid4().hex}"
    env = os.environ | {
        "RELOADTRACE_DETECTOR_COMMIT_INTERVAL_MS": "200",
        "RELOADTRACE_DETECTOR_SESSION_TIMEOUT_MS": "6000",  # the dead member's partitions come free quickly
    }
    command = [
        str(Path(sys.executable).with_name("reloadtrace")), "detect",
        "--bootstrap-servers", kafka_settings.bootstrap_servers,
        "--topic-prefix", kafka_settings.topic_prefix,
        "--group-id", group,
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reader = AnomalyReader(kafka_settings)
    try:
        before = reader.read_until(1, timeout_s=60)
        assert before, "the first detector published nothing"
    finally:
        process.send_signal(signal.SIGKILL)  # a crash: no final commit, no flush
        process.wait(30)
    produce(kafka_settings, messages[split:])
    after = detector_runtime(kafka_settings, DetectionSettings(), fast_settings(group))
    thread, stop, errors = start(after)
    try:
        expected = {key(r) for r in offline}
        deadline = time.monotonic() + 90
        while {key(r) for r in reader.records} != expected and time.monotonic() < deadline:
            reader.read_until(len(reader.records) + 1, timeout_s=0.5)
    finally:
        stop.set()
        thread.join(30)
        reader.close()
    assert errors == []
    assert {key(r) for r in reader.records} == {key(r) for r in offline}
    by_key = {key(r): r for r in offline}
    assert all(record == by_key[key(record)] for record in reader.records)  # repeats are identical records


def test_no_look_is_taken_until_every_span_partition_has_a_watermark(kafka_settings: KafkaSettings) -> None:
    """A span partition that has not reported holds every look back: its requests may still come."""
    data = generate(15)
    offline = detect_offline(data.spans(), data.reloads, DetectionSettings())
    assert offline
    items = feed_of(data, source_partitions=2)
    silent = [
        FeedItem(item.key, item.value.replace(b'"times":{"0":', b'"times":{"1":'), item.broadcast) if item.broadcast else item
        for item in items
    ]  # every watermark is partition 1's: partition 0 never reports
    produce(kafka_settings, silent)
    detector = detector_runtime(kafka_settings, DetectionSettings(), fast_settings(f"det-{uuid.uuid4().hex}"))
    thread, stop, errors = start(detector)
    reader = AnomalyReader(kafka_settings)
    try:
        expected_messages = sum(kafka_settings.partitions if item.broadcast else 1 for item in silent)
        deadline = time.monotonic() + 60
        while detector.stage.stats.messages < expected_messages and time.monotonic() < deadline:
            time.sleep(0.1)
        assert detector.stage.stats.messages == expected_messages
        assert reader.read_until(1, timeout_s=2) == [] and detector.stage.stats.looks == 0
        produce(kafka_settings, items[-1:])  # the last watermark of both partitions
        streamed = reader.read_until(len(offline), timeout_s=60)
    finally:
        stop.set()
        thread.join(30)
        reader.close()
    assert errors == []
    assert sorted(streamed, key=key) == sorted(offline, key=key)
