"""Streaming anomalies equal ``detect_offline`` however the request feed is delivered.

The feed is what an enricher with four span partitions sends (exact watermarks, see
:mod:`tests.streams.feed`), cut into 100-row messages, one span partition after another within
each round, with a 60 s request that straddles the first looks of a regressed reload, and one
service's messages held back to the end of each round; the two feed partitions are interleaved
in a different random order each time. The real detector stage runs on the real runtime (scripted
consumer), and once on the broker.
"""

from __future__ import annotations

import random
import time
import uuid
import zlib
from dataclasses import replace

import pytest

from schemas.kafka_io import MessageView
from schemas.records import Anomaly
from schemas.settings import KafkaSettings
from streams.detection import DetectionSettings, RequestObservation, detect_offline
from streams.detector import DetectorSettings, StreamingDetector, detector_runtime
from streams.stage import RuntimeSettings, StageRuntime
from streams.testing import FakeConsumer, FakeProducer
from tests.streams.feed import FeedItem, feed, produce_feed
from tests.streams.test_detect_traffic import NANOS_PER_S, Traffic, generate
from tests.streams.test_detector_kafka import AnomalyReader, key
from tests.threads import start_stoppable

KAFKA = KafkaSettings(topic_prefix="")
TOPIC = KAFKA.topics.requests_by_service
FEED_PARTITIONS = 2


def adversarial_traffic(seed: int) -> tuple[Traffic, list[FeedItem]]:
    data = generate(seed)
    regressed = next(r for r in data.reloads if r.succeeded and r.is_service_wide)
    long_request = RequestObservation(
        regressed.service_name,
        f"{regressed.service_name}-0",
        regressed.effective_time_unix_nano + NANOS_PER_S // 2,
        regressed.effective_time_unix_nano + NANOS_PER_S // 2 + 60 * NANOS_PER_S,
        True,
        "SERVER",
    )
    requests = [*data.requests, long_request]
    data = replace(data, requests=requests)
    items = feed(requests, data.reloads, source_partitions=4, rows_per_message=100, order="partition", seed=seed)
    last = data.requests[0].service_name.encode()
    # Hold one service's messages back to the end of each round (the rounds end at each watermark).
    held: list[FeedItem] = []
    reordered: list[FeedItem] = []
    for item in items:
        if item.broadcast:
            reordered += held + [item]
            held = []
        elif item.key == last:
            held.append(item)
        else:
            reordered.append(item)
    return data, reordered + held


def partition_of(item: FeedItem) -> int:
    return zlib.crc32(item.key or b"") % FEED_PARTITIONS


def deliveries(items: list[FeedItem], rng: random.Random) -> list[list[MessageView]]:
    """One message a batch, the feed partitions interleaved at random (order kept within each)."""
    per_partition: list[list[FeedItem]] = [[] for _ in range(FEED_PARTITIONS)]
    for item in items:
        for partition in range(FEED_PARTITIONS) if item.broadcast else [partition_of(item)]:
            per_partition[partition].append(item)
    offsets = [0] * FEED_PARTITIONS
    batches = []
    while any(offsets[p] < len(per_partition[p]) for p in range(FEED_PARTITIONS)):
        partition = rng.choice([p for p in range(FEED_PARTITIONS) if offsets[p] < len(per_partition[p])])
        item = per_partition[partition][offsets[partition]]
        batches.append([MessageView(TOPIC, partition, offsets[partition], item.value, item.key)])
        offsets[partition] += 1
    return batches


@pytest.mark.parametrize("repetition", range(20))
def test_adversarially_delivered_feed_gives_the_offline_anomalies(repetition: int) -> None:
    data, items = adversarial_traffic(seed=100 + repetition % 5)
    offline = detect_offline(data.spans(), data.reloads, DetectionSettings())
    assert any(a.metric in ("latency", "error_rate") for a in offline)
    batches = deliveries(items, random.Random(repetition))
    consumer = FakeConsumer(batches, partitions=[(TOPIC, p) for p in range(FEED_PARTITIONS)])
    producer = FakeProducer()
    stage = StreamingDetector(KAFKA, DetectionSettings(), DetectorSettings(publish_verdicts=False))
    runtime = StageRuntime(
        KAFKA,
        stage,
        RuntimeSettings(group_id="adversarial", poll_timeout_ms=1, commit_interval_ms=10_000, create_topics=False),
        consumer_factory=lambda config: consumer,  # type: ignore[arg-type,return-value]
        producer_factory=lambda config: producer,  # type: ignore[arg-type,return-value]
        message_limit=lambda topic: 1_000_000,
    )
    thread, stop, errors = start_stoppable(runtime.run)
    deadline = time.monotonic() + 60
    while consumer.script and not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    stop.set()
    thread.join(30)
    assert errors == [] and not consumer.script
    codec = KAFKA.codec("Anomaly")
    streamed = [
        Anomaly.from_dict(codec.decode(value))
        for topic, _, value, _ in producer.produced
        if topic == KAFKA.topics.reload_anomalies
    ]
    assert sorted(streamed, key=key) == sorted(offline, key=key)


@pytest.mark.kafka
@pytest.mark.slow
def test_adversarially_delivered_feed_gives_the_offline_anomalies_on_the_broker(kafka_settings: KafkaSettings) -> None:
    data, items = adversarial_traffic(seed=100)
    offline = detect_offline(data.spans(), data.reloads, DetectionSettings())
    produce_feed(kafka_settings, items, feed_partitions=kafka_settings.partitions)
    detector = detector_runtime(
        kafka_settings, DetectionSettings(), DetectorSettings(group_id=f"adv-{uuid.uuid4().hex}", commit_interval_ms=200)
    )
    thread, stop, errors = start_stoppable(detector.run)
    reader = AnomalyReader(kafka_settings)
    try:
        streamed = reader.read_until(len(offline), timeout_s=60)
        time.sleep(1.0)
        streamed = reader.read_until(len(offline) + 1, timeout_s=1)
    finally:
        stop.set()
        thread.join(30)
        reader.close()
    assert errors == []
    assert sorted(streamed, key=key) == sorted(offline, key=key)
