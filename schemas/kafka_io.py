"""The Kafka client moves every stage (enricher, detector, sink, alerts) and the launchers in infra/ make
the same way: a manually committed group consumer, produce under backpressure, dead letters that cannot
fail to produce, commit quietly, topic creation, and a group's lag."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from schemas.dead_letters import KAFKA_MESSAGE_LIMIT_BYTES, DeadLetterBuilder
from schemas.errors import ReloadtraceError
from schemas.settings import KafkaSettings

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
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes,
    on_delivery: Callable[..., None],
    *,
    partition: int | None = None,
) -> None:
    """Produce, waiting (serving delivery callbacks) while the client's local queue is full; never drops."""
    extra = {} if partition is None else {"partition": partition}
    while True:
        try:
            producer.produce(topic, key=key, value=value, on_delivery=on_delivery, **extra)
            return
        except BufferError:
            producer.poll(_BACKPRESSURE_POLL_S)  # the local queue is full: let deliveries drain


def is_too_large(error: KafkaException) -> bool:
    """True when ``produce`` refused a message for its size (librdkafka's MSG_SIZE_TOO_LARGE)."""
    return (
        bool(error.args)
        and isinstance(error.args[0], KafkaError)
        and error.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    )


def topic_message_limit_bytes(kafka: KafkaSettings, topic: str, *, timeout_s: float = 10.0) -> int:
    """The largest message ``topic`` takes from this process's producers: its ``max.message.bytes``, at
    most librdkafka's ``message.max.bytes`` default; that default when the config cannot be read."""
    try:
        admin = AdminClient(kafka.confluent_config())
        futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)], request_timeout=timeout_s)
        entries = next(iter(futures.values())).result(timeout=timeout_s)
        limit = int(entries["max.message.bytes"].value)
    except Exception as error:  # noqa: BLE001 - unreadable config: the producer's own limit still holds
        logger.warning("cannot read max.message.bytes of %s (%s); assuming %d", topic, error, KAFKA_MESSAGE_LIMIT_BYTES)
        return KAFKA_MESSAGE_LIMIT_BYTES
    return min(limit, KAFKA_MESSAGE_LIMIT_BYTES)


def dead_letter_builder(kafka: KafkaSettings) -> DeadLetterBuilder:
    """A builder whose dead letters fit this deployment's dead-letter topic."""
    limit = topic_message_limit_bytes(kafka, kafka.topics.dead_letter)
    return DeadLetterBuilder(kafka.codec("DeadLetter"), max_message_bytes=max(limit, 16_384))


def produce_dead_letter(
    producer: Producer, topic: str, builder: DeadLetterBuilder, on_delivery: Callable[..., None] | None, **fields: Any
) -> None:
    """Produce the dead letter of one message (``fields``: :meth:`DeadLetterBuilder.message`'s arguments).

    A letter the producer still refuses as too large (its ``message.max.bytes`` set below the topic's)
    goes again within 16 KiB: coordinates, kind, a short error, the value's length, SHA-256 and prefix.

    Raises:
        KafkaException: any other refusal by the client (a broken producer, not a bad message).
    """
    letter = builder.message(**fields)
    try:
        produce_waiting(producer, topic, letter.key, letter.value, on_delivery)
    except KafkaException as error:
        if not is_too_large(error):
            raise
        small = DeadLetterBuilder(builder.codec, max_message_bytes=16_384, max_key_bytes=256, max_error_chars=500)
        letter = small.message(**fields)
        produce_waiting(producer, topic, letter.key, letter.value, on_delivery)


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


class MessageView:
    """A Kafka message rebuilt from what was kept of it: read without error, broker (log-append) time.

    What a dead letter needs of a ``Message`` once the message itself is gone, and what tests and
    benchmarks feed to a stage in place of one.
    """

    __slots__ = ("_key", "_offset", "_partition", "_timestamp_ms", "_topic", "_value")

    def __init__(
        self, topic: str, partition: int, offset: int, value: bytes | None, key: bytes | None = None, timestamp_ms: int = 0
    ) -> None:
        self._topic, self._partition, self._offset, self._value, self._key = topic, partition, offset, value, key
        self._timestamp_ms = timestamp_ms

    def timestamp(self) -> tuple[int, int]:
        """(TIMESTAMP_LOG_APPEND_TIME, broker time in ms), as a topic of log-append time gives."""
        return 2, self._timestamp_ms

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key


class TopicCreationError(ReloadtraceError):
    """A topic the pipeline needs could not be created."""


def ensure_topics(
    client_config: Mapping[str, Any],
    topics: Mapping[str, Mapping[str, str]] | Iterable[str],
    *,
    partitions: int,
    replication_factor: int = -1,
    timeout_s: float = 30.0,
) -> None:
    """Create the topics that do not exist yet; idempotent, and a topic another client creates meanwhile is fine.

    Args:
        client_config: librdkafka settings of the admin client (e.g. :meth:`KafkaSettings.confluent_config`).
        topics: topic names, or name -> topic configs (e.g. :meth:`TopicNames.with_configs`: log-append
            time, reloads kept forever).
        partitions: partitions of each topic created.
        replication_factor: -1 = the broker's default.

    Raises:
        ValueError: ``partitions`` < 1.
        TopicCreationError: a topic could not be created.
    """
    from confluent_kafka.admin import NewTopic

    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    wanted = dict(topics) if isinstance(topics, Mapping) else {name: {} for name in topics}
    admin = AdminClient(dict(client_config))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [
        NewTopic(name, num_partitions=partitions, replication_factor=replication_factor, config=dict(config))
        for name, config in wanted.items()
        if name not in existing
    ]
    if not missing:
        return
    for name, future in admin.create_topics(missing, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except Exception as error:
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise TopicCreationError(f"creating topic {name} failed: {error}") from error
    logger.info("created topics %s", ", ".join(topic.topic for topic in missing))
