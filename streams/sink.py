"""The sink stage: the output topics in, ClickHouse rows out, offsets committed after the flush that holds them.

Avro bodies go undecoded to :class:`~sinks.clickhouse.ClickHouseSink` (Python checks each distinct
header once). A due batch is sealed and written by one of ``SinkSettings.writers`` writer threads
while consumption goes on. The stage runs on :class:`streams.stage.StageRuntime`: in a child process
of the worker by default (:mod:`streams.components`), in a worker thread when ``component_processes``
is off, or alone as ``reloadtrace sink``.

Guarantees: offsets become committable only after the flush holding their records returned, in seal
order, so a crash re-inserts and never skips; re-inserted batches are dropped by their deduplication
token, rows re-read into other batches collapse by the replacing keys (exact counts with FINAL);
undecodable messages, tombstones, rows ClickHouse refuses and reloads the contract refuses (judged as
the enricher does) become ``dead_letters`` rows; revoke and stop wait for every flush in flight. A
flush that keeps failing raises :class:`SinkConsumerError`; nothing of it or after it is committed.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from schemas.dead_letters import DeadLetterBuilder
from schemas.errors import DecodeError, InvalidRecordError
from schemas.records import ReloadEvent
from schemas.settings import KafkaSettings
from schemas.topics import TopicNames
from sinks.avro_blocks import TABLE_RECORDS
from sinks.base import DEAD_LETTERS_TABLE, KafkaRows, SinkRecord
from sinks.clickhouse import ClickHouseSink
from sinks.errors import SinkError
from sinks.settings import SinkSettings
from streams.stage import Committed, Outbox, Position, RuntimeSettings, Stage, StageRuntime

logger = logging.getLogger(__name__)

_DEFAULT_BATCH_SIZE = 10_000
_DEFAULT_POLL_TIMEOUT_MS = 100
_COMMIT_INTERVAL_MS = 200


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


class SinkConsumer(Stage):
    """Batches the output topics into ClickHouse (a stage on :class:`streams.stage.StageRuntime`).

    chDB allows one process per data directory: run it inside the process that owns the embedded
    engine. The writers' clients are further clients of the same engine (or server).

    Args:
        kafka: broker, topic names and framing.
        settings: sink URL, batching, writers and retry limits, consumer group.
        sink: an open sink to use (default: one opened from ``settings``); it is also the first
            writer's, the others open their own clients from ``settings`` (``writers``).
        on_flushed: called in the consumer's thread with the number of rows of each successful
            flush, in seal order, before its offsets are committed (a seam for metrics and tests).
        wall_clock_ns: time stamp of the dead letters this stage makes.
        clock: monotonic seconds, for the age of the open batch.
        writer_factory: opens the sink of each writer after the first (default: a
            :class:`ClickHouseSink` from ``settings`` on a client of its own, DDL not re-applied).
    """

    name = "sink"

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: SinkSettings | None = None,
        *,
        sink: ClickHouseSink | None = None,
        on_flushed: Callable[[int], None] | None = None,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        clock: Callable[[], float] = time.monotonic,
        writer_factory: Callable[[], ClickHouseSink] | None = None,
    ) -> None:
        self._writer_factory = writer_factory or (lambda: ClickHouseSink(self._settings, apply_ddl=False))
        self._kafka = kafka
        self._settings = settings or SinkSettings()
        self._sink = sink
        self._on_flushed = on_flushed
        self._clock = wall_clock_ns
        self._monotonic = clock
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
        self._flushed_since_commit = False
        """A flush completed since the last snapshot: commit before completing the next (one flush, one commit)."""
        self._failure: SinkConsumerError | None = None
        self._writers: queue.SimpleQueue[ClickHouseSink] = queue.SimpleQueue()
        self._writer_sinks: list[ClickHouseSink] = []
        self._pool: ThreadPoolExecutor | None = None
        self.stats = SinkConsumerStats()

    @property
    def sink(self) -> ClickHouseSink:
        """The sink (opened from the settings on first use; it stays open after the runtime stops)."""
        if self._sink is None:
            self._sink = ClickHouseSink(self._settings)
        return self._sink

    def close(self) -> None:
        """Wait for flushes in flight (uncommitted after a failure) and close every writer's client."""
        self._close_writers()

    def close_sink(self) -> None:
        """Close the sink's own client (releases a chDB data directory); pending rows are not flushed."""
        if self._sink is not None:
            self._sink.close()

    def topics(self) -> Sequence[str]:
        return list(self._tables)

    def start(self, runtime: StageRuntime) -> None:
        self._failure = None
        self._open_writers(self.sink)

    def ingest(self, messages: Sequence[Message], arrivals: Sequence[int] | None, outbox: Outbox) -> None:
        self._ingest_all(messages)

    def advance(self, outbox: Outbox) -> None:
        self._raise_failure()
        if self._flushed_since_commit:
            return  # the runtime commits that flush first
        if self._due():
            self._seal_and_submit()
        self._complete_done()

    def prepare_commit(self, outbox: Outbox, *, draining: bool) -> None:
        if draining:
            self._drain()
        else:
            self._complete_done()

    def commit_requested(self) -> bool:
        return self._flushed_since_commit

    def snapshot(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Position]:
        self._flushed_since_commit = False
        return {key: Position(self._to_commit[key]) for key in partitions if key in self._to_commit}

    def assigned(self, partitions: Sequence[Committed]) -> dict[tuple[str, int], Any]:
        self.stats.assigned = sorted({*self.stats.assigned, *((entry.topic, entry.partition) for entry in partitions)})
        return {}

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        revoked = set(partitions)
        self.stats.assigned = [key for key in self.stats.assigned if key not in revoked]
        for key in revoked:
            self._to_commit.pop(key, None)

    # --- messages -------------------------------------------------------------------------

    def _ingest_all(self, messages: Sequence[Message]) -> None:
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
        return self.sink.is_due(batch.rows, (self._monotonic() - batch.opened) * 1000)

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
        """Complete the oldest flush if it is done (one per commit: its offsets are committed before the next's)."""
        if self._flushed_since_commit:
            return
        if self._in_flight and self._in_flight[0].future is not None and self._in_flight[0].future.done():
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
        self._flushed_since_commit = True
        self.stats.in_flight = len(self._in_flight)
        self.stats.flushes += 1
        self.stats.rows_flushed += rows
        if self._on_flushed is not None:
            self._on_flushed(rows)
        self._to_commit.update(sealed.positions)

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


def sink_runtime(
    kafka: KafkaSettings,
    settings: SinkSettings | None = None,
    *,
    batch_size: int = _DEFAULT_BATCH_SIZE,
    poll_timeout_ms: int = _DEFAULT_POLL_TIMEOUT_MS,
    **options: Any,
) -> StageRuntime:
    """The sink on its runtime; ``options`` go to :class:`SinkConsumer` and, for the test seams
    ``consumer_factory`` / ``producer_factory``, to :class:`StageRuntime`."""
    settings = settings or SinkSettings()
    runtime_options = {name: options.pop(name) for name in ("consumer_factory", "producer_factory", "message_limit") if name in options}
    stage = SinkConsumer(kafka, settings, **options)
    return StageRuntime(
        kafka,
        stage,
        RuntimeSettings(
            group_id=settings.group_id,
            session_timeout_ms=settings.session_timeout_ms,
            batch_size=batch_size,
            poll_timeout_ms=poll_timeout_ms,
            commit_interval_ms=_COMMIT_INTERVAL_MS,
            create_topics=False,
        ),
        **runtime_options,
    )
