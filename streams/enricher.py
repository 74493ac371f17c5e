"""The enricher stage: spans (Avro or OTLP) and reloads in, enriched spans and the detector's request feed out.

Guarantees (on :class:`streams.stage.StageRuntime`):
    * At least once and deterministic: the engine orders spans and reloads by broker arrival time
      (:mod:`streams.engine`), so a restarted or rebalanced worker publishes what one that never
      stopped would have. A commit carries the arrival position of the last reload applied; a new
      owner rebuilds a partition from the correction-horizon window before its committed offset only.
    * The request feed (:mod:`streams.request_feed`) carries per span partition an event-time
      watermark covering every request and reload sent before it, provided spans respect
      ``max_lateness_ms`` (:class:`streams.settings.WorkerSettings`).
    * Undecodable or invalid messages (or spans of an OTLP message) are dead-lettered and committed;
      OTLP reload spans become ReloadEvents on the reloads topic.

Non-guarantee: enriched records are not published in offset order (a held span waits its grace).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from schemas.codec import ProjectedDecoder
from schemas.errors import DecodeError, InvalidRecordError, ReloadtraceError
from schemas.kafka_io import MessageView
from schemas.otlp import INVALID_SPAN, OtlpSpans, decode_otlp
from schemas.records import ReloadEvent, check_time_plausible, validate_span
from schemas.settings import KafkaSettings
from schemas.text import bounded_repr
from streams.engine import (
    NEVER,
    ArrivalPosition,
    Emission,
    EnrichmentEngine,
    ReloadArrival,
    SpanArrival,
    Timeline,
    restore_partition,
)
from streams.enriched_wire import EnrichedEncoder
from streams.enrichment import CachedAnswer, SegmentCache
from streams.progress import overall_progress
from streams.request_feed import RequestRow, encode_reload, encode_requests, encode_watermarks
from streams.settings import WorkerSettings
from streams.stage import (
    Committed,
    MessageTooLarge,
    Outbox,
    Position,
    RestorePlan,
    RuntimeSettings,
    Stage,
    StageRuntime,
)

logger = logging.getLogger(__name__)

_NANOS_PER_MS = 1_000_000
SPAN_FIELDS_ENRICHMENT_READS = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "service_name", "service_instance_id",
    "start_time_unix_nano", "end_time_unix_nano", "status_code", "status_message",
)
"""Every span field but the attribute maps: what validation, enrichment and detection look at."""
_PREFETCH_KBYTES = 16_384
"""librdkafka's read-ahead of the spans topic (default 64 MB): the enricher asks for 5,000 messages at a time."""
_PRODUCER_QUEUE_KBYTES = 65_536
"""Bound of the producer's queue (default 1 GB); a full queue makes the enricher wait."""
_APPLIED_POSITION_KEY = "frontier"
"""Commit-state key of the engine's applied position (the name earlier versions wrote and still read)."""


AVRO = "avro"


class EnricherError(ReloadtraceError):
    """The enricher cannot go on safely."""


class _SpanRefused(ReloadtraceError):
    """One span of an OTLP message refused (its dead letter's kind is the decoder's)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.dead_letter_kind = kind


@dataclass(slots=True)
class SpanMessage:
    """What the enricher keeps of a span message: its bytes, and what the detector needs.

    ``key`` and ``value`` are dropped (None) once the span is answered when ``refetch_corrections``
    is on: a correction then re-reads the message from the spans topic by partition and offset.
    """

    key: bytes | None
    value: bytes | None
    kind: str
    is_error: bool


@dataclass
class EnricherStats:
    spans_consumed: int = 0
    reloads_consumed: int = 0
    dead_letters: int = 0
    published: int = 0
    too_large: int = 0
    """Spans whose enriched record would not fit the enriched topic (dead-lettered instead)."""
    restored_partitions: int = 0
    refetches: int = 0
    """Reads of the spans topic for corrections of spans whose bytes were dropped."""
    unfetchable: int = 0
    """Corrections not published because the span's message is gone from the topic (retention)."""
    unsent_requests: int = 0
    """First answers too large for the request feed (names of hundreds of kB): the detector never sees them."""
    unsent_reloads: int = 0
    otlp_messages: int = 0
    derived_reloads: int = 0
    """ReloadEvents derived from OTLP reload spans and published to the reloads topic."""
    late_requests: int = 0
    """Requests sent to the detector after a watermark that should have covered them (``max_lateness_ms`` broken)."""


