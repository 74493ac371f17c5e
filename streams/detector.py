"""The Kafka edge of regression detection: requests and reloads by service in, Anomaly records out.

Reads the internal ``requests-by-service`` topic that the enricher fills (JSON, keyed by service,
so one consumer sees every request of a service however many span partitions and workers there
are), feeds the pure core (:class:`streams.detection.RegressionDetector`, one per partition),
and publishes Anomaly records (Avro, the deployment's framing) to ``reload.anomalies`` keyed by
``service_name``.

Why a thread with batched confluent-kafka clients rather than a Faust agent: the commit must come
strictly after the anomalies of the looks it covers are delivered, and a restart rebuilds window
state by seeking back in time (``offsets_for_times``) and carries the event-time progress in the
commit metadata; confluent-kafka gives both directly (as in :mod:`streams.enricher`), while the
statistics (scipy) would block Faust's event loop. The input rate is low (one message per service
per enricher flush), so batching is for commit cost, not throughput.

Event-time progress: the least advanced assigned partition's latest request start; a partition
read to its end does not hold the others back; when every partition is read to its end and no
message has come for ``idle_progress_ms``, progress follows the wall clock (quiet services are
still judged) — but only once the enricher's group (``upstream_group_id``; the worker sets it) has
committed every span of the spans topic. Silence from an enricher that is behind (restoring or
catching up on a backlog) or stopped is not quiet traffic: the looks wait for its requests instead
of being judged on a window it has not sent yet. A look at ``T + L`` is taken once progress
passes ``T + L + look_allowance_ms``.

Guarantees:
    * At least once: input offsets are committed only after every anomaly emitted from the
      messages before them is delivered; a crash re-emits records with the same ``anomaly_id``
      and severity (consumers dedupe by that pair).
    * Restart: the commit metadata holds the progress P of the last advance; a new owner reads the
      partition again from ``P - retention`` (broker timestamps) to the committed offset, replays
      the looks due by P silently (they were delivered before the commit) and goes on.
    * Undecodable or malformed messages go to the dead-letter topic; their offsets are committed.

Non-guarantees: a request later than ``look_allowance_ms`` of event time misses the looks already
taken; reload-health history (durations, failure streaks) after a restart covers only the
rebuilt retention span.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import DecodeError, InvalidRecordError, ReloadtraceError
from schemas.dead_letters import DeadLetterBuilder
from schemas.records import ReloadEvent
from schemas.settings import KafkaSettings
from schemas.text import bounded_repr
from streams.detection import DetectionSettings, RegressionDetector
from streams.kafka_io import (
    commit_quietly,
    dead_letter_builder,
    group_consumer_config,
    is_too_large,
    produce_dead_letter,
    produce_waiting,
    topic_lag,
)

logger = logging.getLogger(__name__)

_NANOS_PER_MS = 1_000_000
_FLUSH_TIMEOUT_S = 60.0
_METADATA_VERSION = 1
_NEVER = -(2**63)

_DEFAULT_GROUP_ID = "reloadtrace-detector"
_DEFAULT_BATCH_SIZE = 1_000
_DEFAULT_POLL_TIMEOUT_MS = 100
_DEFAULT_COMMIT_INTERVAL_MS = 1_000
_DEFAULT_WATERMARK_INTERVAL_MS = 500
_DEFAULT_IDLE_PROGRESS_MS = 5_000
_DEFAULT_PRUNE_INTERVAL_MS = 10_000
_DEFAULT_CLOCK_SKEW_MS = 60_000
_DEFAULT_SESSION_TIMEOUT_MS = 45_000


class DetectorError(ReloadtraceError):
    """The detector cannot go on safely (anomaly deliveries failing)."""


class DetectorSettings(BaseSettings):
    """Kafka-side settings of the streaming detector; environment ``RELOADTRACE_DETECTOR_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="RELOADTRACE_DETECTOR_", extra="ignore")

    group_id: str = Field(default=_DEFAULT_GROUP_ID, min_length=1, description="Consumer group of the detectors")
    batch_size: int = Field(default=_DEFAULT_BATCH_SIZE, ge=1, description="Messages consumed per batch")
    poll_timeout_ms: int = Field(default=_DEFAULT_POLL_TIMEOUT_MS, ge=1, description="Longest wait for a batch")
    commit_interval_ms: int = Field(default=_DEFAULT_COMMIT_INTERVAL_MS, ge=10, description="Offset commit period")
    watermark_interval_ms: int = Field(
        default=_DEFAULT_WATERMARK_INTERVAL_MS, ge=10, description="How often high watermarks are queried"
    )
    idle_progress_ms: int = Field(
        default=_DEFAULT_IDLE_PROGRESS_MS, ge=0, description="Idle time (all read) after which progress follows the wall clock"
    )
    prune_interval_ms: int = Field(default=_DEFAULT_PRUNE_INTERVAL_MS, ge=10, description="How often old requests are dropped")
    clock_skew_ms: int = Field(
        default=_DEFAULT_CLOCK_SKEW_MS, ge=0, description="Margin between event time and broker time when seeking back"
    )
    session_timeout_ms: int = Field(
        default=_DEFAULT_SESSION_TIMEOUT_MS, ge=1_000, description="How long a crashed detector keeps its partitions"
    )
    upstream_group_id: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Consumer group of the enricher that fills requests-by-service: idle progress follows the wall clock"
            " only once it has committed every span (None: do not wait for it)"
        ),
    )



