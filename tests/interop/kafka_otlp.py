"""Reading an OTLP topic back from the real broker and decoding it with schemas.otlp."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer

from schemas.otlp import OtlpSpans, decode_otlp


@dataclass(frozen=True)
class OtlpRecord:
    """One message of the topic, decoded."""

    partition: int
    key: bytes | None
    value: bytes
    decoded: OtlpSpans


def read_otlp_topic(bootstrap_servers: str, topic: str, encoding: str, span_count: int,
                    timeout_s: float = 60.0) -> list[OtlpRecord]:
    """Messages of ``topic`` from the beginning until they hold ``span_count`` spans (then a second more,
    so that unexpected extra messages are seen too); fewer only when the timeout passes."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": f"otlp-reader-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    records: list[OtlpRecord] = []
    try:
        deadline = time.monotonic() + timeout_s
        drain_until = None
        while time.monotonic() < (drain_until or deadline):
            message = consumer.poll(0.25)
            if message is not None and message.error() is None:
                value = message.value()
                records.append(OtlpRecord(message.partition(), message.key(), value, decode_otlp(value, encoding)))
            if drain_until is None and sum(record.decoded.span_count for record in records) >= span_count:
                drain_until = time.monotonic() + 1.0
    finally:
        consumer.close()
    return records
