"""The one place that owns the flush policy, retries and dead-lettering for every sink destination.

A destination subclasses :class:`BatchingSink` and implements only ``write(batch)``: store one
:class:`SinkBatch` (one table's rows) or raise a :mod:`sinks.errors` error. Callers ``add`` records
and call ``flush`` at commit time, as in quix-streams: when ``flush`` returns, every record added
before it is stored (or dead-lettered with its reason); when it raises, nothing may be acknowledged
upstream, and the pending records stay pending. When a batch is due is :meth:`BatchingSink.is_due`,
which the sink stage (:mod:`streams.sink`, gathering Kafka messages into batches) asks as well.

Guarantees: at-least-once storage of every added record; records of one table keep their ``add``
order inside a batch; each batch carries a deduplication token derived from the Kafka coordinates it
holds, so a batch re-written after an ambiguous failure does not duplicate (when the destination
honours tokens). Non-guarantee: after a crash the re-read records may be cut into batches
differently, so tokens differ; the destination's replacing key (read with FINAL) makes counts exact.
"""

from __future__ import annotations

import hashlib
import logging
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from schemas.dead_letters import DeadLetterBuilder
from schemas.text import safe_text
from sinks.errors import (
    SinkBackpressureError,
    SinkError,
    SinkRejectedError,
    SinkRetriesExhaustedError,
    SinkRetryableError,
    UnconvertibleRecordError,
)

logger = logging.getLogger(__name__)

DEAD_LETTERS_TABLE = "dead_letters"
_DEFAULT_FLUSH_ROWS = 50_000
_DEFAULT_FLUSH_INTERVAL_MS = 500
_DEFAULT_RETRY_INITIAL_BACKOFF_MS = 100
_DEFAULT_RETRY_MAX_BACKOFF_MS = 5_000
_DEFAULT_RETRY_TIMEOUT_MS = 120_000


class SinkRecord(NamedTuple):
    """One record to store, with where it came from (``partition``/``offset`` -1 when not from Kafka).

    Either ``value`` (a decoded record, Avro field names) or ``avro_body`` (its Avro binary body,
    written with ``writer_schema``) is set; destinations may take the body as is. Immutable; a
    NamedTuple rather than a frozen dataclass because one is built per Kafka message (measured
    ~10x cheaper to construct).
    """

    table: str
    value: Mapping[str, Any] | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    raw_key: bytes | None = None
    raw_value: bytes | None = None
    avro_body: bytes | memoryview | None = None
    writer_schema: Any = None


@dataclass(frozen=True, slots=True)
class SinkBatch:
    """Rows of one table written together, with the deduplication token of exactly these rows."""

    table: str
    items: Sequence[SinkRecord]
    dedup_token: str

    def __len__(self) -> int:
        return len(self.items)


def dedup_token(table: str, items: Sequence[SinkRecord]) -> str:
    """A token naming exactly these records: per topic/partition offset ranges, else a content digest.

    Records all from Kafka give ``table|topic:partition:first-last|...|count|digest`` where the
    digest covers every offset (so a batch with holes differs from a full range). Others get a
    digest of their values.
    """
    offsets_by_partition: dict[tuple[str, int], list[int]] = {}
    from_kafka = bool(items)
    for item in items:
        if item.offset < 0:
            from_kafka = False
            break
        key = (item.topic, item.partition)
        offsets = offsets_by_partition.get(key)
        if offsets is None:
            offsets = offsets_by_partition[key] = []
        offsets.append(item.offset)
    if from_kafka:
        return offsets_token(table, {key: array("q", sorted(offsets)) for key, offsets in offsets_by_partition.items()})
    digest = hashlib.blake2b(
        repr([bytes(item.avro_body or b"") if item.value is None else sorted(item.value.items()) for item in items]).encode(),
        digest_size=16,
    )
    return f"{table}|content|{len(items)}|{digest.hexdigest()}"


def offsets_token(table: str, offsets_by_partition: Mapping[tuple[str, int], array]) -> str:
    """:func:`dedup_token` of Kafka records given by their sorted offsets per (topic, partition)."""
    digest = hashlib.blake2b(digest_size=8)
    parts = []
    count = 0
    for (topic, partition), offsets in sorted(offsets_by_partition.items()):
        parts.append(f"{topic}:{partition}:{offsets[0]}-{offsets[-1]}")
        digest.update(f"{topic}:{partition}:".encode())
        digest.update(offsets.tobytes())
        count += len(offsets)
    return f"{table}|{'|'.join(parts)}|{count}|{digest.hexdigest()}"