@dataclass
class DetectorStats:
    messages: int = 0
    requests: int = 0
    reloads: int = 0
    anomalies: int = 0
    dead_letters: int = 0
    unpublishable: int = 0
    """Anomalies too large for the anomalies topic (logged, not published)."""
    commits: int = 0
    restored_partitions: int = 0
    suppressed_on_restore: int = 0
    upstream_lag: int = -1
    """Spans the enricher had not committed at the last idle check (-1: not checked)."""
    assigned: list[int] = field(default_factory=list)


@dataclass
class _Partition:
    core: RegressionDetector
    next_offset: int = -1
    high_watermark: int = -1
    latest_start_unix_nano: int = _NEVER

    @property
    def caught_up(self) -> bool:
        return self.high_watermark >= 0 and self.next_offset >= self.high_watermark


def encode_progress(progress_unix_nano: int) -> str:
    """Commit metadata: the event-time progress of the last advance."""
    return orjson.dumps({"v": _METADATA_VERSION, "progress": progress_unix_nano}).decode()


def decode_progress(metadata: str | None) -> int | None:
    """The progress stored in commit metadata, or None when absent or unreadable."""
    if not metadata:
        return None
    try:
        value = orjson.loads(metadata)["progress"]
        return int(value)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        logger.warning("ignoring unreadable commit metadata %s", bounded_repr(metadata))
        return None


def parse_message(value: bytes | None) -> tuple[str, list[tuple[str, int, int, bool, str]] | None, ReloadEvent | None]:
    """(service_name, request rows or None, reload or None) of one ``requests-by-service`` message.

    Raises:
        InvalidRecordError: not JSON, or not one of the two message shapes, or a malformed row.
    """
    if value is None:
        raise InvalidRecordError("empty message (tombstone)")
    try:
        message = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise InvalidRecordError(f"not JSON: {error}") from error
    if not isinstance(message, dict) or not isinstance(message.get("service_name"), str) or not message["service_name"]:
        raise InvalidRecordError("a message needs a non-empty service_name", "service_name")
    service = message["service_name"]
    if "requests" in message:
        rows = message["requests"]
        if not isinstance(rows, list):
            raise InvalidRecordError("requests must be a list", "requests")
        parsed = []
        for row in rows:
            if (
                not isinstance(row, list)
                or len(row) != 5
                or not isinstance(row[0], str)
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in row[1:3])
                or not isinstance(row[3], bool)
                or not isinstance(row[4], str)
                or row[2] < row[1]
            ):
                raise InvalidRecordError(f"request row must be [instance, start_ns, end_ns >= start, is_error, kind]: {bounded_repr(row)}", "requests")
            parsed.append((row[0], row[1], row[2], row[3], row[4]))
        return service, parsed, None
    if "reload" in message:
        if not isinstance(message["reload"], dict):
            raise InvalidRecordError("reload must be a record", "reload")
        reload = ReloadEvent.from_dict(message["reload"])
        if reload.service_name != service:
            raise InvalidRecordError(f"reload of {reload.service_name} under key {service}", "service_name")
        return service, None, reload
    raise InvalidRecordError("a message holds either requests or a reload")


