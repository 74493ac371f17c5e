"""The Kafka edge of enrichment: consume spans and reloads, run the engine, publish, commit.

Guarantees:
    * At least once: a span's offset is committed only after its answer (and every correction
      made so far) has been delivered to ``spans.enriched``; a crash replays from the commit and
      republishes identical records (same answer, same revision).
    * Deterministic answers: the engine orders spans and reloads by broker arrival time, so any
      worker — restarted, or taking over partitions in a rebalance — publishes the same answers
      a worker that never stopped would have (see :mod:`streams.engine`). The commit of each
      partition carries, as metadata, the last reload applied when it was made; that and the
      committed offset are all a new owner needs to rebuild the partition's state.
    * Nothing is lost: undecodable or invalid messages go to the dead-letter topic with their
      topic, partition, offset and raw bytes (a prefix with length and SHA-256 when too large:
      :mod:`schemas.dead_letters`), and so does a span whose enriched form would not fit
      ``spans.enriched``; their offsets are committed like the others.

Non-guarantees: records are not published in offset order (a held span waits for its grace
period while later ones may pass it), and a worker's restart republishes what was answered
since the last commit (consumers keep the highest revision per span; the ClickHouse table does).

The reloads topic is read in full by every worker (the version history, a global table whose
changelog is the topic itself). Spans are consumed with confluent-kafka in batches, because the
per-event path of Faust caps at ~13k messages/s on a 2-core machine (see BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from confluent_kafka.admin import AdminClient, NewTopic

from schemas.codec import ProjectedDecoder
from schemas.dead_letters import KAFKA_MESSAGE_LIMIT_BYTES, RECORD_OVERHEAD_BYTES, DeadLetterBuilder
from schemas.errors import DecodeError, InvalidRecordError, ReloadtraceError
from schemas.records import ReloadEvent, check_time_plausible, validate_span
from schemas.settings import KafkaSettings
from schemas.text import bounded_repr
from streams.engine import (
    Emission,
    EnrichmentEngine,
    ReloadArrival,
    ReloadKey,
    SpanArrival,
    Timeline,
    forget_partitions,
    restore_partition,
)
from streams.enriched_wire import EnrichedEncoder
from streams.enrichment import SegmentAnswers
from streams.kafka_io import (
    commit_quietly,
    dead_letter_builder,
    group_consumer_config,
    is_too_large,
    produce_dead_letter,
    produce_waiting,
)
from streams.progress import PartitionProgress, overall_progress
from streams.settings import WorkerSettings

logger = logging.getLogger(__name__)

_NANOS_PER_MS = 1_000_000
_FLUSH_TIMEOUT_S = 60.0
_METADATA_VERSION = 1
SPAN_FIELDS_ENRICHMENT_READS = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "service_name", "service_instance_id",
    "start_time_unix_nano", "end_time_unix_nano", "status_code", "status_message",
)
"""Every span field but the attribute maps: what validation, enrichment and detection look at."""
_PREFETCH_KBYTES = 16_384
"""librdkafka's read-ahead of the spans topic (default 64 MB). Measured on a backlog: peak RSS of the
enricher process 539 -> 450 MB at the same spans/s (the consumer asks for 5,000 messages at a time)."""
_PRODUCER_QUEUE_KBYTES = 65_536
"""Bound of the enriched-span producer's queue (default 1 GB); a full queue makes the enricher wait."""
REQUEST_ROWS_PER_MESSAGE = 5_000
"""Request rows per message of the requests-by-service topic (keeps messages ~400 kB)."""


class EnricherError(ReloadtraceError):
    """The enricher cannot go on safely (deliveries failing, broker unreachable for too long)."""


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
    commits: int = 0
    restored_partitions: int = 0
    delivery_failures: int = 0
    refetches: int = 0
    """Reads of the spans topic for corrections of spans whose bytes were dropped."""
    unfetchable: int = 0
    """Corrections not published because the span's message is gone from the topic (retention)."""
    assigned: list[int] = field(default_factory=list)


