"""The Kafka client moves every stage (enricher, detector, sink, alerts) makes the same way: a manually
committed group consumer, produce under backpressure, commit quietly."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, Producer, TopicPartition

logger = logging.getLogger(__name__)

_BACKPRESSURE_POLL_S = 0.05


def group_consumer_config(group_id: str, session_timeout_ms: int) -> dict[str, object]:
    """librdkafka settings of a stage's group consumer: offsets committed by the stage only after its
    output is safe, from the earliest offset when the group has none, long batches allowed
    (``max.poll.interval.ms`` 10 min), heartbeats at a third of the session timeout (at most 3 s),
    and fetches that answer within 100 ms."""
    return {
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "max.poll.interval.ms": 600_000,
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(1, min(3_000, session_timeout_ms // 3)),
        "fetch.wait.max.ms": 100,
    }


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