class StreamingDetector:
    """Runs regression detection for the ``requests-by-service`` partitions this worker is assigned.

    Args:
        kafka: broker, topics and framing.
        detection: thresholds and look schedule of the core.
        settings: consumer group, batching, idle progress.
        wall_clock_ns: wall clock for idle progress and dead-letter times (injectable in tests).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        detection: DetectionSettings | None = None,
        settings: DetectorSettings | None = None,
        *,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._kafka = kafka
        self._detection = detection or DetectionSettings()
        self._settings = settings or DetectorSettings()
        self._topics = kafka.topics
        self._clock = wall_clock_ns
        self._anomaly_codec = kafka.codec("Anomaly")
        self._dead_letters = DeadLetterBuilder(kafka.codec("DeadLetter"))
        self._partitions: dict[int, _Partition] = {}
        self._progress = _NEVER
        self._delivery_error: str | None = None
        self._last_message_monotonic = time.monotonic()
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._upstream: Consumer | None = None
        """Asks for the lag of ``upstream_group_id`` (its group.id; it never joins the group)."""
        self._upstream_checked = -float("inf")
        self._upstream_wait_logged = False
        self.stats = DetectorStats()
        self.ready = threading.Event()

    @property
    def progress_unix_nano(self) -> int:
        return self._progress

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume, judge and publish until ``stop`` is set; commit what is safe on the way out.

        Raises:
            DetectorError: anomaly deliveries failed; nothing after the last commit is acknowledged.
        """
        base = self._kafka.confluent_config()
        self._dead_letters = dead_letter_builder(self._kafka)
        self._producer = Producer(base | {"enable.idempotence": True, "linger.ms": 5, "message.timeout.ms": 120_000})
        self._consumer = Consumer(base | group_consumer_config(self._settings.group_id, self._settings.session_timeout_ms))
        if self._settings.upstream_group_id is not None:
            self._upstream = Consumer(base | {"group.id": self._settings.upstream_group_id, "enable.auto.commit": False})
        try:
            self._consumer.subscribe(
                [self._topics.requests_by_service], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            last_commit = last_watermarks = last_prune = time.monotonic()
            self.ready.set()
            while not stop.is_set():
                consumed = self._consume_once()
                now = time.monotonic()
                if now - last_watermarks >= self._settings.watermark_interval_ms / 1000:
                    self._observe_watermarks()
                    last_watermarks = now
                self._advance(idle=not consumed)
                if now - last_prune >= self._settings.prune_interval_ms / 1000:
                    for partition in self._partitions.values():
                        partition.core.prune(self._progress)
                    last_prune = now
                if now - last_commit >= self._settings.commit_interval_ms / 1000:
                    self._commit()
                    last_commit = now
            self._commit()
        finally:
            with contextlib.suppress(Exception):
                self._producer.flush(_FLUSH_TIMEOUT_S)
            for consumer in (self._consumer, self._upstream):
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        consumer.close()

    # --- input -------------------------------------------------------------------------------

    def _consume_once(self) -> bool:
        messages = self._consumer.consume(self._settings.batch_size, timeout=self._settings.poll_timeout_ms / 1000)
        for message in messages:
            if message.error() is not None:
                self._on_consume_error(message)
                continue
            partition = self._partitions.get(message.partition())
            if partition is None:  # revoked meanwhile
                continue
            self._ingest(partition, message)
            partition.next_offset = message.offset() + 1
        self._producer.poll(0)
        if messages:
            self._last_message_monotonic = time.monotonic()
        return bool(messages)

    def _ingest(self, partition: _Partition, message: Message) -> None:
        self.stats.messages += 1
        try:
            service, rows, reload = parse_message(message.value())
        except InvalidRecordError as error:
            self._dead_letter(message, error)
            return
        if rows is not None:
            partition.core.add_rows(service, rows)
            self.stats.requests += len(rows)
            for row in rows:
                partition.latest_start_unix_nano = max(partition.latest_start_unix_nano, row[1])
        elif reload is not None:
            partition.core.add_reload(reload)
            self.stats.reloads += 1

    def _on_consume_error(self, message: Message) -> None:
        error = message.error()
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise DetectorError(f"fatal consumer error: {error}")
        logger.warning("consumer error (retried by the client): %s", error)

    def _dead_letter(self, message: Message, error: Exception) -> None:
        produce_dead_letter(
            self._producer, self._topics.dead_letter, self._dead_letters, self._on_delivery,
            source_topic=message.topic(), source_partition=message.partition(), source_offset=message.offset(),
            raw_key=message.key(), raw_value=message.value(),
            error_kind=error.kind.value if isinstance(error, DecodeError) else "invalid_record",
            error=str(error), stage="detect", now_unix_nano=self._clock(),
        )
        self.stats.dead_letters += 1

    # --- progress and output -----------------------------------------------------------------

    def _observe_watermarks(self) -> None:
        """High watermarks as of the last fetch response (cached: a broker query per partition would
        queue behind the consumer's long-poll fetches and take up to ``fetch.wait.max.ms`` each)."""
        for number, partition in self._partitions.items():
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self._topics.requests_by_service, number), cached=True
                )
            except Exception as error:  # noqa: BLE001 - a failed query only delays progress
                logger.warning("high-watermark query for partition %d failed: %s", number, error)
                high = -1
            partition.high_watermark = high if high is not None and high >= 0 else -1

    def _event_progress(self) -> int:
        behind = [p.latest_start_unix_nano for p in self._partitions.values() if not p.caught_up]
        if behind:
            return min(behind)
        seen = [p.latest_start_unix_nano for p in self._partitions.values()]
        return max(seen, default=_NEVER)

    def _advance(self, *, idle: bool) -> None:
        if not self._partitions:
            return
        progress = self._event_progress()
        all_read = all(p.caught_up for p in self._partitions.values())
        idle_for = time.monotonic() - self._last_message_monotonic
        if idle and all_read and idle_for >= self._settings.idle_progress_ms / 1000 and self._upstream_caught_up():
            progress = max(progress, self._clock())
        if progress <= self._progress:
            return
        self._progress = progress
        for partition in self._partitions.values():
            for anomaly in partition.core.advance(progress):
                try:
                    self._produce(
                        self._topics.reload_anomalies, anomaly["service_name"].encode(), self._anomaly_codec.encode(anomaly)
                    )
                except KafkaException as error:  # names of hundreds of kB: the anomaly cannot be published
                    if not is_too_large(error):
                        raise
                    self.stats.unpublishable += 1
                    logger.error("anomaly %s is too large to publish: %s", bounded_repr(anomaly["anomaly_id"], 80), error)
                    continue
                self.stats.anomalies += 1

    def _upstream_caught_up(self) -> bool:
        """Whether the enricher's group has committed every span (asked at most once per watermark interval).

        No upstream group configured: True. A failed query counts as not caught up (waiting is safe).
        """
        if self._upstream is None:
            return True
        now = time.monotonic()
        if now - self._upstream_checked < self._settings.watermark_interval_ms / 1000:
            return self.stats.upstream_lag == 0
        self._upstream_checked = now
        try:
            lag = topic_lag(self._upstream, self._topics.spans, timeout_s=5)
        except Exception as error:  # noqa: BLE001 - any failure only delays idle progress
            logger.warning("cannot read the lag of the enricher group %s: %s", self._settings.upstream_group_id, error)
            lag = None
        lag = -1 if lag is None else lag  # unknown (the topic is unreadable, or the query failed)
        if lag != 0 and not self._upstream_wait_logged:  # once per wait, not once per check
            logger.info(
                "idle: progress waits for the enricher group %s (%s spans not committed)",
                self._settings.upstream_group_id, lag if lag >= 0 else "unknown",
            )
        self._upstream_wait_logged = lag != 0
        self.stats.upstream_lag = lag
        return lag == 0

    def _produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        produce_waiting(self._producer, topic, key, value, self._on_delivery)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._delivery_error = f"delivery to {message.topic()} failed: {error}"

    # --- commits and partition ownership ------------------------------------------------------

    def _commit(self, numbers: list[int] | None = None) -> None:
        if self._consumer is None:
            return
        remaining = self._producer.flush(_FLUSH_TIMEOUT_S)
        if remaining:
            raise DetectorError(f"{remaining} anomalies still undelivered after {_FLUSH_TIMEOUT_S:.0f}s; not committing")
        if self._delivery_error is not None:
            raise DetectorError(f"{self._delivery_error}; not committing")
        metadata = encode_progress(self._progress)
        offsets = [
            TopicPartition(self._topics.requests_by_service, number, partition.next_offset, metadata=metadata)
            for number, partition in self._partitions.items()
            if (numbers is None or number in numbers) and partition.next_offset >= 0
        ]
        if not offsets:
            return
        if commit_quietly(self._consumer, offsets):
            self.stats.commits += 1

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        with contextlib.suppress(DetectorError):
            self._commit(numbers)
        self._forget(numbers)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget([tp.partition for tp in partitions])

    def _forget(self, numbers: list[int]) -> None:
        for number in numbers:
            self._partitions.pop(number, None)
        self.stats.assigned = sorted(self._partitions)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=60)
        positions = []
        for tp in committed:
            partition = self._restore(tp.partition, tp.offset, decode_progress(tp.metadata))
            self._partitions[tp.partition] = partition
            positions.append(TopicPartition(self._topics.requests_by_service, tp.partition, partition.next_offset))
        self.stats.assigned = sorted(self._partitions)
        consumer.assign(positions)

    def _restore(self, number: int, committed_offset: int, progress: int | None) -> _Partition:
        """Rebuild a partition's window state from its log; looks due by ``progress`` stay silent."""
        core = RegressionDetector(self._detection)
        reader = Consumer(
            self._kafka.confluent_config()
            | {"group.id": f"{self._settings.group_id}-restore", "enable.auto.commit": False, "enable.partition.eof": False}
        )
        try:
            tp = TopicPartition(self._topics.requests_by_service, number)
            low, _ = reader.get_watermark_offsets(tp, timeout=30, cached=False)
            if committed_offset in (OFFSET_INVALID, -1) or committed_offset < low:
                return _Partition(core, next_offset=low)
            partition = _Partition(core, next_offset=committed_offset)
            if progress is None:
                return partition
            since_ms = progress // _NANOS_PER_MS - self._detection.retention_ms - self._settings.clock_skew_ms
            start = reader.offsets_for_times([TopicPartition(tp.topic, number, max(since_ms, 0))], timeout=30)[0].offset
            start = low if start < 0 else max(low, min(start, committed_offset))
            if start < committed_offset:
                reader.assign([TopicPartition(tp.topic, number, start)])
                position, empty_polls = start, 0
                while position < committed_offset and empty_polls < 30:
                    messages = reader.consume(self._settings.batch_size, timeout=1.0)
                    empty_polls = 0 if messages else empty_polls + 1
                    for message in messages:
                        if message.error() is not None:
                            self._on_consume_error(message)
                            continue
                        if message.offset() >= committed_offset:
                            position = committed_offset
                            break
                        with contextlib.suppress(InvalidRecordError):
                            service, rows, reload = parse_message(message.value())
                            if rows is not None:
                                core.add_rows(service, rows)
                                partition.latest_start_unix_nano = max(
                                    [partition.latest_start_unix_nano, *(row[1] for row in rows)]
                                )
                            elif reload is not None:
                                core.add_reload(reload)
                        position = message.offset() + 1
                if position < committed_offset:
                    logger.warning("partition %d: log ended at %d before the committed offset %d", number, position, committed_offset)
            self.stats.suppressed_on_restore += len(core.advance(progress))
            self._progress = max(self._progress, progress)
            self.stats.restored_partitions += 1
            logger.info("partition %d: rebuilt from offset %d to %d (progress %d)", number, start, committed_offset, progress)
            return partition
        finally:
            reader.close()


def detector_runnable(
    kafka: KafkaSettings, detection: DetectionSettings | None = None, settings: DetectorSettings | None = None
) -> Callable[[threading.Event], None]:
    """A ``run(stop_event)`` callable for :class:`streams.app.ThreadService` (what the worker wires in)."""
    return StreamingDetector(kafka, detection, settings).run


