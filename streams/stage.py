"""One stage runtime: the only code that drives Kafka for a stage (poll, produce, commit, rebalance, restore, dead letters).

A :class:`Stage` says what it computes: ingest messages, advance, say which positions (and which
small state) a commit must carry, rebuild a partition from a window of its input, forget
partitions. :class:`StageRuntime` owns the clients and one cycle, the same for every stage:
poll -> ingest -> advance -> (at commit time) prepare -> flush the producer and check every
delivery -> commit offsets with versioned metadata.

Guarantees: an offset is committed only after everything published from the messages before it
was delivered (a failed delivery stops the runtime before its commit); a message is ingested or
dead-lettered, and a dead letter always fits its topic; a partition is restored in the poll loop
while it is paused (never inside a rebalance callback), reading only the window its stage plans.
Non-guarantee: ordering across partitions.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from schemas.dead_letters import RECORD_OVERHEAD_BYTES, DeadLetterBuilder
from schemas.errors import DecodeError, InvalidRecordError, ReloadtraceError
from schemas.kafka_io import (
    commit_quietly,
    ensure_topics,
    group_consumer_config,
    is_too_large,
    produce_dead_letter,
    produce_waiting,
    topic_message_limit_bytes,
)
from schemas.settings import KafkaSettings
from streams.progress import PartitionProgress

logger = logging.getLogger(__name__)

_METADATA_VERSION = 2
_METADATA_LIMIT_BYTES = 4_000  # the broker's offset.metadata.max.bytes is 4096 by default
_FLUSH_TIMEOUT_S = 60.0
_QUERY_TIMEOUT_S = 30.0
_TABLE_BATCH = 1_000
_RESTORE_EMPTY_READS = 30
"""Consecutive empty 1 s reads after which a restore takes its partition's log as ended."""
_NANOS_PER_MS = 1_000_000

TopicPartitionKey = tuple[str, int]
"""(topic, partition)."""


class StageError(ReloadtraceError):
    """A stage cannot go on safely (deliveries failing, a fatal Kafka error); nothing after the last commit is acknowledged."""


class MessageTooLarge(StageError):
    """A record a stage publishes is larger than its topic accepts (the stage decides: usually a dead letter)."""

    dead_letter_kind = "too_large"

    def __init__(self, topic: str, size: int, limit: int) -> None:
        super().__init__(f"a {size}-byte record does not fit topic {topic} (max {limit} bytes)")
        self.topic, self.size, self.limit = topic, size, limit


class StageInterrupted(ReloadtraceError):
    """Raised by a stage's ingest when the runtime is stopping mid-batch (what it did not finish stays uncommitted)."""


@dataclass(frozen=True, slots=True)
class Committed:
    """A partition as its group last committed it: the offset to go on from, and the stage state stored with it."""

    topic: str
    partition: int
    offset: int
    """The committed offset; the low watermark when the group has none or retention trimmed it."""
    state: Mapping[str, Any] | None
    """The state of :meth:`Stage.snapshot` at that commit; None when there is none or it is unreadable."""
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class RestorePlan:
    """Which window of its input a partition's state is rebuilt from before it is consumed again.

    The runtime reads from the first offset at or after ``since_time_ms`` (broker time; never after
    ``until_offset``) up to ``until_offset`` (exclusive), then on while ``more(message)`` is true
    (at most to the high watermark found when the restore began). Consumption resumes at the first
    offset the restore did not read.
    """

    until_offset: int
    since_time_ms: int | None = None
    more: Callable[[Message, int], bool] | None = None
    """``more(message, arrival_ms)``: read this message past ``until_offset`` as part of the restore."""


@dataclass(frozen=True, slots=True)
class Position:
    """What a commit of one partition carries: the next offset to read, and the stage's state (small: JSON, < 4 KB)."""

    offset: int
    state: Mapping[str, Any] | None = None


