"""The codec against a real broker: records survive Kafka byte for byte; bad bytes get the typed error."""

from __future__ import annotations

import copy

import pytest
from confluent_kafka import Consumer, Producer

from schemas.errors import DecodeError, DecodeErrorKind
from schemas.records import lossless_defaults
from schemas.settings import KafkaSettings
from tests.schemas.test_codec import SPAN

pytestmark = pytest.mark.kafka

RELOAD = {
    "reload_id": "rl-0001",
    "service_name": "llm-gateway",
    "service_instance_id": None,
    "component": "model",
    "old_version": "gpt-4o-2024-08-06",
    "new_version": "gpt-4o-2024-11-20",
    "requested_time_unix_nano": 1_763_900_000_000_000_000,
    "effective_time_unix_nano": 1_763_900_000_120_000_000,
    "status": "SUCCEEDED",
    "source": "deploy-pipeline",
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "span_id": "b7ad6b7169203331",
    "model_context": {"model.id": "gpt-4o", "model.version": "2024-11-20", "prompt_template.hash": "9f2c"},
    "changed_keys": ["model.version"],
}


def _consume(settings: KafkaSettings, topic: str, count: int, timeout_s: float = 30.0) -> list:
    consumer = Consumer(
        settings.confluent_config()
        | {"group.id": f"{topic}-reader", "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.subscribe([topic])
    messages = []
    try:
        import time

        deadline = time.monotonic() + timeout_s
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                messages.append(message)
    finally:
        consumer.close()
    return messages


def test_span_and_reload_records_come_back_identical(kafka_settings: KafkaSettings) -> None:
    topics = kafka_settings.topics
    span_codec, reload_codec = kafka_settings.codec("Span"), kafka_settings.codec("ReloadEvent")
    spans = []
    for index in range(20):
        span = copy.deepcopy(SPAN) | lossless_defaults()
        span["span_id"] = f"{index + 1:016x}"
        span["attributes"]["request.index"] = index
        spans.append(span)
    producer = Producer(kafka_settings.confluent_config())
    for span in spans:
        producer.produce(topics.spans, key=span["trace_id"].encode(), value=span_codec.encode(span))
    producer.produce(topics.reloads, key=RELOAD["service_name"].encode(), value=reload_codec.encode(RELOAD))
    assert producer.flush(30) == 0

    span_messages = _consume(kafka_settings, topics.spans, len(spans))
    reload_messages = _consume(kafka_settings, topics.reloads, 1)
    received = sorted((span_codec.decode(m.value()) for m in span_messages), key=lambda s: s["span_id"])
    assert received == spans
    assert {m.key() for m in span_messages} == {SPAN["trace_id"].encode()}
    assert [reload_codec.decode(m.value()) for m in reload_messages] == [RELOAD]


def test_bad_bytes_on_the_topic_are_reported_with_the_typed_error(kafka_settings: KafkaSettings) -> None:
    topic = kafka_settings.topics.spans
    codec = kafka_settings.codec("Span")
    good = codec.encode(SPAN)
    payloads = [good, b'{"trace_id": "not avro"}', good[:-4], b"\xc3\x01" + b"\x13" * 8 + good[10:]]
    producer = Producer(kafka_settings.confluent_config())
    for payload in payloads:
        producer.produce(topic, key=SPAN["trace_id"].encode(), value=payload)
    assert producer.flush(30) == 0

    outcomes = {}
    for message in _consume(kafka_settings, topic, len(payloads)):
        try:
            codec.decode(message.value())
            outcomes[message.offset()] = "ok"
        except DecodeError as error:
            outcomes[message.offset()] = error.kind
    assert sorted(outcomes.values(), key=str) == sorted(
        ["ok", DecodeErrorKind.WRONG_MAGIC, DecodeErrorKind.TRUNCATED, DecodeErrorKind.UNKNOWN_FINGERPRINT], key=str
    )
