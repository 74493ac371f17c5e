"""The streaming detector on the real broker: same anomalies as detect_offline, across a restart."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.settings import KafkaSettings
from streams.detection import DetectionSettings, detect_offline
from streams.detector import DetectorSettings, StreamingDetector, parse_message
from tests.streams.test_detect_traffic import EPOCH_NS, NANOS_PER_S, Traffic, generate
from tests.threads import start_stoppable

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

_RELOAD_DELAY_NS = 3 * NANOS_PER_S  # reloads reach the topic 3 s of event time after they take effect


def feed_messages(data: Traffic) -> list[tuple[int, str, bytes]]:
    """(event time, service, JSON value) as the enricher would send them: one message per service per second."""
    buckets: dict[tuple[str, int], list] = {}
    for r in data.requests:
        second = (r.end_time_unix_nano - EPOCH_NS) // NANOS_PER_S + 2  # answered after a 2 s grace
        buckets.setdefault((r.service_name, second), []).append(
            [r.service_instance_id, r.start_time_unix_nano, r.end_time_unix_nano, r.is_error, r.kind]
        )
    messages = [
        (EPOCH_NS + second * NANOS_PER_S, service, orjson.dumps({"service_name": service, "requests": rows}))
        for (service, second), rows in buckets.items()
    ]
    for reload in data.reloads:
        value = orjson.dumps({"service_name": reload.service_name, "reload": reload.to_dict()})
        messages.append((reload.effective_time_unix_nano + _RELOAD_DELAY_NS, reload.service_name, value))
    messages.sort(key=lambda m: m[0])
    return messages


def produce(kafka: KafkaSettings, messages: list[tuple[int, str, bytes]]) -> None:
    producer = Producer(kafka.confluent_config() | {"linger.ms": 20})
    for _, service, value in messages:
        producer.produce(kafka.topics.requests_by_service, key=service.encode(), value=value)
        producer.poll(0)
    assert producer.flush(30) == 0


class AnomalyReader:
    def __init__(self, kafka: KafkaSettings) -> None:
        self._codec = kafka.codec("Anomaly")
        self._consumer = Consumer(
            kafka.confluent_config() | {"group.id": f"reader-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
        )
        self._consumer.subscribe([kafka.topics.reload_anomalies])
        self.records: list[dict] = []
        self.keys: list[bytes] = []

    def read_until(self, count: int, timeout_s: float) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while len(self.records) < count and time.monotonic() < deadline:
            for message in self._consumer.consume(100, timeout=0.5):
                if message.error() is None:
                    self.records.append(self._codec.decode(message.value()))
                    self.keys.append(message.key())
        return self.records

    def close(self) -> None:
        self._consumer.close()


def start(detector: StreamingDetector) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    return start_stoppable(detector.run)


def key(record: dict) -> tuple[str, str]:
    return record["anomaly_id"], record["severity"]


def fast_settings(group: str, *, idle_progress_ms: int = 500) -> DetectorSettings:
    return DetectorSettings(
        group_id=group,
        commit_interval_ms=200,
        watermark_interval_ms=100,
        idle_progress_ms=idle_progress_ms,
        poll_timeout_ms=50,
        session_timeout_ms=6_000,
    )


def test_streaming_anomalies_equal_offline_and_bad_messages_are_dead_lettered(kafka_settings: KafkaSettings) -> None:
    data = generate(11)
    offline = detect_offline(data.spans(), data.reloads)
    messages = feed_messages(data)
    bad = (messages[100][0], "latency", b"{not json")
    produce(kafka_settings, messages[:100] + [bad] + messages[100:])
    detector = StreamingDetector(kafka_settings, DetectionSettings(), fast_settings(f"det-{uuid.uuid4().hex}"))
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
    assert all(k == r["service_name"].encode() for k, r in zip(reader.keys, streamed, strict=True))
    assert detector.stats.dead_letters == 1
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
    offline = detect_offline(data.spans(), data.reloads)
    messages = feed_messages(data)
    split = EPOCH_NS + 420 * NANOS_PER_S  # mid-way: after the regressions at 300 s, before the reverts at 500 s
    first, second = [m for m in messages if m[0] < split], [m for m in messages if m[0] >= split]
    group = f"det-{uuid.uuid4().hex}"
    produce(kafka_settings, first)
    before = StreamingDetector(kafka_settings, DetectionSettings(), fast_settings(group, idle_progress_ms=10**9))
    thread, stop, errors = start(before)
    deadline = time.monotonic() + 60
    while before.stats.messages < len(first) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    thread.join(30)
    assert errors == [] and before.stats.messages == len(first) and before.stats.anomalies > 0

    produce(kafka_settings, second)
    after = StreamingDetector(kafka_settings, DetectionSettings(), fast_settings(group))
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
    assert after.stats.restored_partitions >= 1 and after.stats.suppressed_on_restore == before.stats.anomalies
    assert Counter(key(r) for r in streamed).most_common(1)[0][1] == 1  # nothing emitted twice
    assert sorted(streamed, key=key) == sorted(offline, key=key)


@pytest.mark.parametrize(
    "value",
    [
        b'{"service_name": "s", "requests": [["i", 5, 1, false, "SERVER"]]}',
        b'{"service_name": "s", "requests": [["i", 1, 5, 0, "SERVER"]]}',
        b'{"service_name": "s"}',
        b'{"requests": []}',
        b'{"service_name": "s", "reload": {"reload_id": "x"}}',
    ],
)
def test_malformed_messages_are_refused(value: bytes) -> None:
    from schemas.errors import InvalidRecordError

    with pytest.raises(InvalidRecordError):
        parse_message(value)


def test_detect_command_publishes_the_offline_anomalies_and_stops_on_sigterm(kafka_settings: KafkaSettings) -> None:
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    data = generate(13)
    offline = detect_offline(data.spans(), data.reloads)
    produce(kafka_settings, feed_messages(data))
    env = os.environ | {"RELOADTRACE_DETECTOR_IDLE_PROGRESS_MS": "500", "RELOADTRACE_DETECTOR_COMMIT_INTERVAL_MS": "200"}
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
    offline = detect_offline(data.spans(), data.reloads)
    messages = feed_messages(data)
    split = EPOCH_NS + 420 * NANOS_PER_S
    produce(kafka_settings, [m for m in messages if m[0] < split])
    group = f"det-{uuid.uuid4().hex}"
    env = os.environ | {
        "RELOADTRACE_DETECTOR_IDLE_PROGRESS_MS": "1000000000",
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
    produce(kafka_settings, [m for m in messages if m[0] >= split])
    after = StreamingDetector(kafka_settings, DetectionSettings(), fast_settings(group))
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


def test_idle_progress_waits_for_the_enricher_group_to_commit_every_span(kafka_settings: KafkaSettings) -> None:
    """A silent requests topic is quiet traffic only once the enricher has answered every span it was given."""
    enricher_group = f"enr-{uuid.uuid4().hex}"
    producer = Producer(kafka_settings.confluent_config())
    for index in range(6):
        producer.produce(kafka_settings.topics.spans, key=b"%d" % index, value=b"a span the enricher has not read")
    assert producer.flush(30) == 0
    settings = fast_settings(f"det-{uuid.uuid4().hex}", idle_progress_ms=300).model_copy(
        update={"upstream_group_id": enricher_group}
    )
    detector = StreamingDetector(kafka_settings, DetectionSettings(), settings)
    thread, stop, errors = start(detector)
    try:
        deadline = time.monotonic() + 20
        while detector.stats.upstream_lag != 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert detector.stats.upstream_lag == 6
        time.sleep(1.0)  # idle for more than idle_progress_ms, with every requests partition read
        assert detector.progress_unix_nano < time.time_ns() - 3_600 * NANOS_PER_S  # still no wall-clock progress

        enricher = Consumer(kafka_settings.confluent_config() | {"group.id": enricher_group, "enable.auto.commit": False})
        low_high = [
            (partition, enricher.get_watermark_offsets(TopicPartition(kafka_settings.topics.spans, partition), timeout=10))
            for partition in range(kafka_settings.partitions)
        ]
        enricher.commit(
            offsets=[TopicPartition(kafka_settings.topics.spans, p, high) for p, (_, high) in low_high], asynchronous=False
        )
        enricher.close()
        deadline = time.monotonic() + 20
        while detector.progress_unix_nano < time.time_ns() - 60 * NANOS_PER_S and time.monotonic() < deadline:
            time.sleep(0.1)
        assert detector.stats.upstream_lag == 0
        assert detector.progress_unix_nano >= time.time_ns() - 60 * NANOS_PER_S  # now it follows the wall clock
    finally:
        stop.set()
        thread.join(30)
    assert errors == []
