"""Spans and reloads -> the enricher's feed -> the streaming detector -> reload.anomalies, equal to detect_offline.

Runs the real SpanEnricher (its ``requests-by-service`` feed) and the StreamingDetector side by side
on the broker, fed with one gateway-simulator run (OTel spans, late reloads, a canary), and checks
that the Avro anomalies on ``reload.anomalies`` are exactly what the offline replay finds.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest
from confluent_kafka import Producer

from gateway.simulation.simulator import simulate
from schemas.settings import KafkaSettings
from streams.detection import DetectionSettings, detect_offline
from streams.detector import DetectorSettings, detector_runtime
from streams.enricher import enricher_runtime
from streams.settings import WorkerSettings
from tests.streams.test_detection_simulated import scenario
from tests.streams.test_detector_kafka import AnomalyReader, key, start
from tests.threads import start_stoppable

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_enricher_feed_and_detector_give_the_offline_anomalies(kafka_settings: KafkaSettings) -> None:
    # Ten minutes ago, so that every look of the run is due by now (an idle span partition's watermark
    # follows broker time once it is read to its end).
    config = dataclasses.replace(scenario(5), start_time_unix_nano=time.time_ns() - 600 * 1_000_000_000)
    simulation = simulate(config)
    offline = detect_offline(simulation.spans, simulation.reloads, DetectionSettings())
    assert {a.metric for a in offline} >= {"latency", "error_rate"}

    producer = Producer(kafka_settings.confluent_config() | {"linger.ms": 5})
    span_codec, reload_codec = kafka_settings.codec("Span"), kafka_settings.codec("ReloadEvent")
    topics = kafka_settings.topics
    for kind, record in simulation.interleaved():
        if kind == "span":
            producer.produce(topics.spans, key=record["trace_id"].encode(), value=span_codec.encode(record))
        else:
            producer.produce(topics.reloads, key=record["service_name"].encode(), value=reload_codec.encode(record))
        producer.poll(0)
    assert producer.flush(30) == 0

    enricher_group = f"enr-{uuid.uuid4().hex}"
    enricher = enricher_runtime(
        kafka_settings, WorkerSettings(group_id=enricher_group, grace_period_ms=400, idle_partition_ms=1_000, sink_url=None)
    )
    enricher_thread, enricher_stop, enricher_errors = start_stoppable(enricher.run)
    detector = detector_runtime(
        kafka_settings, DetectionSettings(), DetectorSettings(group_id=f"det-{uuid.uuid4().hex}", commit_interval_ms=200)
    )
    thread, stop, errors = start(detector)
    reader = AnomalyReader(kafka_settings)
    try:
        streamed = reader.read_until(len(offline), timeout_s=120)
        time.sleep(1.0)
        streamed = reader.read_until(len(offline) + 1, timeout_s=1)
    finally:
        stop.set()
        enricher_stop.set()
        thread.join(30)
        enricher_thread.join(60)
        reader.close()
    assert errors == [] and enricher_errors == []
    assert detector.stage.stats.requests == len(simulation.spans)  # every first answer reached the detector, once
    assert sorted(streamed, key=key) == sorted(offline, key=key)
