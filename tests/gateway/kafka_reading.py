"""Reading a test's topics back from the real broker."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer

from schemas.settings import KafkaSettings


def consume(settings: KafkaSettings, topic: str, count: int, timeout_s: float = 30.0) -> list:
    """At least ``count`` messages of ``topic`` from the beginning (fewer only when the timeout passes)."""
    consumer = Consumer(
        settings.confluent_config()
        | {"group.id": f"reader-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.subscribe([topic])
    messages: list = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                messages.append(message)
        # drain what is already there beyond ``count`` (so tests see extra, unexpected records too)
        while (message := consumer.poll(1.0)) is not None:
            if message.error() is None:
                messages.append(message)
    finally:
        consumer.close()
    return messages
