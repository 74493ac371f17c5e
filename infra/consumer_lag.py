"""How far a consumer group is behind: committed offsets against high watermarks, per topic.

Used to know when a pipeline has drained (the demo, fault tests, benchmarks): a group whose
committed offsets reach the end of every partition has acknowledged everything produced so far.
Non-guarantee: a lag of zero says nothing about messages produced after the query.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from schemas.kafka_io import topic_lag


def consumer_group_lag(bootstrap_servers: str, group_id: str, topics: Iterable[str], *, timeout_s: float = 10.0) -> int:
    """Messages in ``topics`` not yet committed by ``group_id`` (a partition never committed counts whole)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap_servers, "group.id": group_id, "enable.auto.commit": False, "log_level": 3}
    )
    try:
        return sum(topic_lag(consumer, topic, timeout_s=timeout_s) or 0 for topic in topics)  # a missing topic: 0
    finally:
        consumer.close()


def topic_end_offsets(bootstrap_servers: str, topic: str, *, timeout_s: float = 10.0) -> dict[int, int]:
    """partition -> high watermark of ``topic``."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "reloadtrace-lag-probe", "log_level": 3})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        return {
            partition: consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s, cached=False)[1]
            for partition in sorted(metadata.partitions)
        }
    finally:
        consumer.close()
