"""The Kafka edge of the ClickHouse sink: read the four output topics, land them, commit after the flush.

Reads ``spans.enriched``, ``reloads``, ``reload.anomalies`` and ``dead-letter`` in one consumer
group and hands each message's Avro body, undecoded, to :class:`~sinks.clickhouse.ClickHouseSink`
(ClickHouse decodes it). Only the message header (magic + writer schema) is checked in Python,
once per distinct header (a cache of headers known good).

Flushes overlap consumption: when a batch is due it is sealed and handed to one of
``SinkSettings.writers`` writer threads, each with a sink (and client) of its own, and the
consumer keeps reading into the next batch. At most ``writers`` flushes are in flight; a
consumer that has that many waits for the oldest (backpressure).

Guarantees:
    * No loss: offsets are committed only after the flush holding their records returned, and in
      the order the batches were sealed: a later flush that finishes first waits for the earlier
      ones, so the committed position never passes a record not yet stored. A crash (even
      between the insert and the commit) re-reads and re-inserts, never skips.
    * Exact counts under FINAL: a re-inserted batch with the same rows is dropped by its
      deduplication token; rows re-read into differently cut batches collapse by the tables'
      replacing keys (see :mod:`sinks.clickhouse`).
    * Nothing silently dropped: a message whose header does not decode, a tombstone, or a row
      ClickHouse refuses becomes a ``dead_letters`` row with topic, partition, offset and bytes. A
      reload the contract refuses is dead-lettered as the enricher does it (same stage and kind: the
      two letters of one message are one row under FINAL), never landed in ``reload_events``.
    * On revoke and on stop every flush in flight is waited for, then committed.

Non-guarantees: no ordering across partitions, nor across batches in flight at once (two
corrections of one span in two such batches may land in either order: the tables' replacing
keys still keep the highest revision); raw (non-FINAL) counts may exceed the truth after a
crash until background merges run. On a flush that keeps failing (retries exhausted, fatal
error) ``run`` raises :class:`SinkConsumerError`; neither it nor any batch sealed after it is
committed.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from schemas.errors import DecodeError, InvalidRecordError
from schemas.records import ReloadEvent
from schemas.dead_letters import DeadLetterBuilder
from schemas.settings import KafkaSettings
from schemas.topics import TopicNames
from sinks.avro_blocks import TABLE_RECORDS
from sinks.base import DEAD_LETTERS_TABLE, KafkaRows, SinkRecord
from sinks.clickhouse import ClickHouseSink
from sinks.errors import SinkError
from sinks.settings import SinkSettings
from streams.kafka_io import commit_quietly, group_consumer_config

logger = logging.getLogger(__name__)

_DEFAULT_BATCH_SIZE = 10_000
_DEFAULT_POLL_TIMEOUT_MS = 100


def source_tables(topics: TopicNames) -> dict[str, str]:
    """Topic -> table of everything the sink lands (the topics its consumer group reads)."""
    return {
        topics.spans_enriched: "spans_enriched",
        topics.reloads: "reload_events",
        topics.reload_anomalies: "anomalies",
        topics.dead_letter: DEAD_LETTERS_TABLE,
    }


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
    in_flight: int = 0
    assigned: list[tuple[str, int]] = field(default_factory=list)


class _Rows:
    """Messages of one topic and one writer header in the open batch, and their offset runs."""

    __slots__ = ("first", "messages", "next_offset", "partition", "runs", "writer")

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.messages: list[Message] = []
        self.runs: list[tuple[int, int, int]] = []
        self.partition = -1
        self.first = -1
        self.next_offset = -1

    def new_run(self, partition: int, offset: int) -> None:
        if self.partition >= 0:
            self.runs.append((self.partition, self.first, self.next_offset))
        self.partition, self.first, self.next_offset = partition, offset, offset + 1

    def all_runs(self) -> list[tuple[int, int, int]]:
        return [*self.runs, (self.partition, self.first, self.next_offset)] if self.partition >= 0 else self.runs


class _OpenBatch:
    """What the consumer has read since the last seal: message groups, dead letters, positions."""

    __slots__ = ("groups", "opened", "positions", "records", "rows")

    def __init__(self, topics: list[str], opened: float) -> None:
        self.groups: dict[str, dict[bytes, _Rows]] = {topic: {} for topic in topics}
        self.records: list[SinkRecord] = []  # dead letters made by the consumer (decode failures)
        self.positions: dict[tuple[str, int], int] = {}  # of messages outside the groups
        self.rows = 0
        self.opened = opened


@dataclass
class _Sealed:
    """A batch handed to a writer: what to write and, once written, what to commit."""

    chunks: list[tuple[str, KafkaRows]]
    records: list[SinkRecord]
    positions: dict[tuple[str, int], int]
    rows: int
    future: Future[int] | None = None


class SinkConsumer:
    """Blocking consume → batch → flush (in writer threads) → commit loop; run it in a thread (``run(stop)``).

    chDB allows one process per data directory: run this inside the process that owns the
    embedded engine (e.g. as a thread of the worker), not beside it. The writers' clients are
    further clients of the same engine (or server).

    Args:
        kafka: broker, topic names and framing.
        settings: sink URL, batching, writers and retry limits, consumer group.
        sink: an open sink to use (default: one opened from ``settings``); it is also the first
            writer's, the others open their own clients from ``settings`` (``writers``).
        on_flushed: called in the consumer's thread with the number of rows of each successful
            flush, in seal order, BEFORE its offsets are committed (a seam for metrics and for
            crash tests).
        wall_clock_ns: time stamp of the dead letters this consumer makes.
        clock: monotonic seconds, for the age of the open batch.
        consumer_factory: makes the Kafka consumer from its config (a seam for tests).
        writer_factory: opens the sink of each writer after the first (default: a
            :class:`ClickHouseSink` from ``settings`` on a client of its own, DDL not re-applied).
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
        clock: Callable[[], float] = time.monotonic,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        writer_factory: Callable[[], ClickHouseSink] | None = None,
    ) -> None:
        self._consumer_factory = consumer_factory
        self._writer_factory = writer_factory or (lambda: ClickHouseSink(self._settings, apply_ddl=False))
        self._kafka = kafka
        self._settings = settings or SinkSettings()
        self._sink = sink
        self._on_flushed = on_flushed
        self._clock = wall_clock_ns
        self._monotonic = clock
        self._batch_size = batch_size
        self._poll_timeout_s = poll_timeout_ms / 1000
        self._tables = {
            topic: (table, kafka.codec(TABLE_RECORDS[table])) for topic, table in source_tables(kafka.topics).items()
        }
        self._header_len: dict[str, int] = {topic: 0 for topic in self._tables}  # learnt from the first split
        self._known_headers: dict[str, dict[bytes, Any]] = {topic: {} for topic in self._tables}
        self._dead_letters = DeadLetterBuilder()
        self._reload_codec = kafka.codec("ReloadEvent")
        self._open: _OpenBatch | None = None
        self._in_flight: deque[_Sealed] = deque()
        self._to_commit: dict[tuple[str, int], int] = {}
        self._failure: SinkConsumerError | None = None
        self._writers: queue.SimpleQueue[ClickHouseSink] = queue.SimpleQueue()
        self._writer_sinks: list[ClickHouseSink] = []
        self._pool: ThreadPoolExecutor | None = None
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
        config = self._kafka.confluent_config() | group_consumer_config(
            self._settings.group_id, self._settings.session_timeout_ms
        )
        self._failure = None
        try:
            self._open_writers(sink)
            self._consumer = self._consumer_factory(config)
            self._consumer.subscribe(list(self._tables), on_assign=self._on_assign, on_revoke=self._on_revoke)
            self.ready.set()
            while not stop.is_set():
                self._ingest_all(self._consumer.consume(self._batch_size, timeout=self._poll_timeout_s))
                self._raise_failure()
                if self._due():
                    self._seal_and_submit()
                self._complete_done()
            self._drain()
        finally:
            self._close_writers()  # waits for flushes still in flight (uncommitted after a failure)
            if self._consumer is not None:
                with contextlib.suppress(Exception):
                    self._consumer.close()

    # --- messages -------------------------------------------------------------------------

    def _ingest_all(self, messages: list[Message]) -> None:
        """The hot path: per message one header look-up and an append; anything unusual goes slow."""
        if not messages:
            return
        batch = self._open
        if batch is None:
            batch = self._open = _OpenBatch(list(self._tables), self._monotonic())
        groups_by_topic = batch.groups
        header_len = self._header_len
        reloads_topic = self._kafka.topics.reloads
        fast = 0
        for message in messages:
            if message.error() is not None:
                self._message_error(message)
                continue
            topic = message.topic()
            value = message.value()
            if topic == reloads_topic and self._reload_refused(batch, message, value):
                continue
            rows = groups_by_topic[topic].get(value[: header_len[topic]]) if value is not None else None
            if rows is None:
                self._ingest_slow(batch, message, topic, value)
                continue
            rows.messages.append(message)
            partition = message.partition()
            offset = message.offset()
            if partition == rows.partition and offset == rows.next_offset:
                rows.next_offset = offset + 1
            else:
                rows.new_run(partition, offset)
            fast += 1
        batch.rows += fast
        self.stats.messages += fast

    def _message_error(self, message: Message) -> None:
        error = message.error()
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise SinkConsumerError(f"fatal consumer error: {error}")
        logger.warning("consumer error (retried by the client): %s", error)

    def _ingest_slow(self, batch: _OpenBatch, message: Message, topic: str, value: bytes | None) -> None:
        """A header not seen yet (checked by the codec, then known), a tombstone or an undecodable message."""
        partition, offset = message.partition(), message.offset()
        self.stats.messages += 1
        batch.rows += 1
        if value is None:
            batch.positions[(topic, partition)] = offset + 1
            self._add_dead_letter(batch, message, "tombstone", f"{topic} message without a value")
            return
        known = self._known_headers[topic]
        writer = known.get(value[: self._header_len[topic]]) if self._header_len[topic] else None
        if writer is None:
            try:
                writer, body_offset = self._tables[topic][1].split(value)
            except DecodeError as failure:
                batch.positions[(topic, partition)] = offset + 1
                self._add_dead_letter(batch, message, failure.kind.value, str(failure))
                return
            self._header_len[topic] = body_offset
            known[bytes(value[:body_offset])] = writer
        header = bytes(value[: self._header_len[topic]])
        rows = batch.groups[topic].get(header)
        if rows is None:
            rows = batch.groups[topic][header] = _Rows(writer)
        rows.messages.append(message)
        if partition == rows.partition and offset == rows.next_offset:
            rows.next_offset = offset + 1
        else:
            rows.new_run(partition, offset)

    def _reload_refused(self, batch: _OpenBatch, message: Message, value: bytes | None) -> bool:
        """Dead-letter a reload the contract refuses, judged as the enricher judges it (same stage and kind,
        so the two dead letters of one message collapse into one ``dead_letters`` row); True when refused."""
        try:
            if value is None:
                raise InvalidRecordError("empty message (tombstone)")
            ReloadEvent.from_dict(self._reload_codec.decode(value))
        except DecodeError as error:
            kind, stage, reason = error.kind.value, "decode", str(error)
        except InvalidRecordError as error:
            kind, stage, reason = "invalid_record", "validate", str(error)
        else:
            return False
        self.stats.messages += 1
        batch.rows += 1
        batch.positions[(message.topic(), message.partition())] = message.offset() + 1
        self._add_dead_letter(batch, message, kind, reason, stage=stage)
        return True

    def _add_dead_letter(self, batch: _OpenBatch, message: Message, kind: str, reason: str, *, stage: str = "decode") -> None:
        record = self._dead_letters.record(
            source_topic=message.topic(),
            source_partition=message.partition(),
            source_offset=message.offset(),
            raw_key=message.key(),
            raw_value=message.value(),
            error_kind=kind,
            error=reason,
            stage=stage,
            now_unix_nano=self._clock(),
        )
        self.stats.dead_letters += 1
        batch.records.append(SinkRecord(DEAD_LETTERS_TABLE, record, message.topic(), message.partition(), message.offset()))

    # --- seal, write in a writer thread, commit in seal order ------------------------------

    def _due(self) -> bool:
        batch = self._open
        if batch is None or not batch.rows:
            return False
        return (
            batch.rows >= self.sink.flush_rows
            or (self._monotonic() - batch.opened) * 1000 >= self.sink.flush_interval_ms
        )

    def _seal_and_submit(self) -> None:
        """Hand the open batch to a writer (waiting for the oldest flush when all writers are busy)."""
        batch, self._open = self._open, None
        if batch is None or not batch.rows:
            return
        positions = dict(batch.positions)
        chunks = []
        for topic, groups in batch.groups.items():
            table = self._tables[topic][0]
            for header, rows in groups.items():
                runs = rows.all_runs()
                for partition, _first, end in runs:
                    if positions.get((topic, partition), -1) < end:
                        positions[(topic, partition)] = end
                chunks.append((table, KafkaRows(table, topic, rows.writer, len(header), rows.messages, runs)))
        sealed = _Sealed(chunks, batch.records, positions, batch.rows)
        while len(self._in_flight) >= self._settings.writers:
            self._complete_oldest()
        assert self._pool is not None
        sealed.future = self._pool.submit(self._write, sealed)
        self._in_flight.append(sealed)
        self.stats.in_flight = len(self._in_flight)

    def _write(self, sealed: _Sealed) -> int:
        """In a writer thread, on a sink no other thread writes with: store the whole batch or raise."""
        sink = self._writers.get()
        try:
            for table, rows in sealed.chunks:
                sink.add_rows(table, rows, rows.dedup_token())
            for record in sealed.records:
                sink.add(record)
            return sink.flush()
        except BaseException:
            sink.discard_pending()  # the next batch on this writer must not retry (nor carry) these
            raise
        finally:
            self._writers.put(sink)

    def _complete_done(self) -> None:
        while self._in_flight and self._in_flight[0].future is not None and self._in_flight[0].future.done():
            self._complete_oldest()

    def _complete_oldest(self) -> None:
        """Wait for the oldest flush in flight; commit its offsets, or stop everything after a failure."""
        sealed = self._in_flight[0]
        assert sealed.future is not None
        try:
            rows = sealed.future.result()
        except SinkError as error:
            self._fail(SinkConsumerError(f"flush failed, offsets not committed: {error}"), error)
        except Exception as error:  # noqa: BLE001 - a bug in a writer must stop the consumer, not vanish
            self._fail(SinkConsumerError(f"flush failed unexpectedly, offsets not committed: {error!r}"), error)
        self._in_flight.popleft()
        self.stats.in_flight = len(self._in_flight)
        self.stats.flushes += 1
        self.stats.rows_flushed += rows
        if self._on_flushed is not None:
            self._on_flushed(rows)
        self._to_commit.update(sealed.positions)
        self._commit()

    def _fail(self, failure: SinkConsumerError, cause: BaseException) -> None:
        """Nothing from the failed batch or any later one is committed: drop them, remember, raise."""
        failure.__cause__ = cause
        self._in_flight.clear()
        self.stats.in_flight = 0
        self._open = None
        self._to_commit.clear()
        self._failure = failure
        raise failure

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _drain(self) -> None:
        """Seal what is open, wait for every flush in flight and commit each, in order."""
        self._raise_failure()
        self._seal_and_submit()
        while self._in_flight:
            self._complete_oldest()
        if self._to_commit:
            self._commit()

    def _commit(self) -> None:
        assert self._consumer is not None
        offsets = dict(self._to_commit)
        committed = commit_quietly(
            self._consumer, [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
        )
        if not committed:  # the next commit carries these offsets too
            return
        for key, offset in offsets.items():
            if self._to_commit.get(key) == offset:
                del self._to_commit[key]
        self.stats.commits += 1

    # --- writers --------------------------------------------------------------------------

    def _open_writers(self, sink: ClickHouseSink) -> None:
        """The first writer writes with ``sink``; the others with sinks of their own (own clients)."""
        self._writer_sinks = [sink]
        self._writers = queue.SimpleQueue()
        self._writers.put(sink)
        for _ in range(self._settings.writers - 1):
            extra = self._writer_factory()
            self._writer_sinks.append(extra)
            self._writers.put(extra)
        self._pool = ThreadPoolExecutor(self._settings.writers, thread_name_prefix="sink-writer")

    def _close_writers(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # a flush in flight finishes (uncommitted) before clients close
            self._pool = None
        for extra in self._writer_sinks[1:]:
            with contextlib.suppress(Exception):
                extra.close()
        self._writer_sinks = []

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.assigned = sorted({*self.stats.assigned, *((tp.topic, tp.partition) for tp in partitions)})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Store and commit what we hold before the partitions move (the new owner starts after it).

        A flush failing here is remembered and raised by ``run`` (the rebalance callback must
        return): nothing of it or after it is committed, the new owner re-reads from the last commit.
        """
        if self._failure is None:
            try:
                self._drain()
            except SinkConsumerError as error:
                logger.warning("flush on revoke failed; the new owner re-reads from the last commit: %s", error)
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self.stats.assigned = [key for key in self.stats.assigned if key not in revoked]
        for key in revoked:
            self._to_commit.pop(key, None)