class KafkaRows(Sequence[SinkRecord]):
    """Records of one table, all Kafka messages of one topic with one writer schema, kept as the messages.

    The consumer's fast path: no :class:`SinkRecord` is built per message. ``messages`` are
    confluent-kafka ``Message`` objects (anything with ``partition()``, ``offset()``, ``key()``,
    ``value()``) whose values are ``header_len`` bytes of header then an Avro body written with
    ``writer_schema``. Indexing builds the :class:`SinkRecord` (the slow path: a refused batch
    being split to isolate its bad rows); destinations take :meth:`bodies` whole.

    ``runs`` are the (partition, first offset, last offset + 1) of consecutive messages, in
    arrival order, from which :meth:`dedup_token` and the offsets to commit are made without a
    pass over the messages.
    """

    __slots__ = ("header_len", "messages", "runs", "table", "topic", "writer_schema")

    def __init__(
        self,
        table: str,
        topic: str,
        writer_schema: Any,
        header_len: int,
        messages: list[Any],
        runs: Sequence[tuple[int, int, int]],
    ) -> None:
        self.table = table
        self.topic = topic
        self.writer_schema = writer_schema
        self.header_len = header_len
        self.messages = messages
        self.runs = tuple(runs)

    def __len__(self) -> int:
        return len(self.messages)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(self._record(message) for message in self.messages[index])
        return self._record(self.messages[index])

    def __iter__(self) -> Any:
        return map(self._record, self.messages)

    def _record(self, message: Any) -> SinkRecord:
        value = message.value()
        return SinkRecord(
            self.table,
            None,
            self.topic,
            message.partition(),
            message.offset(),
            raw_key=message.key(),
            raw_value=value,
            avro_body=value[self.header_len :],
            writer_schema=self.writer_schema,
        )

    def bodies(self) -> list[bytes]:
        """The Avro bodies, in order."""
        start = self.header_len
        return [message.value()[start:] for message in self.messages]

    def dedup_token(self) -> str:
        """The same token :func:`dedup_token` gives for these records, from the runs alone."""
        by_partition: dict[tuple[str, int], array] = {}
        ordered = True
        for partition, first, end in self.runs:
            offsets = by_partition.get((self.topic, partition))
            if offsets is None:
                offsets = by_partition[(self.topic, partition)] = array("q")
            elif offsets[-1] >= first:
                ordered = False
            offsets.extend(range(first, end))
        if not ordered:
            by_partition = {key: array("q", sorted(offsets)) for key, offsets in by_partition.items()}
        return offsets_token(self.table, by_partition)


@dataclass
class _Pending:
    items: list[SinkRecord] = field(default_factory=list)
    chunks: list[tuple[Sequence[SinkRecord], str | None]] = field(default_factory=list)
    first_added: float | None = None


