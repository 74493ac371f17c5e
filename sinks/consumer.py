"""The Kafka edge of the ClickHouse sink: read the four output topics, land them, commit after the flush.

Reads ``spans.enriched``, ``reloads``, ``reload.anomalies`` and ``dead-letter`` in one consumer
group and hands each message's Avro body, undecoded, to :class:`~sinks.clickhouse.ClickHouseSink`
(ClickHouse decodes it). Only the message header (magic + writer schema) is checked in Python.

Guarantees:
    * No loss: offsets are committed only after the flush holding their records returned, so a
      crash (even between the insert and the commit) re-reads and re-inserts, never skips.
    * Exact counts under FINAL: a re-inserted batch with the same rows is dropped by its
      deduplication token; rows re-read into differently cut batches collapse by the tables'
      replacing keys (see :mod:`sinks.clickhouse`).
    * Nothing silently dropped: a message whose header does not decode, a tombstone, or a row
      ClickHouse refuses becomes a ``dead_letters`` row with topic, partition, offset and bytes.

Non-guarantees: no ordering across partitions; raw (non-FINAL) counts may exceed the truth after a
crash until background merges run. On a flush that keeps failing (retries exhausted, fatal
error) ``run`` raises :class:`SinkConsumerError` without committing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from schemas.errors import DecodeError
from schemas.records import dead_letter
from schemas.settings import KafkaSettings
from sinks.base import DEAD_LETTERS_TABLE, SinkRecord
from sinks.clickhouse import ClickHouseSink
from sinks.errors import SinkError
from sinks.settings import SinkSettings
from streams.kafka_io import commit_quietly

logger = logging.getLogger(__name__)

_DEFAULT_BATCH_SIZE = 10_000
_DEFAULT_POLL_TIMEOUT_MS = 100


class SinkConsumerError(SinkError):
    """The sink consumer stopped: a flush failed for good, or the consumer hit a fatal Kafka error."""


@dataclass
class SinkConsumerStats:
    """Counters for progress and tests (read them from another thread only as a hint)."""

    messages: int = 0
    flushes: int = 0
    rows_flushed: int = 0
    dead_letters: int = 0
    commits: int = 0
    assigned: list[tuple[str, int]] = field(default_factory=list)


class SinkConsumer:
    """Blocking consume → batch → flush → commit loop; run it in a thread (``run(stop)``).

    chDB allows one process per data directory: run this inside the process that owns the
    embedded engine (e.g. as a thread of the worker), not beside it.

    Args:
        kafka: broker, topic names and framing.
        settings: sink URL, batching and retry limits, consumer group.
        sink: an open sink to use (default: one opened from ``settings``).
        on_flushed: called with the number of rows after each successful flush and BEFORE its
            offsets are committed (a seam for metrics and for crash tests).
        wall_clock_ns: time stamp of the dead letters this consumer makes.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: SinkSettings | None = None,
        *,
        sink: ClickHouseSink | None = None,
        on_flushed: Callable[[int], None] | None = None,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        batch_size: int = _DEFAULT_BATCH_SIZE,
        poll_timeout_ms: int = _DEFAULT_POLL_TIMEOUT_MS,
    ) -> None:
        self._kafka = kafka
        self._settings = settings or SinkSettings()
        self._sink = sink
        self._on_flushed = on_flushed
        self._clock = wall_clock_ns
        self._batch_size = batch_size
        self._poll_timeout_s = poll_timeout_ms / 1000
        topics = kafka.topics
        self._tables = {
            topics.spans_enriched: ("spans_enriched", kafka.codec("EnrichedSpan")),
            topics.reloads: ("reload_events", kafka.codec("ReloadEvent")),
            topics.reload_anomalies: ("anomalies", kafka.codec("Anomaly")),
            topics.dead_letter: (DEAD_LETTERS_TABLE, kafka.codec("DeadLetter")),
        }
        self._uncommitted: dict[tuple[str, int], int] = {}
        self._consumer: Consumer | None = None
        self.stats = SinkConsumerStats()
        self.ready = threading.Event()

    @property
    def sink(self) -> ClickHouseSink:
        """The sink (opened from the settings on first use; it stays open after ``run`` returns)."""
        if self._sink is None:
            self._sink = ClickHouseSink(self._settings)
        return self._sink

    def close(self) -> None:
        """Close the sink's client (releases a chDB data directory); pending rows are not flushed."""
        if self._sink is not None:
            self._sink.close()

    def run(self, stop: threading.Event) -> None:
        """Consume and land records until ``stop`` is set; flush and commit on the way out.

        Raises:
            SinkConsumerError: a flush failed for good (nothing after the last commit is
                acknowledged) or Kafka reported a fatal error.
        """
        sink = self.sink
        self._consumer = Consumer(
            self._kafka.confluent_config()
            | {
                "group.id": self._settings.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                "max.poll.interval.ms": 600_000,
                "session.timeout.ms": self._settings.session_timeout_ms,
                "heartbeat.interval.ms": max(1, min(3_000, self._settings.session_timeout_ms // 3)),
                "fetch.wait.max.ms": 100,
            }
        )
        try:
            self._consumer.subscribe(list(self._tables), on_assign=self._on_assign, on_revoke=self._on_revoke)
            self.ready.set()
            while not stop.is_set():
                for message in self._consumer.consume(self._batch_size, timeout=self._poll_timeout_s):
                    self._ingest(message)
                if sink.should_flush():
                    self._flush_and_commit()
            self._flush_and_commit()
        finally:
            with contextlib.suppress(Exception):
                self._consumer.close()

    # --- messages -------------------------------------------------------------------------

    def _ingest(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return
            if error.fatal():
                raise SinkConsumerError(f"fatal consumer error: {error}")
            logger.warning("consumer error (retried by the client): %s", error)
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        self.stats.messages += 1
        self._uncommitted[(topic, partition)] = offset + 1
        table, codec = self._tables[topic]
        value = message.value()
        if value is None:
            self._add_dead_letter(message, "tombstone", f"{topic} message without a value")
            return
        try:
            writer, body_offset = codec.split(value)
        except DecodeError as failure:
            self._add_dead_letter(message, failure.kind.value, str(failure))
            return
        self.sink.add(
            SinkRecord(
                table,
                None,
                topic,
                partition,
                offset,
                raw_key=message.key(),
                raw_value=value,
                avro_body=value[body_offset:],
                writer_schema=writer,
            )
        )

    def _add_dead_letter(self, message: Message, kind: str, reason: str) -> None:
        record = dead_letter(
            source_topic=message.topic(),
            source_partition=message.partition(),
            source_offset=message.offset(),
            raw_key=message.key(),
            raw_value=message.value(),
            error_kind=kind,
            error=reason,
            stage="decode",
            now_unix_nano=self._clock(),
        )
        self.stats.dead_letters += 1
        self.sink.add(SinkRecord(DEAD_LETTERS_TABLE, record, message.topic(), message.partition(), message.offset()))

    # --- flush, then commit ---------------------------------------------------------------

    def _flush_and_commit(self) -> None:
        offsets = dict(self._uncommitted)
        if self.sink.pending_rows:
            try:
                rows = self.sink.flush()
            except SinkError as error:
                raise SinkConsumerError(f"flush failed, offsets not committed: {error}") from error
            self.stats.flushes += 1
            self.stats.rows_flushed += rows
            if self._on_flushed is not None:
                self._on_flushed(rows)
        if offsets:
            self._commit(offsets)

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        assert self._consumer is not None
        committed = commit_quietly(
            self._consumer, [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
        )
        if not committed:  # the next commit carries these offsets too
            return
        for key, offset in offsets.items():
            if self._uncommitted.get(key) == offset:
                del self._uncommitted[key]
        self.stats.commits += 1

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.assigned = sorted({*self.stats.assigned, *((tp.topic, tp.partition) for tp in partitions)})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Store and commit what we hold before the partitions move (the new owner starts after it)."""
        try:
            self._flush_and_commit()
        except SinkConsumerError as error:
            logger.warning("flush on revoke failed; the new owner re-reads from the last commit: %s", error)
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self.stats.assigned = [key for key in self.stats.assigned if key not in revoked]
        for key in revoked:
            self._uncommitted.pop(key, None)