@dataclass
class _Restore:
    committed: Committed
    previous_applied_position: ArrivalPosition | None
    emitted: list[SpanArrival] = field(default_factory=list)
    unemitted: list[SpanArrival] = field(default_factory=list)


@dataclass(slots=True)
class _Watermark:
    max_emitted_start: int = NEVER
    """The latest start of a span of the partition whose first answer was sent."""
    published: int = NEVER


def runtime_settings(settings: WorkerSettings) -> RuntimeSettings:
    """How the enricher's runtime drives Kafka."""
    return RuntimeSettings(
        group_id=settings.group_id,
        session_timeout_ms=settings.session_timeout_ms,
        batch_size=settings.batch_size,
        poll_timeout_ms=settings.poll_timeout_ms,
        commit_interval_ms=settings.commit_interval_ms,
        high_watermark_interval_ms=settings.watermark_interval_ms,
        consumer_config={"queued.max.messages.kbytes": _PREFETCH_KBYTES},
        producer_config={"queue.buffering.max.messages": 500_000, "queue.buffering.max.kbytes": _PRODUCER_QUEUE_KBYTES},
    )


class SpanEnricher(Stage):
    """Enrichment for the span partitions this worker is assigned.

    Args:
        kafka: broker, topics and framing.
        settings: grace period, horizon, lateness bound, limits.
        timeline_factory: builds an empty version timeline.
        wall_clock_ns: the clock of restore windows.
    """

    name = "enricher"
    tracks_arrival = True

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: WorkerSettings,
        *,
        timeline_factory: Callable[[], Timeline],
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._kafka = kafka
        self._settings = settings
        self._topics = kafka.topics
        self._timeline_factory = timeline_factory
        self._clock = wall_clock_ns
        self._span_codec = kafka.codec("Span")
        # The enricher never reads attributes: skip building them (most of a span's decoding cost).
        self._span_decoder = ProjectedDecoder(self._span_codec, SPAN_FIELDS_ENRICHMENT_READS)
        self._reload_codec = kafka.codec("ReloadEvent")
        self._encoder = EnrichedEncoder(self._span_codec, kafka.codec("EnrichedSpan"))
        # An engine answer is a CachedAnswer: the Enrichment and its encoded form, computed once per segment pair.
        self._answers = SegmentCache(derive=self._encoder.encoded_enrichment)
        self.engine = EnrichmentEngine(
            timeline_factory(), self._answers.lookup, grace_ms=settings.grace_period_ms, horizon_ms=settings.correction_horizon_ms
        )
        self.stats = EnricherStats()
        self._reloads: dict[ArrivalPosition, ReloadArrival] = {}
        self._runtime: StageRuntime | None = None
        self._assigned_once = False
        self._restores: dict[int, _Restore] = {}
        self._watermarks: dict[int, _Watermark] = {}
        self._pending_requests: dict[str, list[RequestRow]] = {}
        self._last_watermark_publish = -float("inf")
        self._lateness_ns = settings.max_lateness_ms * _NANOS_PER_MS
        self._encodings = {self._topics.spans: settings.spans_encoding}
        if settings.otlp_enabled:
            self._encodings[self._topics.otlp_spans] = settings.otlp_encoding
        self._sources: dict[tuple[str, int], int] = {}
        """(topic, partition) of every input partition -> its source number (the engine's partition)."""
        self._source_partitions: list[tuple[str, int]] = []

    # --- what is read ------------------------------------------------------------------------

    def topics(self) -> Sequence[str]:
        return tuple(self._encodings)

    def table_topics(self) -> Sequence[str]:
        return (self._topics.reloads,)

    def start(self, runtime: StageRuntime) -> None:
        self._runtime = runtime
        # Source numbers: every partition of every input topic, in a fixed order, the same in every worker
        # (the detector's watermarks are per source).
        for topic in self._encodings:
            for partition in range(runtime.partition_count(topic)):
                self._sources[(topic, partition)] = len(self._source_partitions)
                self._source_partitions.append((topic, partition))
        logger.info("loaded %d reloads", len(self._reloads))

    def ingest_table(self, messages: Sequence[Message], arrivals: Sequence[int] | None, outbox: Outbox) -> None:
        assert arrivals is not None
        for message, arrival in zip(messages, arrivals, strict=True):
            self.stats.reloads_consumed += 1
            try:
                value = message.value()
                if value is None:
                    raise InvalidRecordError("empty message (tombstone)")
                reload = ReloadEvent.from_dict(self._reload_codec.decode(value))
                self._check_plausible(reload.effective_time_unix_nano, arrival, "effective_time_unix_nano")
            except (DecodeError, InvalidRecordError) as error:
                self._reject(outbox, message, error)
                continue
            record = ReloadArrival(reload, arrival, message.partition(), message.offset())
            self._reloads[record.arrival_position] = record
            self.engine.add_reload(record)

    def ingest(self, messages: Sequence[Message], arrivals: Sequence[int] | None, outbox: Outbox) -> None:
        assert arrivals is not None
        engine = self.engine
        spans_topic, avro_spans = self._topics.spans, self._encodings[self._topics.spans] == AVRO
        for message, arrival in zip(messages, arrivals, strict=True):
            if avro_spans and message.topic() == spans_topic:
                try:
                    engine.add_span(self._decode_span(message, arrival))
                except (DecodeError, InvalidRecordError) as error:
                    self._reject(outbox, message, error)
            else:
                for span in self._otlp_spans(message, arrival, outbox, committed=True):
                    engine.add_span(span)
        self.stats.spans_consumed += len(messages)

    def _decode_span(self, message: Message, arrival: int) -> SpanArrival:
        value = message.value()
        if value is None:
            raise InvalidRecordError("empty message (tombstone)")
        span = self._span_decoder.decode(value)
        validate_span(span, check_attributes=False)  # the decoder parsed the attribute maps as Avro
        self._check_plausible(span["start_time_unix_nano"], arrival, "start_time_unix_nano")
        self._check_plausible(span["end_time_unix_nano"], arrival, "end_time_unix_nano")
        return SpanArrival(
            self._sources[(message.topic(), message.partition())],
            message.offset(),
            arrival,
            sys.intern(span["service_name"]),  # held for the whole horizon: one copy per name
            sys.intern(span["service_instance_id"]),
            span["start_time_unix_nano"],
            span["end_time_unix_nano"],
            SpanMessage(message.key(), value, span["kind"], span["status_code"] == "ERROR"),
        )

    def _decode_otlp(self, message: Message) -> OtlpSpans:
        value = message.value()
        if value is None:
            raise InvalidRecordError("empty message (tombstone)")
        return decode_otlp(value, self._encodings[message.topic()], max_message_bytes=self._settings.otlp_max_message_bytes)  # type: ignore[arg-type]

    def _otlp_spans(self, message: Message, arrival: int, outbox: Outbox | None, *, committed: bool) -> list[SpanArrival]:
        """The valid spans of an OTLP message. With an ``outbox``, its bad spans are dead-lettered (with their
        index) and its reload spans' events published to the reloads topic; ``committed``: the message is past
        the committed offset (not before: a previous owner did both)."""
        self.stats.otlp_messages += 1
        try:
            decoded = self._decode_otlp(message)
        except (DecodeError, InvalidRecordError) as error:
            if outbox is not None and committed:
                self._reject(outbox, message, error)
            return []
        source = self._sources[(message.topic(), message.partition())]
        report = outbox is not None and committed
        if report:
            for failure in decoded.errors:
                outbox.reject(message, _SpanRefused(failure.error_kind, failure.error), stage="validate", index=failure.index)  # type: ignore[union-attr]
                self.stats.dead_letters += 1
            for reload in decoded.reloads:
                outbox.publish(self._topics.reloads, reload.service_name.encode(), self._reload_codec.encode(reload.to_dict()))  # type: ignore[union-attr]
                self.stats.derived_reloads += 1
        spans = []
        for record, index in zip(decoded.spans, decoded.indices, strict=True):
            try:
                self._check_plausible(record["start_time_unix_nano"], arrival, "start_time_unix_nano")
                self._check_plausible(record["end_time_unix_nano"], arrival, "end_time_unix_nano")
            except InvalidRecordError as error:
                if report:
                    outbox.reject(message, _SpanRefused(INVALID_SPAN, f"span {index}: {error}"), stage="validate", index=index)  # type: ignore[union-attr]
                    self.stats.dead_letters += 1
                continue
            spans.append(
                SpanArrival(
                    source,
                    message.offset(),
                    arrival,
                    sys.intern(record["service_name"]),
                    sys.intern(record["service_instance_id"]),
                    record["start_time_unix_nano"],
                    record["end_time_unix_nano"],
                    SpanMessage(record["trace_id"].encode(), self._span_codec.encode(record), record["kind"], record["status_code"] == "ERROR"),
                    index,
                )
            )
        return spans

    def _check_plausible(self, value: int, arrival_ms: int, field_name: str) -> None:
        check_time_plausible(
            value,
            now_unix_nano=arrival_ms * _NANOS_PER_MS,
            max_past_nanos=self._settings.max_span_age_ms * _NANOS_PER_MS,
            max_future_nanos=self._settings.max_future_ms * _NANOS_PER_MS,
            field_name=field_name,
        )

    def _reject(self, outbox: Outbox, message: Message, error: Exception) -> None:
        outbox.reject(message, error, stage="decode" if isinstance(error, DecodeError) else "validate")
        self.stats.dead_letters += 1

    # --- answers -----------------------------------------------------------------------------

    def _active_sources(self) -> list[int]:
        assert self._runtime is not None
        return [self._sources[key] for key in self._runtime.active_partitions() if key in self._sources]

    def _progress(self, source: int) -> Any:
        assert self._runtime is not None
        return self._runtime.progress(*self._source_partitions[source])

    def advance(self, outbox: Outbox) -> None:
        runtime = self._runtime
        assert runtime is not None
        partitions = self._active_sources()
        if not partitions:
            return
        skew = self._settings.clock_skew_ms
        span_progress = (
            NEVER
            if self._restores  # a partition being rebuilt holds every reload back (its answers depend on them)
            else overall_progress((self._progress(p) for p in partitions), skew)
        )
        reload_progress = overall_progress(
            (runtime.progress(self._topics.reloads, p) for p in range(runtime.partition_count(self._topics.reloads))), skew
        )
        self._publish(self.engine.advance(span_progress, reload_progress), outbox, first_appearance=None)
        self._send_applied(outbox)
        self._flush_requests(outbox)
        now = time.monotonic()
        if self._settings.detection_enabled and now - self._last_watermark_publish >= self._settings.feed_watermark_interval_ms / 1000:
            self._publish_watermarks(outbox, partitions, min(span_progress, reload_progress))
            self._last_watermark_publish = now

    def _send_applied(self, outbox: Outbox) -> None:
        for arrival in self.engine.take_applied():
            if self._settings.detection_enabled:
                reload = arrival.reload
                try:
                    outbox.publish(self._topics.requests_by_service, reload.service_name.encode(), encode_reload(reload))
                except MessageTooLarge as error:  # names of hundreds of kB: the detector never judges it
                    self.stats.unsent_reloads += 1
                    logger.warning("reload %s is not sent to the detector: %s", bounded_repr(reload.reload_id, 80), error)

    def _publish(
        self, emissions: list[Emission], outbox: Outbox, *, first_appearance: set[tuple[int, int, int]] | None
    ) -> None:
        missing: dict[int, set[int]] = {}
        for emission in emissions:
            if emission.span.payload.value is None:
                missing.setdefault(emission.span.partition, set()).add(emission.span.offset)
        fetched = self._refetch(missing) if missing else {}
        feed = self._settings.detection_enabled
        for emission in emissions:
            span = emission.span
            message: SpanMessage = span.payload
            key, raw = (message.key, message.value) if message.value is not None else fetched.get(span.position, (None, None))
            if raw is None:
                self.stats.unfetchable += 1
                topic, partition = self._source_partitions[span.partition]
                logger.error(
                    "cannot publish revision %d of the span at %s[%d]@%d: the message is gone from the topic",
                    emission.revision, topic, partition, span.offset,
                )
                continue
            answer: CachedAnswer = emission.answer  # type: ignore[assignment]
            try:
                value = self._encoder.encode(raw, answer.enrichment, emission.revision, answer.derived)
                outbox.publish(self._topics.spans_enriched, key, value)
                self.stats.published += 1
            except MessageTooLarge as error:  # the span fits its topic, its answer does not fit spans.enriched
                self.stats.too_large += 1
                topic, partition = self._source_partitions[span.partition]
                outbox.reject(MessageView(topic, partition, span.offset, raw, key), error, stage="enrich", index=self._letter_index(span))
                continue
            is_first = (
                emission.revision == 0 and emission.caused_by_reload_id is None
                if first_appearance is None
                else span.position in first_appearance
            )
            if is_first and feed:
                self._pending_requests.setdefault(span.service_name, []).append(
                    RequestRow(span.service_instance_id, span.start_time_unix_nano, span.end_time_unix_nano, message.is_error, message.kind)
                )
                watermark = self._watermarks.setdefault(span.partition, _Watermark())
                if span.start_time_unix_nano < watermark.published:
                    self.stats.late_requests += 1
                watermark.max_emitted_start = max(watermark.max_emitted_start, span.start_time_unix_nano)
        if self._settings.refetch_corrections:
            for emission in emissions:  # answered: only a correction needs the bytes again
                emission.span.payload.key = emission.span.payload.value = None

    def _letter_index(self, span: SpanArrival) -> int:
        """A span's index in its message for a dead letter (-1 for an Avro message: it is the message)."""
        topic, _ = self._source_partitions[span.partition]
        return -1 if self._encodings[topic] == AVRO else span.index

    def _refetch(self, wanted: dict[int, set[int]]) -> dict[tuple[int, int, int], tuple[bytes | None, bytes]]:
        """(key, Avro span) of the spans at the wanted offsets of each source, read back from their topic.

        An OTLP message is decoded again and its spans encoded again (deterministic: the same bytes as
        when it was first read). Offsets gone by retention are absent from the result.
        """
        assert self._runtime is not None
        found: dict[tuple[int, int, int], tuple[bytes | None, bytes]] = {}
        for source, offsets in wanted.items():
            self.stats.refetches += 1
            topic, partition = self._source_partitions[source]
            for offset, message in self._runtime.read(topic, partition, offsets).items():
                if message.value() is None:
                    continue
                if self._encodings[topic] == AVRO:
                    found[(source, offset, 0)] = (message.key(), message.value())
                    continue
                for span in self._otlp_spans(message, message.timestamp()[1], None, committed=False):
                    found[span.position] = (span.payload.key, span.payload.value)
            logger.info("re-read %d span messages of %s[%d] for corrections", len(offsets), topic, partition)
        return found

    def _flush_requests(self, outbox: Outbox) -> None:
        topic = self._topics.requests_by_service
        for service_name, rows in self._pending_requests.items():
            key = service_name.encode()
            values, skipped = encode_requests(service_name, rows, max_bytes=outbox.limit(topic) - len(key))
            for value in values:
                outbox.publish(topic, key, value)
            if skipped:
                self.stats.unsent_requests += skipped
                logger.warning("%d requests of service %s are too large to send to the detector", skipped, bounded_repr(service_name, 80))
        self._pending_requests.clear()

    # --- watermarks --------------------------------------------------------------------------

    def _watermark(self, source: int, idle_floor_ms: int) -> tuple[int, bool]:
        """(event time below which ``source`` has sent every request and every reload, whether it is idle).

        Busy: the least start it holds, and the latest start it sent less ``max_lateness_ms``. Idle
        (nothing held, read to its end, nothing new for ``idle_partition_ms``): also broker time less
        ``max_lateness_ms`` (a later span arrives after it), and the caller lets it follow the busy ones.
        """
        state = self._watermarks.setdefault(source, _Watermark())
        value = state.max_emitted_start - self._lateness_ns if state.max_emitted_start != NEVER else NEVER
        least_held = self.engine.least_held_start(source)
        if least_held is not None:
            return min(value, least_held), False
        progress = self._progress(source)
        now_ms = self._clock() // _NANOS_PER_MS
        idle = (
            progress is not None
            and idle_floor_ms != NEVER
            and progress.caught_up_at_ms - self._settings.clock_skew_ms >= progress.last_arrival_ms
            and progress.last_arrival_ms < now_ms - self._settings.idle_partition_ms
        )
        if idle:
            value = max(value, idle_floor_ms * _NANOS_PER_MS - self._lateness_ns)
        return value, idle

    def _publish_watermarks(self, outbox: Outbox, sources: list[int], idle_floor_ms: int) -> None:
        """Send every source's watermark that rose to every feed partition (after the rows and reloads it covers).

        An idle source follows the least watermark of the busy ones (as Flink's idleness lets an idle
        input stop holding the others back): a span it gets later is counted as late if it started
        before (``late_requests``).
        """
        assert self._runtime is not None
        if self._restores:
            return
        computed = {source: self._watermark(source, idle_floor_ms) for source in sources}
        busy = [value for value, idle in computed.values() if not idle]
        busy_floor = min(busy) if busy else NEVER
        times = {}
        for source, (value, idle) in computed.items():
            if idle:
                value = max(value, busy_floor)
            state = self._watermarks[source]
            if value > state.published:
                state.published = value
                times[source] = value
        if not times:
            return
        topic = self._topics.requests_by_service
        value = encode_watermarks(len(self._source_partitions), times)
        for feed_partition in range(outbox.partitions(topic)):
            outbox.publish(topic, None, value, partition=feed_partition)

    # --- commits and partition ownership ------------------------------------------------------

    def prepare_commit(self, outbox: Outbox, *, draining: bool) -> None:
        self._flush_requests(outbox)

    def snapshot(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Position]:
        assert self._runtime is not None
        held = self.engine.oldest_held_offsets()
        applied = self.engine.applied_position
        positions = {}
        for topic, partition in partitions:
            source = self._sources[(topic, partition)]
            progress = self._runtime.progress(topic, partition)
            offset = held.get(source, progress.next_offset if progress is not None else -1)
            watermark = self._watermarks.get(source)
            positions[(topic, partition)] = Position(
                offset,
                {
                    _APPLIED_POSITION_KEY: list(applied) if applied is not None else None,
                    "max_emitted_start": watermark.max_emitted_start if watermark and watermark.max_emitted_start != NEVER else None,
                },
            )
        return positions

    def upgrade_state(self, metadata: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Version 1 metadata: ``{"v": 1, "w": applied position}``."""
        if metadata.get("v") == 1 and "w" in metadata:
            return {_APPLIED_POSITION_KEY: metadata["w"], "max_emitted_start": None}
        return None

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        sources = [self._sources[key] for key in partitions if key in self._sources]
        self.engine.forget_partitions(sources)
        for source in sources:
            self._watermarks.pop(source, None)
            self._restores.pop(source, None)

    def assigned(self, partitions: Sequence[Committed]) -> dict[tuple[str, int], RestorePlan]:
        previous = {
            self._sources[(entry.topic, entry.partition)]: _applied_position(entry.state) for entry in partitions
        }
        if not self._assigned_once:
            # Start at the least advanced position any partition was committed with: no partition
            # then needs answers this worker could not give (see restore_partition).
            committed = [position for found, position in previous.values() if found]
            start = min(committed) if committed and all(position is not None for position in committed) else None
            self.engine.apply_through(start)  # type: ignore[arg-type]
            self._assigned_once = True
        applied = self.engine.applied_position
        applied_ms = applied[0] if applied is not None else NEVER
        grace = self._settings.grace_period_ms
        now_ms = self._clock() // _NANOS_PER_MS
        plans = {}
        for entry in partitions:
            source = self._sources[(entry.topic, entry.partition)]
            _, previous_applied = previous[source]
            anchors = [now_ms] + [position[0] for position in (applied, previous_applied) if position is not None]
            since_ms = min(anchors) - self._settings.correction_horizon_ms - 2 * grace - self._settings.clock_skew_ms
            self._restores[source] = _Restore(entry, previous_applied)
            state = entry.state or {}
            emitted_start = state.get("max_emitted_start")
            if isinstance(emitted_start, int):
                self._watermarks[source] = _Watermark(max_emitted_start=emitted_start)
            plans[(entry.topic, entry.partition)] = RestorePlan(
                until_offset=entry.offset,
                since_time_ms=since_ms,
                # A span after the commit whose grace ended before the last reload applied was due before
                # it: rebuilt with the reloads it would have seen; later ones are held like new ones.
                more=lambda message, arrival: arrival + grace < applied_ms,
            )
        return plans

    def restore_messages(
        self, partition: tuple[str, int], messages: Sequence[Message], arrivals: Sequence[int], outbox: Outbox
    ) -> None:
        restore = self._restores.get(self._sources[partition])
        if restore is None:
            return
        committed = restore.committed.offset
        drop_bytes = self._settings.refetch_corrections
        avro = self._encodings[partition[0]] == AVRO
        for message, arrival in zip(messages, arrivals, strict=True):
            # The previous owner dead-lettered (and derived the reloads of) what is before its commit.
            after = message.offset() >= committed
            if avro:
                try:
                    spans = [self._decode_span(message, arrival)]
                except (DecodeError, InvalidRecordError) as error:
                    if after:
                        self._reject(outbox, message, error)
                    continue
            else:
                spans = self._otlp_spans(message, arrival, outbox, committed=after)
            for span in spans:
                if not after:
                    if drop_bytes:  # answered already: only a correction needs the bytes, and re-reads them
                        span.payload.key = span.payload.value = None
                    restore.emitted.append(span)
                else:
                    restore.unemitted.append(span)

    def restored(self, partition: tuple[str, int], committed: Committed, position: int, outbox: Outbox) -> None:
        restore = self._restores.pop(self._sources[partition], None)
        if restore is None:
            return
        result = restore_partition(
            timeline_factory=self._timeline_factory,
            answer_fn=self._answers.lookup,
            grace_ms=self._settings.grace_period_ms,
            horizon_ms=self._settings.correction_horizon_ms,
            reloads=self._reloads.values(),
            emitted=restore.emitted,
            previous_applied_position=restore.previous_applied_position,
            unemitted=restore.unemitted,
            applied_position=self.engine.applied_position,
        )
        for span, answer, revision in result.adopt:
            self.engine.adopt(span, answer, revision)
        for span in result.hold:
            self.engine.add_span(span)
        self._publish(result.emissions, outbox, first_appearance={span.position for span in restore.unemitted})
        if self._settings.refetch_corrections:
            for span, _, _ in result.adopt:
                span.payload.key = span.payload.value = None
        self.stats.restored_partitions += 1
        logger.info(
            "partition %s[%d]: committed %d, rebuilt %d answered + %d pending spans, republished %d, consuming from %d",
            *partition, committed.offset, len(restore.emitted), len(restore.unemitted), len(result.emissions), position,
        )


def _applied_position(state: Mapping[str, Any] | None) -> tuple[bool, ArrivalPosition | None]:
    """(found, arrival position of the last reload applied) of a commit's state."""
    if not state or _APPLIED_POSITION_KEY not in state:
        return False, None
    position = state[_APPLIED_POSITION_KEY]
    if position is None:
        return True, None
    try:
        return True, tuple(int(part) for part in position)  # type: ignore[return-value]
    except (TypeError, ValueError):
        logger.warning("ignoring an unreadable applied position in commit metadata: %r", position)
        return False, None


def enricher_runtime(
    kafka: KafkaSettings,
    settings: WorkerSettings,
    *,
    timeline_factory: Callable[[], Timeline] | None = None,
    **stage_options: Any,
) -> StageRuntime:
    """The enricher on its runtime."""
    if timeline_factory is None:
        from streams.timeline import VersionTimeline

        timeline_factory = VersionTimeline
    stage = SpanEnricher(kafka, settings, timeline_factory=timeline_factory, **stage_options)
    return StageRuntime(kafka, stage, runtime_settings(settings))
