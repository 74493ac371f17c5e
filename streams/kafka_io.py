"""The two Kafka client moves every stage (enricher, detector, sink, alerts) makes the same way: produce under backpressure, commit quietly."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, Producer, TopicPartition

logger = logging.getLogger(__name__)

_BACKPRESSURE_POLL_S = 0.05


def produce_waiting(
    producer: Producer, topic: str, key: bytes | None, value: bytes, on_delivery: Callable[..., None]
) -> None:
    """Produce, waiting (serving delivery callbacks) while the client's local queue is full; never drops."""
    while True:
        try:
            producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(_BACKPRESSURE_POLL_S)  # the local queue is full: let deliveries drain


def commit_quietly(consumer: Consumer, offsets: Sequence[TopicPartition]) -> bool:
    """Commit synchronously; a failure is logged and left for the next commit (at least once holds).

    Returns:
        True when the commit went through.
    """
    try:
        consumer.commit(offsets=list(offsets), asynchronous=False)
        return True
    except Exception as error:  # noqa: BLE001 - retried at the next commit; at-least-once holds
        logger.warning("offset commit failed (will retry): %s", error)
        return False