class BatchingSink:
    """Batches records per table and writes them with retries; subclasses implement :meth:`write`.

    Args:
        flush_rows: :meth:`is_due` turns true when this many records are pending.
        flush_interval_ms: ... or when the oldest pending record waited this long.
        retry_initial_backoff_ms / retry_max_backoff_ms: exponential backoff between attempts.
        retry_timeout_ms: give up (``SinkRetriesExhaustedError``) after retrying this long.
        clock: monotonic seconds (injected for tests); sleep: how to wait (injected for tests).
        now_unix_nano: wall clock for the time stamp of dead letters the sink makes.

    Raises:
        ValueError: a limit is not positive.
    """

    def __init__(
        self,
        *,
        flush_rows: int = _DEFAULT_FLUSH_ROWS,
        flush_interval_ms: int = _DEFAULT_FLUSH_INTERVAL_MS,
        retry_initial_backoff_ms: int = _DEFAULT_RETRY_INITIAL_BACKOFF_MS,
        retry_max_backoff_ms: int = _DEFAULT_RETRY_MAX_BACKOFF_MS,
        retry_timeout_ms: int = _DEFAULT_RETRY_TIMEOUT_MS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now_unix_nano: Callable[[], int] = time.time_ns,
    ) -> None:
        for name, value in (
            ("flush_rows", flush_rows),
            ("flush_interval_ms", flush_interval_ms),
            ("retry_initial_backoff_ms", retry_initial_backoff_ms),
            ("retry_max_backoff_ms", retry_max_backoff_ms),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if retry_timeout_ms < 0:
            raise ValueError(f"retry_timeout_ms must be >= 0, got {retry_timeout_ms}")
        self.flush_rows = flush_rows
        self.flush_interval_ms = flush_interval_ms
        self._initial_backoff_s = retry_initial_backoff_ms / 1000
        self._max_backoff_s = retry_max_backoff_ms / 1000
        self._retry_timeout_s = retry_timeout_ms / 1000
        self._clock = clock
        self._sleep = sleep
        self._now_unix_nano = now_unix_nano
        self._dead_letters = DeadLetterBuilder()
        self._pending: dict[str, _Pending] = {}
        self._pending_rows = 0
        self.rows_written = 0
        self.rows_dead_lettered = 0

    # ---- the destination's one job --------------------------------------------------------

    def write(self, batch: SinkBatch) -> None:
        """Store ``batch`` whole, or raise: ``SinkRetryableError`` (incl. backpressure) to retry,
        ``SinkRejectedError`` when the data itself is refused (the batch is then split to isolate
        the rows to blame), ``UnconvertibleRecordError`` naming the records that cannot be
        converted (they are dead-lettered, the rest retried), any other ``SinkError`` to fail
        the flush."""
        raise NotImplementedError

    # ---- batching ------------------------------------------------------------------------

    def add(self, record: SinkRecord) -> None:
        """Queue ``record`` for the next flush (nothing is written here)."""
        pending = self._pending.setdefault(record.table, _Pending())
        if pending.first_added is None:
            pending.first_added = self._clock()
        pending.items.append(record)
        self._pending_rows += 1

    def add_rows(self, table: str, rows: Sequence[SinkRecord], token: str | None = None) -> None:
        """Queue ``rows`` of ``table`` to be written as a batch of their own, with ``token`` (default:
        :func:`dedup_token` of the rows); e.g. a :class:`KafkaRows` and its :meth:`KafkaRows.dedup_token`."""
        if not rows:
            return
        pending = self._pending.setdefault(table, _Pending())
        if pending.first_added is None:
            pending.first_added = self._clock()
        pending.chunks.append((rows, token))
        self._pending_rows += len(rows)

    def discard_pending(self) -> None:
        """Drop every pending record (after a flush failed for good: their offsets are never committed)."""
        self._pending.clear()
        self._pending_rows = 0

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def is_due(self, rows: int, waited_ms: float) -> bool:
        """The flush policy: a batch of ``rows`` (> 0) whose oldest row waited ``waited_ms`` is due when it
        reaches ``flush_rows`` or waited ``flush_interval_ms``. Callers gathering batches of their own
        (the sink stage, :mod:`streams.sink`) ask this rather than keep thresholds of their own."""
        return rows >= self.flush_rows or waited_ms >= self.flush_interval_ms

    def should_flush(self) -> bool:
        """:meth:`is_due` of the pending rows."""
        if self._pending_rows >= self.flush_rows:
            return True
        oldest = min((p.first_added for p in self._pending.values() if p.first_added is not None), default=None)
        return oldest is not None and self.is_due(self._pending_rows, (self._clock() - oldest) * 1000)

    def flush(self) -> int:
        """Write every pending record (dead letters last, so rejects of this flush join them).

        Returns:
            The number of records flushed (stored or dead-lettered).

        Raises:
            SinkError: a batch could not be stored; it and the tables not yet written stay
                pending (a later flush retries them, with the same tokens).
        """
        flushed = 0
        tables = sorted(self._pending, key=lambda name: name == DEAD_LETTERS_TABLE)
        for table in tables:
            pending = self._pending.get(table)
            if pending is None:
                continue
            while pending.chunks:  # each chunk its own batch; written ones leave, a failing one stays
                rows, token = pending.chunks[0]
                rejected = self._write_isolating(SinkBatch(table, rows, token or dedup_token(table, rows)))
                pending.chunks.pop(0)
                self._pending_rows -= len(rows)
                flushed += len(rows)
                self._dead_letter_rejected(table, rejected)
            if pending.items:
                items = tuple(pending.items)
                rejected = self._write_isolating(SinkBatch(table, items, dedup_token(table, items)))
                pending.items.clear()
                self._pending_rows -= len(items)
                flushed += len(items)
                self._dead_letter_rejected(table, rejected)
            if self._pending.get(table) is pending and not pending.items and not pending.chunks:
                self._pending.pop(table)
        dead = self._pending.get(DEAD_LETTERS_TABLE)
        if dead is not None and (dead.items or dead.chunks):
            flushed += self.flush()
        return flushed

    def _dead_letter_rejected(self, table: str, rejected: list[tuple[SinkRecord | None, str]]) -> None:
        """Add the dead letters of rows a write refused; a refused dead letter this sink made (None) fails the flush."""
        if not rejected:
            return
        self.rows_dead_lettered += len(rejected)
        unstorable = [reason for letter, reason in rejected if letter is None]
        if unstorable:
            raise SinkRejectedError(f"dead_letters refused {len(unstorable)} rows: {safe_text(unstorable[0], 500)}")
        for letter, _reason in rejected:
            self.add(letter)

    # ---- rejects and retries -------------------------------------------------------------

    def _write_isolating(self, batch: SinkBatch) -> list[tuple[SinkRecord | None, str]]:
        """Write ``batch``; rows refused or unconvertible come back as dead-letter records."""
        dead: list[tuple[SinkRecord | None, str]] = []
        work = [batch]
        while work:
            current = work.pop()
            if not current.items:
                continue
            try:
                self._write_with_retries(current)
                self.rows_written += len(current)
            except UnconvertibleRecordError as error:
                if not error.reasons or not all(0 <= index < len(current.items) for index in error.reasons):
                    raise
                for index, reason in error.reasons.items():
                    dead.append((self._dead_letter(current.items[index], error.error_kind, reason), reason))
                rest = tuple(item for index, item in enumerate(current.items) if index not in error.reasons)
                work.append(SinkBatch(current.table, rest, dedup_token(current.table, rest)))
            except SinkRejectedError as error:
                if len(current.items) == 1:
                    dead.append((self._dead_letter(current.items[0], "rejected_by_sink", str(error)), str(error)))
                    continue
                middle = len(current.items) // 2
                for half in (current.items[middle:], current.items[:middle]):
                    work.append(SinkBatch(current.table, half, dedup_token(current.table, half)))
        return dead

    def _dead_letter(self, item: SinkRecord, kind: str, reason: str) -> SinkRecord | None:
        """The dead letter of a refused row (a message of the dead-letter topic too); None for a refused dead
        letter this sink built itself, which nothing can store."""
        if item.table == DEAD_LETTERS_TABLE and item.value is not None:
            return None
        raw_value = item.raw_value
        if raw_value is None:
            raw_value = bytes(item.avro_body or b"") if item.value is None else repr(dict(item.value)).encode()
        record = self._dead_letters.record(
            source_topic=item.topic or item.table,
            source_partition=item.partition,
            source_offset=item.offset,
            raw_key=item.raw_key,
            raw_value=raw_value,
            error_kind=kind,
            error=f"{item.table}: {reason}",
            stage="sink",
            now_unix_nano=self._now_unix_nano(),
        )
        logger.warning("dead-lettering a %s row (%s): %s", item.table, kind, safe_text(reason, 300))
        return SinkRecord(DEAD_LETTERS_TABLE, record, item.topic, item.partition, item.offset, item.raw_key, raw_value)

    def _write_with_retries(self, batch: SinkBatch) -> None:
        """``write`` with exponential backoff on retryable errors, up to ``retry_timeout_ms``.

        A retry after an unknown outcome (timeout, lost connection) keeps the batch's token, so an
        insert that did land is not stored twice. A retry after the server answered that the
        insert failed gets a fresh token: ClickHouse can fail a block in a dependent view after
        the first table's part and its token were recorded and then dropped, and the same token
        would then skip the block for good (seen with a full disk: a whole batch lost). The fresh
        token may store rows twice that the replacing keys collapse (exact with FINAL); it never
        loses any.
        """
        deadline = self._clock() + self._retry_timeout_s
        backoff = self._initial_backoff_s
        attempt = 0
        original_token = batch.dedup_token
        while True:
            attempt += 1
            try:
                self.write(batch)
                return
            except SinkRetryableError as error:
                if error.server_failed:
                    batch = SinkBatch(batch.table, batch.items, f"{original_token}~retry{attempt}")
                wait = error.retry_after if isinstance(error, SinkBackpressureError) else backoff
                if self._clock() + wait > deadline:
                    raise SinkRetriesExhaustedError(
                        f"{batch.table}: {attempt} attempts failed over {self._retry_timeout_s:.0f} s: {error}"
                    ) from error
                logger.warning(
                    "%s write attempt %d failed (%s); retrying in %.2f s", batch.table, attempt, safe_text(error, 500), wait
                )
                self._sleep(wait)
                backoff = min(backoff * 2, self._max_backoff_s)
            except SinkError:
                raise