def encode_frontier(key: ReloadKey | None) -> str:
    """Commit metadata: the last reload applied when the commit was made."""
    return orjson.dumps({"v": _METADATA_VERSION, "w": list(key) if key is not None else None}).decode()


def decode_frontier(metadata: str | None) -> tuple[bool, ReloadKey | None]:
    """(found, frontier) from commit metadata; (False, None) when there is none or it is unreadable."""
    if not metadata:
        return False, None
    try:
        parsed = orjson.loads(metadata)
        frontier = parsed["w"]
        return True, (tuple(int(part) for part in frontier) if frontier is not None else None)  # type: ignore[return-value]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        logger.warning("ignoring unreadable commit metadata %s", bounded_repr(metadata))
        return False, None


def ensure_topics(kafka: KafkaSettings, timeout_s: float = 30.0) -> None:
    """Create the pipeline's topics that do not exist yet (``kafka.partitions`` each, broker-default
    replication, the configs the worker relies on: log-append time, reloads kept forever).

    Raises:
        EnricherError: a topic could not be created.
    """
    admin = AdminClient(kafka.confluent_config())
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [
        NewTopic(name, num_partitions=kafka.partitions, replication_factor=-1, config=dict(config))
        for name, config in kafka.topics.with_configs().items()
        if name not in existing
    ]
    if not missing:
        return
    for name, future in admin.create_topics(missing, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except Exception as error:  # noqa: BLE001 - KafkaException; an existing topic is fine
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise EnricherError(f"creating topic {name} failed: {error}") from error
    logger.info("created topics %s", ", ".join(topic.topic for topic in missing))


class RequestFeed:
    """Where first answers and applied reloads go for regression detection (default: nowhere)."""

    def requests(self, service_name: str, rows: list[tuple[str, int, int, bool, str]]) -> None:
        """Rows of (instance, start ns, end ns, is_error, kind) of a service."""

    def reload(self, arrival: ReloadArrival) -> None:
        """A reload applied to the timeline."""


class KafkaRequestFeed(RequestFeed):
    """Re-keys requests and reloads by service onto the internal ``requests-by-service`` topic.

    Messages stay within ``max_message_bytes``: rows are chunked by count and by encoded size. A row or
    a reload that alone cannot fit (names of hundreds of kB) is not sent: logged and counted in
    ``unsent``, the detector never sees it (its span is still enriched and stored).
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        on_delivery: Callable[..., None],
        *,
        max_message_bytes: int = KAFKA_MESSAGE_LIMIT_BYTES,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._on_delivery = on_delivery
        self._budget = max_message_bytes - RECORD_OVERHEAD_BYTES
        self.unsent = 0

    def requests(self, service_name: str, rows: list[tuple[str, int, int, bool, str]]) -> None:
        # A backlog can answer a service's requests by the hundred thousand at once: chunk them so
        # no message nears the broker's 1 MB limit (a row is ~80 bytes of JSON).
        key = service_name.encode()
        room = self._budget - len(key) - len(orjson.dumps({"service_name": service_name, "requests": []}))
        chunk: list[tuple[str, int, int, bool, str]] = []
        size = 0
        for row in rows:
            row_bytes = len(orjson.dumps(row)) + 1
            if row_bytes > room:
                self._unsent("a request row", service_name, row_bytes)
                continue
            if chunk and (len(chunk) >= REQUEST_ROWS_PER_MESSAGE or size + row_bytes > room):
                self._send(key, orjson.dumps({"service_name": service_name, "requests": chunk}))
                chunk, size = [], 0
            chunk.append(row)
            size += row_bytes
        if chunk:
            self._send(key, orjson.dumps({"service_name": service_name, "requests": chunk}))

    def reload(self, arrival: ReloadArrival) -> None:
        key = arrival.reload.service_name.encode()
        value = orjson.dumps({"service_name": arrival.reload.service_name, "reload": arrival.reload.to_dict()})
        if len(key) + len(value) > self._budget:
            self._unsent("a reload", arrival.reload.service_name, len(value))
            return
        self._send(key, value)

    def _send(self, key: bytes, value: bytes) -> None:
        produce_waiting(self._producer, self._topic, key, value, self._on_delivery)

    def _unsent(self, what: str, service_name: str, size: int) -> None:
        self.unsent += 1
        logger.warning(
            "%s of service %s is %d bytes: too large for %s, not sent to the detector",
            what, bounded_repr(service_name, 80), size, self._topic,
        )


class SpanEnricher:
    """Runs enrichment for the span partitions this worker is assigned.

    Args:
        kafka: broker, topics and framing.
        settings: grace period, horizon, batching, limits.
        timeline_factory: builds an empty version timeline.
        answer_fn: computes an answer from a timeline (default: :func:`enrichment_of` memoised per
            segment pair, :class:`streams.enrichment.SegmentAnswers`).
        wall_clock_ns: the clock used for watermark queries and dead-letter times.
        feed_factory: builds the detection feed from the producer (default: the Kafka feed when
            detection is enabled, else none).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: WorkerSettings,
        *,
        timeline_factory: Callable[[], Timeline],
        answer_fn: Callable[..., Any] | None = None,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        feed_factory: Callable[[Producer, Callable[..., None]], RequestFeed] | None = None,
    ) -> None:
        self._kafka = kafka
        self._settings = settings
        self._topics = kafka.topics
        self._timeline_factory = timeline_factory
        self._answer_fn = answer_fn if answer_fn is not None else SegmentAnswers()
        self._clock = wall_clock_ns
        self._span_codec = kafka.codec("Span")
        # The enricher never reads attributes: skip building them (most of a span's decoding cost).
        self._span_decoder = ProjectedDecoder(self._span_codec, SPAN_FIELDS_ENRICHMENT_READS)
        self._reload_codec = kafka.codec("ReloadEvent")
        self._dead_letters: DeadLetterBuilder = DeadLetterBuilder(kafka.codec("DeadLetter"))
        self._encoder = EnrichedEncoder(self._span_codec, kafka.codec("EnrichedSpan"))
        self._feed_factory = feed_factory
        self.engine = EnrichmentEngine(
            timeline_factory(),
            self._answer_fn,
            grace_ms=settings.grace_period_ms,
            horizon_ms=settings.correction_horizon_ms,
        )
        self.stats = EnricherStats()
        self._reloads: dict[ReloadKey, ReloadArrival] = {}
        self._span_progress: dict[int, PartitionProgress] = {}
        self._reload_progress: dict[int, PartitionProgress] = {}
        self._delivery_error: str | None = None
        self._assigned_once = False
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._fetcher: Consumer | None = None
        self._watermarks: Consumer | None = None
        self._reload_consumer: Consumer | None = None
        self._feed: RequestFeed = RequestFeed()
        self._pending_requests: dict[str, list[tuple[str, int, int, bool, str]]] = {}
        self.ready = threading.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume, enrich and publish until ``stop`` is set; commit what is safe on the way out.

        Raises:
            EnricherError: deliveries failed; nothing after the last commit is acknowledged.
        """
        base = self._kafka.confluent_config()
        ensure_topics(self._kafka)
        self._dead_letters = dead_letter_builder(self._kafka)
        self._producer = Producer(
            base
            | {
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "lz4",
                "message.timeout.ms": 120_000,
                "queue.buffering.max.messages": 500_000,
                "queue.buffering.max.kbytes": _PRODUCER_QUEUE_KBYTES,
            }
        )
        if self._feed_factory is not None:
            self._feed = self._feed_factory(self._producer, self._on_delivery)
        elif self._settings.detection_enabled:
            self._feed = KafkaRequestFeed(self._producer, self._topics.requests_by_service, self._on_delivery)
        self._watermarks = Consumer(base | {"group.id": f"{self._settings.group_id}-watermarks", "enable.auto.commit": False})
        self._reload_consumer = Consumer(
            base
            | {
                "group.id": f"{self._settings.group_id}-reload-reader",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )
        self._consumer = Consumer(
            base
            | group_consumer_config(self._settings.group_id, self._settings.session_timeout_ms)
            | {"queued.max.messages.kbytes": _PREFETCH_KBYTES}
        )
        try:
            self._load_reloads(stop)
            self._consumer.subscribe(
                [self._topics.spans], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            last_commit = last_watermarks = 0.0
            self.ready.set()
            while not stop.is_set():
                self._consume_once()
                now = time.monotonic()
                if now - last_watermarks >= self._settings.watermark_interval_ms / 1000:
                    self._observe_watermarks()
                    last_watermarks = now
                self._advance()
                if now - last_commit >= self._settings.commit_interval_ms / 1000:
                    self._commit()
                    last_commit = now
            self._commit()
        finally:
            self._close()

    def _close(self) -> None:
        with contextlib.suppress(Exception):
            if self._producer is not None:
                self._producer.flush(_FLUSH_TIMEOUT_S)
        for consumer in (self._consumer, self._reload_consumer, self._fetcher, self._watermarks):
            if consumer is not None:
                with contextlib.suppress(Exception):
                    consumer.close()

    # --- reloads -----------------------------------------------------------------------------

    def _reload_partitions(self) -> list[TopicPartition]:
        metadata = self._reload_consumer.list_topics(self._topics.reloads, timeout=30)
        topic = metadata.topics.get(self._topics.reloads)
        if topic is None or topic.error is not None:
            raise EnricherError(f"reload topic {self._topics.reloads} is missing: {topic.error if topic else ''}")
        return [TopicPartition(self._topics.reloads, partition, OFFSET_BEGINNING) for partition in sorted(topic.partitions)]

    def _load_reloads(self, stop: threading.Event) -> None:
        """Read the whole reload history before any span is answered."""
        partitions = self._reload_partitions()
        self._reload_consumer.assign(partitions)
        for tp in partitions:
            progress = self._reload_progress.setdefault(tp.partition, PartitionProgress())
            progress.next_offset = 0
        targets = {}
        for tp in partitions:
            low, high = self._reload_consumer.get_watermark_offsets(tp, timeout=30, cached=False)
            targets[tp.partition] = high
            self._reload_progress[tp.partition].next_offset = low
        while not stop.is_set() and any(
            self._reload_progress[partition].next_offset < high for partition, high in targets.items()
        ):
            for message in self._reload_consumer.consume(1_000, timeout=0.5):
                self._ingest_reload(message)
        logger.info("loaded %d reloads", len(self._reloads))

    def _ingest_reload(self, message: Message) -> None:
        if message.error() is not None:
            self._on_consume_error(message)
            return
        self.stats.reloads_consumed += 1
        partition, offset = message.partition(), message.offset()
        progress = self._reload_progress.setdefault(partition, PartitionProgress())
        arrival = self._arrival_ms(message, progress)
        progress.consumed(offset, arrival)
        value = message.value()
        try:
            if value is None:
                raise InvalidRecordError("empty message (tombstone)")
            reload = ReloadEvent.from_dict(self._reload_codec.decode(value))
            self._check_plausible(reload.effective_time_unix_nano, arrival, "effective_time_unix_nano")
        except (DecodeError, InvalidRecordError) as error:
            self._dead_letter(message, error, stage="decode" if isinstance(error, DecodeError) else "validate")
            return
        arrival_record = ReloadArrival(reload, arrival, partition, offset)
        self._reloads[arrival_record.key] = arrival_record
        self.engine.add_reload(arrival_record)

    # --- spans -------------------------------------------------------------------------------

    def _consume_once(self) -> None:
        messages = self._consumer.consume(self._settings.batch_size, timeout=self._settings.poll_timeout_ms / 1000)
        for message in messages:
            if message.error() is not None:
                self._on_consume_error(message)
                continue
            self._ingest_span(message)
        for message in self._reload_consumer.consume(1_000, timeout=0):
            self._ingest_reload(message)
        self._producer.poll(0)

    def _decode_span(self, message: Message, arrival: int) -> SpanArrival:
        value = message.value()
        if value is None:
            raise InvalidRecordError("empty message (tombstone)")
        span = self._span_decoder.decode(value)
        validate_span(span, check_attributes=False)  # the decoder parsed the attribute maps as Avro
        self._check_plausible(span["start_time_unix_nano"], arrival, "start_time_unix_nano")
        self._check_plausible(span["end_time_unix_nano"], arrival, "end_time_unix_nano")
        return SpanArrival(
            message.partition(),
            message.offset(),
            arrival,
            sys.intern(span["service_name"]),  # held for the whole horizon: one copy per name
            sys.intern(span["service_instance_id"]),
            span["start_time_unix_nano"],
            span["end_time_unix_nano"],
            SpanMessage(message.key(), value, span["kind"], span["status_code"] == "ERROR"),
        )

    def _ingest_span(self, message: Message) -> None:
        self.stats.spans_consumed += 1
        partition = message.partition()
        progress = self._span_progress.setdefault(partition, PartitionProgress())
        arrival = self._arrival_ms(message, progress)
        try:
            span = self._decode_span(message, arrival)
        except (DecodeError, InvalidRecordError) as error:
            self._dead_letter(message, error, stage="decode" if isinstance(error, DecodeError) else "validate")
        else:
            self.engine.add_span(span)
        progress.consumed(message.offset(), arrival)

    def _arrival_ms(self, message: Message, progress: PartitionProgress) -> int:
        """Broker arrival time; never earlier than the partition's previous message (CreateTime topics)."""
        timestamp_type, timestamp = message.timestamp()
        if timestamp_type == TIMESTAMP_NOT_AVAILABLE:
            timestamp = self._clock() // _NANOS_PER_MS
        return max(timestamp, progress.last_arrival_ms)

    def _check_plausible(self, value: int, arrival_ms: int, field_name: str) -> None:
        arrival_ns = arrival_ms * _NANOS_PER_MS
        check_time_plausible(
            value,
            now_unix_nano=arrival_ns,
            max_past_nanos=self._settings.max_span_age_ms * _NANOS_PER_MS,
            max_future_nanos=self._settings.max_future_ms * _NANOS_PER_MS,
            field_name=field_name,
        )

    def _on_consume_error(self, message: Message) -> None:
        error = message.error()
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise EnricherError(f"fatal consumer error: {error}")
        logger.warning("consumer error (retried by the client): %s", error)

    def _dead_letter(self, message: Message, error: Exception, *, stage: str) -> None:
        kind = error.kind.value if isinstance(error, DecodeError) else "invalid_record"
        self._dead_letter_bytes(message.topic(), message.partition(), message.offset(), message.key(), message.value(), kind, str(error), stage)

    def _dead_letter_bytes(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, kind: str, error: str, stage: str
    ) -> None:
        produce_dead_letter(
            self._producer, self._topics.dead_letter, self._dead_letters, self._on_delivery,
            source_topic=topic, source_partition=partition, source_offset=offset, raw_key=key, raw_value=value,
            error_kind=kind, error=error, stage=stage, now_unix_nano=self._clock(),
        )
        self.stats.dead_letters += 1

    # --- progress, answers, publication ------------------------------------------------------

    def _observe_watermarks(self) -> None:
        """Query the high watermark of every partition read to its last known end.

        Queries go through a client of their own (``self._watermarks``), which fetches nothing:
        on a consuming client each query waits behind the long-poll fetches of its connection
        (measured: a fifth of the enricher's time under load). A partition known to be behind
        (its cached high watermark, from the last fetch response, is past our position) needs no
        query: its progress is its last arrival anyway.
        """
        skew_free_now = self._clock() // _NANOS_PER_MS
        for consumer, topic, progress_by_partition in (
            (self._consumer, self._topics.spans, self._span_progress),
            (self._reload_consumer, self._topics.reloads, self._reload_progress),
        ):
            for partition in self._owned(progress_by_partition, topic):
                progress = progress_by_partition[partition]
                tp = TopicPartition(topic, partition)
                with contextlib.suppress(Exception):
                    _, cached_high = consumer.get_watermark_offsets(tp, cached=True)
                    if cached_high is not None and cached_high > progress.next_offset >= 0:
                        continue
                try:
                    _, high = self._watermarks.get_watermark_offsets(tp, timeout=5, cached=False)
                except Exception:  # noqa: BLE001 - retried once with fresh metadata, below
                    try:
                        # A client that consumes nothing keeps stale metadata (e.g. across a broker
                        # restart: "Unknown partition" for ever): refresh it and ask again.
                        self._watermarks.list_topics(topic, timeout=5)
                        _, high = self._watermarks.get_watermark_offsets(tp, timeout=5, cached=False)
                    except Exception as error:  # noqa: BLE001 - a failed query only delays progress
                        logger.warning("high-watermark query for %s[%d] failed: %s", topic, partition, error)
                        continue
                progress.observed_high_watermark(high, skew_free_now)

    def _owned(self, progress_by_partition: dict[int, PartitionProgress], topic: str) -> list[int]:
        if topic == self._topics.spans:
            return [partition for partition in self.stats.assigned if partition in progress_by_partition]
        return list(progress_by_partition)

    def _advance(self) -> None:
        skew = self._settings.clock_skew_ms
        span_progress = overall_progress(
            (self._span_progress[p] for p in self.stats.assigned if p in self._span_progress), skew
        )
        if not self.stats.assigned:
            return
        reload_progress = overall_progress(self._reload_progress.values(), skew)
        self._publish(self.engine.advance(span_progress, reload_progress), first_appearance=None)
        for arrival in self.engine.take_applied():
            self._feed.reload(arrival)
        self._flush_requests()

    def _publish(self, emissions: list[Emission], *, first_appearance: set[tuple[int, int]] | None) -> None:
        missing: dict[int, set[int]] = {}
        for emission in emissions:
            if emission.span.payload.value is None:
                missing.setdefault(emission.span.partition, set()).add(emission.span.offset)
        fetched = self._refetch(missing) if missing else {}
        for emission in emissions:
            message: SpanMessage = emission.span.payload
            key, raw = (
                (message.key, message.value)
                if message.value is not None
                else fetched.get((emission.span.partition, emission.span.offset), (None, None))
            )
            if raw is None:
                self.stats.unfetchable += 1
                logger.error(
                    "cannot publish revision %d of the span at %s[%d]@%d: the message is gone from the topic",
                    emission.revision, self._topics.spans, emission.span.partition, emission.span.offset,
                )
                continue
            value = self._encoder.encode(raw, emission.answer, emission.revision)
            try:
                produce_waiting(self._producer, self._topics.spans_enriched, key, value, self._on_delivery)
            except KafkaException as error:
                if not is_too_large(error):
                    raise
                # The span fits its topic, its answer does not fit spans.enriched: dead-letter the span.
                self._dead_letter_bytes(
                    self._topics.spans, emission.span.partition, emission.span.offset, key, raw, "too_large",
                    f"enriched span of {len(value)} bytes (revision {emission.revision}) exceeds the message limit", "enrich",
                )
                continue
            self.stats.published += 1
            span = emission.span
            is_first = (
                emission.revision == 0 and emission.caused_by_reload_id is None
                if first_appearance is None
                else (span.partition, span.offset) in first_appearance
            )
            if is_first:
                self._pending_requests.setdefault(span.service_name, []).append(
                    (
                        span.service_instance_id,
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                        message.is_error,
                        message.kind,
                    )
                )
        if self._settings.refetch_corrections:
            for emission in emissions:  # answered: only a correction needs the bytes again
                emission.span.payload.key = emission.span.payload.value = None

    def _refetch(self, wanted: dict[int, set[int]]) -> dict[tuple[int, int], tuple[bytes | None, bytes]]:
        """(key, value) of the span messages at the wanted offsets, read back from the spans topic.

        Reads each partition once, from the least to the greatest wanted offset. Offsets no longer
        in the topic (deleted by retention) are absent from the result.
        """
        if self._fetcher is None:
            self._fetcher = Consumer(
                self._kafka.confluent_config()
                | {"group.id": f"{self._settings.group_id}-refetch", "enable.auto.commit": False,
                   "enable.partition.eof": True, "auto.offset.reset": "earliest"}
            )
        found: dict[tuple[int, int], tuple[bytes | None, bytes]] = {}
        for partition, offsets in wanted.items():
            self.stats.refetches += 1
            last = max(offsets)
            self._fetcher.assign([TopicPartition(self._topics.spans, partition, min(offsets))])
            deadline = time.monotonic() + _FLUSH_TIMEOUT_S
            done = False
            while not done and time.monotonic() < deadline:
                for message in self._fetcher.consume(self._settings.batch_size, timeout=1.0):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            done = True
                            break
                        self._on_consume_error(message)
                        continue
                    offset = message.offset()
                    if offset in offsets and message.value() is not None:
                        found[(partition, offset)] = (message.key(), message.value())
                    if offset >= last:
                        done = True
                        break
            self._fetcher.unassign()
            logger.info("re-read %d span messages of partition %d for corrections", len(offsets), partition)
        return found

    def _flush_requests(self) -> None:
        for service_name, rows in self._pending_requests.items():
            self._feed.requests(service_name, rows)
        self._pending_requests.clear()

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.stats.delivery_failures += 1
            self._delivery_error = f"delivery to {message.topic()} failed: {error}"

    # --- commits and partition ownership ------------------------------------------------------

    def _flush_producer(self) -> None:
        remaining = self._producer.flush(_FLUSH_TIMEOUT_S)
        if remaining:
            raise EnricherError(f"{remaining} records still undelivered after {_FLUSH_TIMEOUT_S:.0f}s; not committing")
        if self._delivery_error is not None:
            raise EnricherError(f"{self._delivery_error}; not committing")

    def _commit_offsets(self, partitions: list[int]) -> list[TopicPartition]:
        held = self.engine.oldest_held_offsets()
        metadata = encode_frontier(self.engine.applied_key)
        offsets = []
        for partition in partitions:
            progress = self._span_progress.get(partition)
            offset = held.get(partition, progress.next_offset if progress else -1)
            if offset >= 0:
                offsets.append(TopicPartition(self._topics.spans, partition, offset, metadata=metadata))
        return offsets

    def _commit(self, partitions: list[int] | None = None) -> None:
        if self._consumer is None:
            return
        self._flush_requests()
        self._flush_producer()
        offsets = self._commit_offsets(self.stats.assigned if partitions is None else partitions)
        if not offsets:
            return
        if commit_quietly(self._consumer, offsets):
            self.stats.commits += 1

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = [tp.partition for tp in partitions]
        with contextlib.suppress(EnricherError):
            self._commit(revoked)
        self._forget(revoked)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget([tp.partition for tp in partitions])

    def _forget(self, partitions: list[int]) -> None:
        forget_partitions(self.engine, partitions)
        for partition in partitions:
            self._span_progress.pop(partition, None)
        self.stats.assigned = [p for p in self.stats.assigned if p not in set(partitions)]

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=60)
        previous: dict[int, tuple[int, ReloadKey | None, bool]] = {}
        for tp in committed:
            found, frontier = decode_frontier(tp.metadata)
            previous[tp.partition] = (tp.offset, frontier, found)
        if not self._assigned_once:
            # Start at the least advanced frontier any partition was committed with: no partition
            # then needs answers this worker could not give (see restore_partition).
            frontiers = [frontier for _, frontier, found in previous.values() if found]
            start = None
            if frontiers and all(frontier is not None for frontier in frontiers):
                start = min(frontiers)  # type: ignore[type-var]
            self.engine.apply_through(start)
            for arrival in self.engine.take_applied():
                self._feed.reload(arrival)
            self._assigned_once = True
        positions = []
        for tp in partitions:
            committed_offset, previous_frontier, _ = previous[tp.partition]
            position = self._restore(tp.partition, committed_offset, previous_frontier)
            positions.append(TopicPartition(self._topics.spans, tp.partition, position))
            self.stats.assigned.append(tp.partition)
        self.stats.assigned.sort()
        consumer.assign(positions)

    def _restore(self, partition: int, committed_offset: int, previous_frontier: ReloadKey | None) -> int:
        """Rebuild a partition's state from its log; return the offset to consume from next."""
        reader = Consumer(
            self._kafka.confluent_config()
            | {"group.id": f"{self._settings.group_id}-restore", "enable.auto.commit": False, "enable.partition.eof": False}
        )
        try:
            tp = TopicPartition(self._topics.spans, partition)
            low, high = reader.get_watermark_offsets(tp, timeout=30, cached=False)
            if committed_offset in (OFFSET_INVALID, -1) or committed_offset < low:
                committed_offset = low
            frontier = self.engine.applied_key
            now_ms = self._clock() // _NANOS_PER_MS
            anchors = [now_ms] + [key[0] for key in (frontier, previous_frontier) if key is not None]
            since_ms = min(anchors) - self._settings.correction_horizon_ms - 2 * self._settings.grace_period_ms
            since_ms -= self._settings.clock_skew_ms
            start = reader.offsets_for_times([TopicPartition(self._topics.spans, partition, max(since_ms, 0))], timeout=30)[0].offset
            if start < 0:
                start = high
            start = max(low, min(start, committed_offset))
            emitted: list[SpanArrival] = []
            unemitted: list[SpanArrival] = []
            progress = PartitionProgress(next_offset=start)
            if start < high:
                reader.assign([TopicPartition(self._topics.spans, partition, start)])
                while progress.next_offset < high:
                    # Ask for no more than is left: consume() waits its whole timeout for a batch it cannot fill.
                    wanted = max(1, min(self._settings.batch_size, high - progress.next_offset))
                    for message in reader.consume(wanted, timeout=1.0):
                        if message.error() is not None:
                            self._on_consume_error(message)
                            continue
                        arrival = self._arrival_ms(message, progress)
                        progress.consumed(message.offset(), arrival)
                        try:
                            span = self._decode_span(message, arrival)
                        except (DecodeError, InvalidRecordError) as error:
                            if message.offset() >= committed_offset:
                                self._dead_letter(message, error, stage="decode" if isinstance(error, DecodeError) else "validate")
                            continue
                        (emitted if message.offset() < committed_offset else unemitted).append(span)
            restored = restore_partition(
                timeline_factory=self._timeline_factory,
                answer_fn=self._answer_fn,
                grace_ms=self._settings.grace_period_ms,
                horizon_ms=self._settings.correction_horizon_ms,
                reloads=self._reloads.values(),
                emitted=emitted,
                previous_frontier=previous_frontier,
                unemitted=unemitted,
                frontier=frontier,
            )
            for span, answer, revision in restored.adopt:
                self.engine.adopt(span, answer, revision)
            for span in restored.hold:
                self.engine.add_span(span)
            self._publish(restored.emissions, first_appearance={(s.partition, s.offset) for s in unemitted})
            if self._settings.refetch_corrections:
                for span, _, _ in restored.adopt:
                    span.payload.key = span.payload.value = None
            self._span_progress[partition] = progress
            self.stats.restored_partitions += 1
            logger.info(
                "partition %d: committed %d, rebuilt %d answered + %d pending spans, republished %d",
                partition, committed_offset, len(emitted), len(unemitted), len(restored.emissions),
            )
            return max(progress.next_offset, start)
        finally:
            reader.close()
