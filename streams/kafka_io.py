"""The Kafka client moves every stage (enricher, detector, sink, alerts) makes the same way: a manually
committed group consumer, produce under backpressure, commit quietly, and a group's lag."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, Producer, TopicPartition

logger = logging.getLogger(__name__)

_BACKPRESSURE_POLL_S = 0.05


def uncommitted(committed: dict[int, int], bounds: dict[int, tuple[int, int]]) -> int:
    """Messages a group has not committed: per partition, the high watermark minus the group's position.

    ``committed`` maps partition -> committed offset (a partition missing, or negative, was never
    committed: the group starts at the low watermark, as it does when retention trimmed its offset);
    ``bounds`` maps partition -> (low, high) watermarks.
    """
    lag = 0
    for partition, (low, high) in bounds.items():
        position = committed.get(partition, -1)
        lag += max(0, high - max(position, low))
    return lag


def topic_lag(consumer: Consumer, topic: str, *, timeout_s: float) -> int | None:
    """Messages of ``topic`` the consumer's group (its ``group.id``) has not committed; None when the topic
    cannot be read. The consumer needs no subscription: it only asks the broker."""
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return None
    partitions = [TopicPartition(topic, partition) for partition in sorted(metadata.partitions)]
    committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=timeout_s)}
    bounds = {tp.partition: consumer.get_watermark_offsets(tp, timeout=timeout_s, cached=False) for tp in partitions}
    return uncommitted(committed, bounds)


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