class Outbox(ABC):
    """Where a stage's records go; the runtime's producer in production (:class:`streams.testing.ListOutbox` in tests)."""

    @abstractmethod
    def publish(self, topic: str, key: bytes | None, value: bytes, *, partition: int | None = None) -> None:
        """Publish, waiting while the producer's queue is full.

        Raises:
            MessageTooLarge: the record does not fit ``topic``.
        """

    @abstractmethod
    def reject(self, message: Message, error: Exception, *, stage: str, index: int = -1) -> None:
        """Dead-letter ``message`` (always fits the dead-letter topic); ``index``: which of its records
        failed (a span of an OTLP message), -1 for the message as a whole."""

    @abstractmethod
    def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has."""

    @abstractmethod
    def limit(self, topic: str) -> int:
        """The largest record (key + value bytes) ``topic`` takes."""


class Stage(ABC):
    """What one stage computes; :class:`StageRuntime` drives it. Every method runs on the runtime's thread.

    ``ingest`` must handle every message it is given unless it raises :class:`StageInterrupted`
    (only while stopping); ``snapshot`` decides what is committed.
    """

    name: str = "stage"
    tracks_arrival: bool = False
    """The runtime tracks broker arrival progress of every partition (see :meth:`StageRuntime.progress`)."""

    @abstractmethod
    def topics(self) -> Sequence[str]:
        """The topics read by the consumer group (partitions are shared among members; none: no group)."""

    def table_topics(self) -> Sequence[str]:
        """Topics every member reads whole (loaded before the first assignment, then followed)."""
        return ()

    def start(self, runtime: StageRuntime) -> None:
        """Called once, after the tables were loaded and before the group is joined."""

    @abstractmethod
    def ingest(self, messages: Sequence[Message], arrivals: Sequence[int] | None, outbox: Outbox) -> None:
        """Messages of the group's topics (``arrivals``: broker arrival ms of each, when tracked)."""

    def ingest_table(self, messages: Sequence[Message], arrivals: Sequence[int] | None, outbox: Outbox) -> None:
        """Messages of the table topics."""

    def advance(self, outbox: Outbox) -> None:
        """Emit what is due (called every cycle)."""

    def prepare_commit(self, outbox: Outbox, *, draining: bool) -> None:
        """Publish what a commit must cover; ``draining``: every ingested message must become committable now."""

    def commit_requested(self) -> bool:
        """Whether to commit now rather than at the next commit interval (checked every cycle)."""
        return False

    @abstractmethod
    def snapshot(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, Position]:
        """The positions (and state) to commit; a partition left out is not committed this time."""

    def assigned(self, partitions: Sequence[Committed]) -> dict[TopicPartitionKey, RestorePlan]:
        """New partitions; returns the restore plan of those whose state must be rebuilt first."""
        return {}

    def restore_messages(
        self, partition: TopicPartitionKey, messages: Sequence[Message], arrivals: Sequence[int], outbox: Outbox
    ) -> None:
        """A chunk of a planned restore window, in offset order."""

    def restored(self, partition: TopicPartitionKey, committed: Committed, position: int, outbox: Outbox) -> None:
        """The restore window was read; consumption goes on at ``position``."""

    def forget(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Partitions this member no longer owns (revoked after a commit, or lost)."""

    def upgrade_state(self, metadata: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """State from commit metadata written by an older version (default: none)."""
        return None

    def close(self) -> None:
        """The runtime stopped (cleanly or not): release what the stage holds."""


@dataclass(frozen=True)
class RuntimeSettings:
    """How the runtime drives Kafka for one stage."""

    group_id: str
    session_timeout_ms: int = 45_000
    batch_size: int = 5_000
    poll_timeout_ms: int = 100
    commit_interval_ms: int = 1_000
    high_watermark_interval_ms: int = 100
    """How often partitions read to their end are checked for progress (stages that track arrival)."""
    max_poll_interval_ms: int = 600_000
    create_topics: bool = True
    """Create the pipeline's missing topics before starting (:func:`schemas.kafka_io.ensure_topics`)."""
    consumer_config: Mapping[str, Any] = field(default_factory=dict)
    producer_config: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class RuntimeStats:
    consumed: int = 0
    table_consumed: int = 0
    dead_letters: int = 0
    commits: int = 0
    restored_partitions: int = 0
    restore_messages: int = 0
    delivery_failures: int = 0
    too_large: int = 0
    assigned: list[TopicPartitionKey] = field(default_factory=list)
    restoring: list[TopicPartitionKey] = field(default_factory=list)


def _error_kind(error: Exception) -> str:
    """The dead letter's ``error_kind`` for what a stage rejected a message with."""
    if isinstance(error, DecodeError):
        return error.kind.value
    if isinstance(error, InvalidRecordError):
        return "invalid_record"
    kind = getattr(error, "dead_letter_kind", None)
    return kind if isinstance(kind, str) else "failed"


def _shown(keys: Sequence[TopicPartitionKey]) -> str:
    return ", ".join(f"{topic}[{partition}]" for topic, partition in keys)


def encode_metadata(stage: str, state: Mapping[str, Any] | None) -> str:
    """Commit metadata: ``{"v": 2, "stage": NAME, "state": STATE}`` as JSON."""
    return orjson.dumps({"v": _METADATA_VERSION, "stage": stage, "state": state}).decode()


def decode_metadata(metadata: str | None) -> tuple[int | None, Mapping[str, Any] | None]:
    """(version, state or legacy document) of commit metadata; (None, None) when absent or unreadable."""
    if not metadata:
        return None, None
    try:
        document = orjson.loads(metadata)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(document, dict):
        return None, None
    version = document.get("v")
    if version == _METADATA_VERSION:
        state = document.get("state")
        return _METADATA_VERSION, state if isinstance(state, dict) else None
    return (version if isinstance(version, int) else None), document


class _RuntimeOutbox(Outbox):
    def __init__(self, runtime: StageRuntime) -> None:
        self._runtime = runtime

    def publish(self, topic: str, key: bytes | None, value: bytes, *, partition: int | None = None) -> None:
        self._runtime._publish(topic, key, value, partition)

    def reject(self, message: Message, error: Exception, *, stage: str, index: int = -1) -> None:
        self._runtime._reject(message, error, stage, index)

    def partitions(self, topic: str) -> int:
        return self._runtime.partition_count(topic)

    def limit(self, topic: str) -> int:
        return self._runtime._limit(topic) - RECORD_OVERHEAD_BYTES


@dataclass
class _RestoreJob:
    committed: Committed
    plan: RestorePlan
    reader: Consumer | None = None
    next_offset: int = -1
    stop_at: int = -1
    last_arrival_ms: int = -(2**63)
    empty_reads: int = 0
    done: bool = False


class StageRuntime:
    """Drives one :class:`Stage` on Kafka until ``stop`` is set.

    Args:
        kafka: broker, topics and framing.
        stage: what is computed.
        settings: group, batching and timing.
        wall_clock_ns: time of dead letters and of arrival progress when a broker time is missing.
        consumer_factory, producer_factory: seams for tests (default: confluent-kafka clients).
        message_limit: the largest record a topic takes (default: its ``max.message.bytes``, asked once).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        stage: Stage,
        settings: RuntimeSettings,
        *,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
        message_limit: Callable[[str], int] | None = None,
    ) -> None:
        self.kafka = kafka
        self._message_limit = message_limit
        self.stage = stage
        self.settings = settings
        self._clock = wall_clock_ns
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self.outbox: Outbox = _RuntimeOutbox(self)
        self.stats = RuntimeStats()
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._table_consumer: Consumer | None = None
        self._query: Consumer | None = None
        self._dead_letters: DeadLetterBuilder | None = None
        self._limits: dict[str, int] = {}
        self._partition_counts: dict[str, int] = {}
        self._progress: dict[TopicPartitionKey, PartitionProgress] = {}
        self._active: set[TopicPartitionKey] = set()
        self._jobs: dict[TopicPartitionKey, _RestoreJob] = {}
        self._skip_below: dict[TopicPartitionKey, int] = {}
        self._last_committed: dict[TopicPartitionKey, tuple[int, str]] = {}
        self._rebalanced = False
        self._delivery_error: str | None = None
        self._failure: StageError | None = None

    # --- what stages read --------------------------------------------------------------------

    def progress(self, topic: str, partition: int) -> PartitionProgress | None:
        """Arrival progress of an active (not restoring) partition, or of a table partition; None otherwise."""
        key = (topic, partition)
        if key in self._jobs:
            return None
        return self._progress.get(key)

    def active_partitions(self) -> list[TopicPartitionKey]:
        """Partitions assigned and restored, sorted."""
        return sorted(self._active)

    def restoring_partitions(self) -> list[TopicPartitionKey]:
        return sorted(self._jobs)

    def partition_count(self, topic: str) -> int:
        """Partitions of ``topic`` (metadata, cached)."""
        count = self._partition_counts.get(topic)
        if count is None:
            metadata = self._query_client().list_topics(topic, timeout=_QUERY_TIMEOUT_S).topics.get(topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                raise StageError(f"topic {topic} is missing: {metadata.error if metadata else ''}")
            count = self._partition_counts[topic] = len(metadata.partitions)
        return count

    def read(self, topic: str, partition: int, offsets: set[int]) -> dict[int, Message]:
        """The messages at ``offsets`` of one partition, read back from the log (those gone by retention are absent)."""
        found: dict[int, Message] = {}
        if not offsets:
            return found
        reader = self._reader()
        try:
            last = max(offsets)
            reader.assign([TopicPartition(topic, partition, min(offsets))])
            deadline = time.monotonic() + _FLUSH_TIMEOUT_S
            _, high = self.bounds(topic, partition)
            position = min(offsets)
            while position <= last and position < high and time.monotonic() < deadline:
                for message in reader.consume(max(1, min(self.settings.batch_size, last + 1 - position)), timeout=1.0):
                    if message.error() is not None:
                        self._consume_error(message)
                        continue
                    position = message.offset() + 1
                    if message.offset() in offsets:
                        found[message.offset()] = message
        finally:
            reader.close()
        return found

    # --- lifecycle -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; drain and commit on the way out.

        Raises:
            StageError: deliveries failed or Kafka reported a fatal error (nothing after the last
                commit is acknowledged), or what the stage raised.
        """
        base = self.kafka.confluent_config()
        self._producer = self._producer_factory(
            base
            | {"enable.idempotence": True, "linger.ms": 5, "compression.type": "lz4", "message.timeout.ms": 120_000}
            | dict(self.settings.producer_config)
        )
        config = (
            base
            | group_consumer_config(self.settings.group_id, self.settings.session_timeout_ms)
            | {"max.poll.interval.ms": self.settings.max_poll_interval_ms}
            | dict(self.settings.consumer_config)
        )
        self._consumer = self._consumer_factory(config)
        watcher = threading.Thread(target=lambda: (stop.wait(), self.stopping.set()), daemon=True)
        watcher.start()
        clean = False
        try:
            if self.settings.create_topics:
                ensure_topics(
                    self.kafka.confluent_config(), self.kafka.topics.with_configs(), partitions=self.kafka.partitions
                )
            self._load_tables(stop)
            self.stage.start(self)
            if self.stage.topics():
                self._consumer.subscribe(
                    list(self.stage.topics()), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
                )
            self.ready.set()
            last_commit = last_high = time.monotonic()
            while not stop.is_set():
                self._raise_failure()
                self._poll_once()
                if self._jobs:
                    self._restore_step()
                now = time.monotonic()
                if self.stage.tracks_arrival and now - last_high >= self.settings.high_watermark_interval_ms / 1000:
                    self._observe_high_watermarks()
                    last_high = now
                self.stage.advance(self.outbox)
                self._producer.poll(0)
                if now - last_commit >= self.settings.commit_interval_ms / 1000 or self.stage.commit_requested():
                    self.commit()
                    last_commit = now
            self.commit(draining=True)
            clean = True
        except StageInterrupted:
            self.commit(draining=False)
            clean = True
        finally:
            self.stopping.set()
            self._close(flush=clean)

    def _close(self, *, flush: bool) -> None:
        try:
            self.stage.close()
        except Exception:
            logger.exception("%s: closing failed", self.stage.name)
        if flush and self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.flush(_FLUSH_TIMEOUT_S)
        for job in self._jobs.values():
            if job.reader is not None:
                with contextlib.suppress(Exception):
                    job.reader.close()
        self._jobs.clear()
        for consumer in (self._consumer, self._table_consumer, self._query):
            if consumer is not None:
                with contextlib.suppress(Exception):
                    consumer.close()

    # --- clients ---------------------------------------------------------------------------

    def _query_client(self) -> Consumer:
        """A client that consumes nothing: metadata and watermark queries never wait behind fetches."""
        if self._query is None:
            self._query = self._consumer_factory(
                self.kafka.confluent_config() | {"group.id": f"{self.settings.group_id}-query", "enable.auto.commit": False}
            )
        return self._query

    def _reader(self) -> Consumer:
        return self._consumer_factory(
            self.kafka.confluent_config()
            | {
                "group.id": f"{self.settings.group_id}-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "queued.max.messages.kbytes": 16_384,
            }
        )

    # --- the poll loop ---------------------------------------------------------------------

    def _poll_once(self) -> None:
        assert self._consumer is not None
        self._rebalanced = False
        timeout_s = self.settings.poll_timeout_ms / 1000
        if self._table_consumer is not None:
            table = self._table_consumer.consume(_TABLE_BATCH, timeout=0 if self._active else timeout_s)
            if table:
                self._ingest_table(table)
        if not self._active and not self._jobs and not self.stage.topics():
            return
        messages = self._consumer.consume(self.settings.batch_size, timeout=timeout_s)
        if not messages:
            return
        if self._rebalanced or self._skip_below or self._jobs or any(m.error() is not None for m in messages):
            messages = self._usable(messages)
        if not messages:
            return
        self.stats.consumed += len(messages)
        arrivals = self._arrivals(messages) if self.stage.tracks_arrival else None
        self.stage.ingest(messages, arrivals, self.outbox)

    def _usable(self, messages: list[Message]) -> list[Message]:
        """Errors handled; messages of partitions not active (revoked meanwhile, restoring) or already restored dropped."""
        usable = []
        for message in messages:
            if message.error() is not None:
                self._consume_error(message)
                continue
            key = (message.topic(), message.partition())
            if key not in self._active:
                continue
            below = self._skip_below.get(key)
            if below is not None:
                if message.offset() < below:
                    continue
                del self._skip_below[key]
            usable.append(message)
        return usable

    def _arrivals(self, messages: Sequence[Message]) -> list[int]:
        """Broker arrival time (ms) of each message, never earlier than its partition's previous one."""
        arrivals = []
        progress_of = self._progress
        for message in messages:
            key = (message.topic(), message.partition())
            progress = progress_of.get(key)
            if progress is None:
                progress = progress_of[key] = PartitionProgress()
            timestamp_type, timestamp = message.timestamp()
            if timestamp_type == TIMESTAMP_NOT_AVAILABLE:
                timestamp = self._clock() // _NANOS_PER_MS
            arrival = max(progress.last_arrival_ms, timestamp)
            progress.consumed(message.offset(), arrival)
            arrivals.append(arrival)
        return arrivals

    def _consume_error(self, message: Message) -> None:
        error = message.error()
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise StageError(f"fatal consumer error: {error}")
        logger.warning("consumer error (retried by the client): %s", error)

    # --- tables ----------------------------------------------------------------------------

    def _load_tables(self, stop: threading.Event) -> None:
        """Read every table topic to the end it has now, before the group is joined."""
        topics = list(self.stage.table_topics())
        if not topics:
            return
        self._table_consumer = self._consumer_factory(
            self.kafka.confluent_config()
            | {
                "group.id": f"{self.settings.group_id}-table-reader",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )
        partitions = []
        targets: dict[TopicPartitionKey, int] = {}
        for topic in topics:
            for number in range(self.partition_count(topic)):
                low, high = self.bounds(topic, number)
                partitions.append(TopicPartition(topic, number, OFFSET_BEGINNING))
                targets[(topic, number)] = high
                self._progress[(topic, number)] = PartitionProgress(next_offset=low)
        self._table_consumer.assign(partitions)
        while not stop.is_set() and any(self._progress[key].next_offset < high for key, high in targets.items()):
            messages = self._table_consumer.consume(_TABLE_BATCH, timeout=0.5)
            if messages:
                self._ingest_table(messages)
        # Read to its end as of now: nothing arrived before the query that is not read.
        now_ms = self._clock() // _NANOS_PER_MS
        for key, high in targets.items():
            self._progress[key].observed_high_watermark(high, now_ms)

    def _ingest_table(self, messages: list[Message]) -> None:
        good = []
        for message in messages:
            if message.error() is not None:
                self._consume_error(message)
            else:
                good.append(message)
        if not good:
            return
        self.stats.table_consumed += len(good)
        self.stage.ingest_table(good, self._arrivals(good), self.outbox)

    def _observe_high_watermarks(self) -> None:
        """For each tracked partition read to its last known end, ask the broker whether more arrived.

        A partition known to be behind (its cached high watermark, from the last fetch, is past our
        position) needs no query: its progress is its last arrival anyway.
        """
        now_ms = self._clock() // _NANOS_PER_MS
        clients = [(self._consumer, key) for key in self._active]
        if self._table_consumer is not None:
            clients += [(self._table_consumer, key) for key in self._progress if key[0] in self.stage.table_topics()]
        for client, key in clients:
            progress = self._progress.get(key)
            if progress is None:
                progress = self._progress[key] = PartitionProgress(next_offset=-1)
            tp = TopicPartition(*key)
            with contextlib.suppress(Exception):
                _, cached = client.get_watermark_offsets(tp, cached=True)
                if cached is not None and cached > progress.next_offset >= 0:
                    continue
            high = self._query_high_watermark(tp)
            if high is not None:
                progress.observed_high_watermark(high, now_ms)

    def _query_high_watermark(self, tp: TopicPartition) -> int | None:
        try:
            return self.bounds(tp.topic, tp.partition, timeout_s=5)[1]
        except StageError as error:  # a failed query only delays progress
            logger.warning("%s", error)
            return None

    def bounds(self, topic: str, partition: int, *, timeout_s: float = _QUERY_TIMEOUT_S) -> tuple[int, int]:
        """(low, high) watermarks of a partition, asked of the broker (retried with fresh metadata until ``timeout_s``).

        Raises:
            StageError: the broker did not answer in time.
        """
        query = self._query_client()
        tp = TopicPartition(topic, partition)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return query.get_watermark_offsets(tp, timeout=max(1.0, min(5.0, deadline - time.monotonic())), cached=False)
            except Exception as error:
                if time.monotonic() >= deadline:
                    raise StageError(f"watermark query for {topic}[{partition}] failed: {error}") from error
                # A client that consumes nothing keeps stale metadata (e.g. across a broker restart): refresh it.
                with contextlib.suppress(Exception):
                    query.list_topics(topic, timeout=5)
                time.sleep(0.2)

    # --- output ----------------------------------------------------------------------------

    def _limit(self, topic: str) -> int:
        """The largest message ``topic`` takes (framing included), asked once."""
        limit = self._limits.get(topic)
        if limit is None:
            limit = self._message_limit(topic) if self._message_limit else topic_message_limit_bytes(self.kafka, topic)
            self._limits[topic] = limit
        return limit

    def _publish(self, topic: str, key: bytes | None, value: bytes, partition: int | None) -> None:
        size = len(value) + (len(key) if key else 0)
        limit = self._limit(topic) - RECORD_OVERHEAD_BYTES
        if size > limit:
            self.stats.too_large += 1
            raise MessageTooLarge(topic, size, limit)
        assert self._producer is not None
        try:
            produce_waiting(self._producer, topic, key, value, self._on_delivery, partition=partition)
        except KafkaException as error:
            if not is_too_large(error):
                raise
            self.stats.too_large += 1
            raise MessageTooLarge(topic, size, limit) from error

    def _reject(self, message: Message, error: Exception, stage: str, index: int = -1) -> None:
        topic = self.kafka.topics.dead_letter
        if self._dead_letters is None:
            self._dead_letters = DeadLetterBuilder(self.kafka.codec("DeadLetter"), max_message_bytes=max(self._limit(topic), 16_384))
        assert self._producer is not None
        produce_dead_letter(
            self._producer,
            topic,
            self._dead_letters,
            self._on_delivery,
            source_topic=message.topic(),
            source_partition=message.partition(),
            source_offset=message.offset(),
            raw_key=message.key(),
            raw_value=message.value(),
            error_kind=_error_kind(error),
            error=str(error),
            stage=stage,
            now_unix_nano=self._clock(),
            source_index=index,
        )
        self.stats.dead_letters += 1

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.stats.delivery_failures += 1
            if self._delivery_error is None:
                self._delivery_error = f"delivery to {message.topic()} failed: {error}"

    # --- commits ---------------------------------------------------------------------------

    def commit(self, partitions: Iterable[TopicPartitionKey] | None = None, *, draining: bool = False) -> None:
        """Prepare, flush the producer and check deliveries, then commit the stage's positions.

        Raises:
            StageError: records are undelivered after the flush timeout, or a delivery failed.
        """
        if self._consumer is None or self._producer is None:
            return
        self.stage.prepare_commit(self.outbox, draining=draining)
        remaining = self._producer.flush(_FLUSH_TIMEOUT_S)
        if remaining:
            raise StageError(f"{remaining} records still undelivered after {_FLUSH_TIMEOUT_S:.0f}s; not committing")
        if self._delivery_error is not None:
            raise StageError(f"{self._delivery_error}; not committing")
        keys = sorted(self._active if partitions is None else set(partitions) & self._active)
        if not keys:
            return
        offsets = []
        for key, position in self.stage.snapshot(keys).items():
            if key not in self._active or position.offset < 0:
                continue
            metadata = encode_metadata(self.stage.name, position.state)
            if len(metadata) > _METADATA_LIMIT_BYTES:
                raise StageError(f"commit metadata of {self.stage.name} is {len(metadata)} bytes (limit {_METADATA_LIMIT_BYTES})")
            if self._last_committed.get(key) == (position.offset, metadata):
                continue
            offsets.append(TopicPartition(key[0], key[1], position.offset, metadata=metadata))
        if offsets and commit_quietly(self._consumer, offsets):
            self.stats.commits += 1
            for tp in offsets:
                self._last_committed[(tp.topic, tp.partition)] = (tp.offset, tp.metadata)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    # --- rebalances ------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalanced = True
        try:
            committed = self._committed(consumer, partitions)
            plans = self.stage.assigned(committed)
        except Exception as error:  # noqa: BLE001 - raised from the poll loop, not inside librdkafka's callback
            self._failure = error if isinstance(error, StageError) else StageError(f"assignment failed: {error!r}")
            self._failure.__cause__ = error
            consumer.assign([TopicPartition(tp.topic, tp.partition, tp.offset) for tp in partitions])
            consumer.pause(partitions)
            return
        consumer.assign([TopicPartition(c.topic, c.partition, c.offset) for c in committed])
        restoring = []
        for entry in committed:
            key = (entry.topic, entry.partition)
            plan = plans.get(key)
            self._progress[key] = PartitionProgress(next_offset=entry.offset)
            if plan is None:
                self._active.add(key)
            else:
                self._jobs[key] = _RestoreJob(entry, plan)
                restoring.append(TopicPartition(entry.topic, entry.partition))
        if restoring:
            consumer.pause(restoring)
        self._refresh_assignment_stats()

    def _committed(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[Committed]:
        entries = []
        for tp in self._committed_offsets(consumer, partitions):
            low, high = self.bounds(tp.topic, tp.partition)
            offset = max(tp.offset, low)
            version, document = decode_metadata(tp.metadata)
            if version == _METADATA_VERSION:
                state = document
            elif document is not None:
                state = self.stage.upgrade_state(document)
            else:
                state = None
                if tp.metadata:
                    logger.warning("ignoring unreadable commit metadata of %s[%d]", tp.topic, tp.partition)
            entries.append(Committed(tp.topic, tp.partition, offset, state, low, high))
        return entries

    @staticmethod
    def _committed_offsets(consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The group's committed offsets (asked again while the coordinator is unavailable, up to the query timeout)."""
        deadline = time.monotonic() + _QUERY_TIMEOUT_S
        while True:
            try:
                return consumer.committed(partitions, timeout=max(1.0, deadline - time.monotonic()))
            except Exception as error:
                if time.monotonic() >= deadline:
                    raise StageError(f"reading committed offsets failed: {error}") from error
                time.sleep(0.5)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalanced = True
        keys = [(tp.topic, tp.partition) for tp in partitions]
        if keys:
            logger.info("%s: partitions revoked: %s", self.stage.name, _shown(keys))
        self._drop_jobs(keys)
        active = [key for key in keys if key in self._active]
        if active and self._failure is None:
            try:
                self.commit(active, draining=True)
            except StageError as error:
                logger.warning("commit on revoke failed; the new owner re-reads from the last commit: %s", error)
                self._failure = error
        self._forget(keys)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalanced = True
        keys = [(tp.topic, tp.partition) for tp in partitions]
        logger.warning("%s: partitions lost (this member left its group): %s", self.stage.name, _shown(keys))
        self._drop_jobs(keys)
        self._forget(keys)

    def _forget(self, keys: list[TopicPartitionKey]) -> None:
        self.stage.forget(keys)
        for key in keys:
            self._active.discard(key)
            self._progress.pop(key, None)
            self._skip_below.pop(key, None)
            self._last_committed.pop(key, None)
        self._refresh_assignment_stats()

    def _drop_jobs(self, keys: Iterable[TopicPartitionKey]) -> None:
        for key in keys:
            job = self._jobs.pop(key, None)
            if job is not None and job.reader is not None:
                with contextlib.suppress(Exception):
                    job.reader.close()

    def _refresh_assignment_stats(self) -> None:
        self.stats.assigned = sorted(self._active | set(self._jobs))
        self.stats.restoring = sorted(self._jobs)

    # --- restores --------------------------------------------------------------------------

    def _restore_step(self) -> None:
        """Read one chunk of the first pending restore; finish it when its window is read."""
        key, job = next(iter(self._jobs.items()))
        if job.reader is None:
            self._begin_restore(key, job)
        if not job.done:
            self._read_restore_chunk(key, job)
        if job.done:
            self._finish_restore(key, job)

    def _begin_restore(self, key: TopicPartitionKey, job: _RestoreJob) -> None:
        committed, plan = job.committed, job.plan
        until = max(committed.low, min(plan.until_offset, committed.high))
        start = until
        if plan.since_time_ms is not None:
            found = self._query_client().offsets_for_times(
                [TopicPartition(key[0], key[1], max(plan.since_time_ms, 0))], timeout=_QUERY_TIMEOUT_S
            )[0].offset
            start = committed.high if found < 0 else found
            start = max(committed.low, min(start, until))
        _, high = self.bounds(*key)
        job.next_offset = start
        job.stop_at = until
        job.reader = self._reader()
        job.done = start >= high or (start >= until and plan.more is None)
        job.committed = Committed(committed.topic, committed.partition, committed.offset, committed.state, committed.low, high)
        if not job.done:
            job.reader.assign([TopicPartition(key[0], key[1], start)])

    def _read_restore_chunk(self, key: TopicPartitionKey, job: _RestoreJob) -> None:
        high = job.committed.high
        limit = job.stop_at if job.plan.more is None else high
        wanted = max(1, min(self.settings.batch_size, limit - job.next_offset))
        assert job.reader is not None
        chunk: list[Message] = []
        arrivals: list[int] = []
        for message in job.reader.consume(wanted, timeout=1.0):
            if message.error() is not None:
                self._consume_error(message)
                continue
            offset = message.offset()
            timestamp_type, timestamp = message.timestamp()
            if timestamp_type == TIMESTAMP_NOT_AVAILABLE:
                timestamp = self._clock() // _NANOS_PER_MS
            arrival = max(timestamp, job.last_arrival_ms)
            if offset >= job.stop_at and (job.plan.more is None or not job.plan.more(message, arrival)):
                job.done = True
                break
            job.last_arrival_ms = arrival
            chunk.append(message)
            arrivals.append(arrival)
            job.next_offset = offset + 1
            if job.next_offset >= limit:
                job.done = True
                break
        job.empty_reads = 0 if chunk or job.done else job.empty_reads + 1
        if job.empty_reads >= _RESTORE_EMPTY_READS:
            # Offsets below the high watermark that never come (transaction markers, compaction): the log ends here.
            logger.warning("%s: %s[%d] restore read nothing more at %d (high watermark %d)", self.stage.name, *key, job.next_offset, high)
            job.done = True
        if chunk:
            self.stats.restore_messages += len(chunk)
            self.stage.restore_messages(key, chunk, arrivals, self.outbox)

    def _finish_restore(self, key: TopicPartitionKey, job: _RestoreJob) -> None:
        del self._jobs[key]
        if job.reader is not None:
            with contextlib.suppress(Exception):
                job.reader.close()
        position = max(job.next_offset, job.committed.offset)
        progress = self._progress.setdefault(key, PartitionProgress())
        progress.next_offset = position
        progress.last_arrival_ms = max(progress.last_arrival_ms, job.last_arrival_ms)
        self.stage.restored(key, job.committed, position, self.outbox)
        if position > job.committed.offset:
            self._skip_below[key] = position
        self._active.add(key)
        self.stats.restored_partitions += 1
        assert self._consumer is not None
        self._consumer.resume([TopicPartition(*key)])
        self._refresh_assignment_stats()
        logger.debug(
            "%s: %s[%d] restored (committed %d, read up to %d, consuming from %d)",
            self.stage.name, key[0], key[1], job.committed.offset, job.next_offset, position,
        )


