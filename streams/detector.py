"""The detector stage: the request feed in, Anomaly records (and every look, as a ReloadVerdict) out.

Reads the ``requests-by-service`` feed (:mod:`streams.request_feed`), keyed by service so one
partition sees every request of a service, into one pure core per partition
(:class:`streams.detection.RegressionDetector`). A partition's event time is the least watermark
of every span partition the enricher reported for it; a look at ``T + L`` is taken once it passes.

Guarantees (on :class:`streams.stage.StageRuntime`):
    * Exact: looks wait for the enricher's watermarks, so the streaming anomalies equal
      ``detect_offline`` of the same requests whatever the chunking, order or restarts.
    * At least once: offsets are committed after the anomalies of the looks before them are
      delivered; a restart re-reads the retention window before the commit, replays the looks due
      by the committed event time silently and goes on (same ``anomaly_id`` and severity).
    * Malformed feed messages are dead-lettered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import InvalidRecordError, ReloadtraceError
from schemas.records import Anomaly
from schemas.settings import KafkaSettings
from schemas.text import bounded_repr
from streams.detection import DetectionSettings, Look, RegressionDetector
from streams.request_feed import AppliedReload, Requests, Watermarks, parse
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
from streams.verdicts import verdict_record

logger = logging.getLogger(__name__)

_NANOS_PER_MS = 1_000_000
_NEVER = -(2**63)

_DEFAULT_GROUP_ID = "reloadtrace-detector"
_DEFAULT_BATCH_SIZE = 1_000
_DEFAULT_POLL_TIMEOUT_MS = 100
_DEFAULT_COMMIT_INTERVAL_MS = 1_000
_DEFAULT_PRUNE_INTERVAL_MS = 10_000
_DEFAULT_CLOCK_SKEW_MS = 60_000
_DEFAULT_SESSION_TIMEOUT_MS = 45_000


class DetectorError(ReloadtraceError):
    """The detector cannot go on safely."""


class DetectorSettings(BaseSettings):
    """Kafka-side settings of the streaming detector; environment ``RELOADTRACE_DETECTOR_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="RELOADTRACE_DETECTOR_", extra="ignore")

    group_id: str = Field(default=_DEFAULT_GROUP_ID, min_length=1, description="Consumer group of the detectors")
    batch_size: int = Field(default=_DEFAULT_BATCH_SIZE, ge=1, description="Messages consumed per batch")
    poll_timeout_ms: int = Field(default=_DEFAULT_POLL_TIMEOUT_MS, ge=1, description="Longest wait for a batch")
    commit_interval_ms: int = Field(default=_DEFAULT_COMMIT_INTERVAL_MS, ge=10, description="Offset commit period")
    prune_interval_ms: int = Field(default=_DEFAULT_PRUNE_INTERVAL_MS, ge=10, description="How often old requests are dropped")
    clock_skew_ms: int = Field(
        default=_DEFAULT_CLOCK_SKEW_MS, ge=0, description="Margin between event time and broker time when seeking back"
    )
    session_timeout_ms: int = Field(
        default=_DEFAULT_SESSION_TIMEOUT_MS, ge=1_000, description="How long a crashed detector keeps its partitions"
    )
    publish_verdicts: bool = Field(default=True, description="Publish every look as a ReloadVerdict (reload.verdicts)")


@dataclass
class DetectorStats:
    messages: int = 0
    requests: int = 0
    reloads: int = 0
    watermarks: int = 0
    anomalies: int = 0
    looks: int = 0
    dead_letters: int = 0
    unpublishable: int = 0
    """Anomalies or verdicts too large for their topic (names of hundreds of kB): logged, not published."""
    restored_partitions: int = 0
    suppressed_on_restore: int = 0
    late_reloads: int = 0
    """Reloads that reached the detector after its event time had passed their effective time."""


@dataclass
class _Partition:
    core: RegressionDetector
    next_offset: int = -1
    event_time: int = _NEVER
    """Least watermark over every span partition: every request started before it is in ``core``."""
    sources: int = 0
    """How many span partitions feed the enricher (0 until a watermark message says)."""
    watermarks: dict[int, int] = field(default_factory=dict)


def runtime_settings(settings: DetectorSettings) -> RuntimeSettings:
    return RuntimeSettings(
        group_id=settings.group_id,
        session_timeout_ms=settings.session_timeout_ms,
        batch_size=settings.batch_size,
        poll_timeout_ms=settings.poll_timeout_ms,
        commit_interval_ms=settings.commit_interval_ms,
        producer_config={"compression.type": "none"},
    )


class StreamingDetector(Stage):
    """Regression detection for the feed partitions this member is assigned.

    Args:
        kafka: broker, topics and framing.
        detection: thresholds and look schedule of the core.
        settings: consumer group, batching.
    """

    name = "detector"

    def __init__(
        self,
        kafka: KafkaSettings,
        detection: DetectionSettings,
        settings: DetectorSettings | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kafka = kafka
        self._detection = detection
        self._settings = settings or DetectorSettings()
        self._topics = kafka.topics
        self._monotonic = monotonic
        self._anomaly_codec = kafka.codec("Anomaly")
        self._verdict_codec = kafka.codec("ReloadVerdict") if self._settings.publish_verdicts else None
        self._partitions: dict[int, _Partition] = {}
        self._last_prune = monotonic()
        self.stats = DetectorStats()

    def topics(self) -> Sequence[str]:
        return (self._topics.requests_by_service,)

    def event_time(self, partition: int) -> int:
        """The event time of an assigned feed partition (``-2**63`` when unknown)."""
        found = self._partitions.get(partition)
        return found.event_time if found is not None else _NEVER

    # --- input -------------------------------------------------------------------------------

    def ingest(self, messages: Sequence[Message], arrivals: Sequence[int] | None, outbox: Outbox) -> None:
        for message in messages:
            partition = self._partitions.get(message.partition())
            if partition is None:
                continue
            self.stats.messages += 1
            try:
                self._apply(partition, parse(message.value()))
            except InvalidRecordError as error:
                outbox.reject(message, error, stage="detect")
                self.stats.dead_letters += 1
            partition.next_offset = message.offset() + 1

    def _apply(self, partition: _Partition, item: Requests | AppliedReload | Watermarks) -> None:
        if isinstance(item, Requests):
            partition.core.add_rows(item.service_name, item.rows)
            self.stats.requests += len(item.rows)
        elif isinstance(item, AppliedReload):
            if item.reload.effective_time_unix_nano < partition.event_time:
                self.stats.late_reloads += 1
            if partition.core.add_reload(item.reload):
                self.stats.reloads += 1
        else:
            self.stats.watermarks += 1
            if item.partitions != partition.sources:
                partition.sources = item.partitions
                partition.watermarks = {p: t for p, t in partition.watermarks.items() if p < item.partitions}
            for source, time_unix_nano in item.times.items():
                if time_unix_nano > partition.watermarks.get(source, _NEVER):
                    partition.watermarks[source] = time_unix_nano

    # --- output ------------------------------------------------------------------------------

    def advance(self, outbox: Outbox) -> None:
        prune = self._monotonic() - self._last_prune >= self._settings.prune_interval_ms / 1000
        for partition in self._partitions.values():
            if partition.sources and len(partition.watermarks) == partition.sources:
                event_time = min(partition.watermarks.values())
                if event_time > partition.event_time:
                    partition.event_time = event_time
                    self._publish(partition.core.advance(event_time), partition.core.take_looks(), outbox)
            if prune and partition.event_time != _NEVER:
                partition.core.prune(partition.event_time)
        if prune:
            self._last_prune = self._monotonic()

    def _publish(self, anomalies: list[Anomaly], looks: list[Look], outbox: Outbox) -> None:
        for anomaly in anomalies:
            value = self._anomaly_codec.encode(anomaly.to_dict())
            if self._try_publish(outbox, self._topics.reload_anomalies, anomaly.service_name.encode(), value):
                self.stats.anomalies += 1
        self.stats.looks += len(looks)
        if self._verdict_codec is not None:
            for look in looks:
                record = self._verdict_codec.encode(verdict_record(look))
                self._try_publish(outbox, self._topics.reload_verdicts, look.reload.reload_id.encode(), record)

    def _try_publish(self, outbox: Outbox, topic: str, key: bytes, value: bytes) -> bool:
        try:
            outbox.publish(topic, key, value)
            return True
        except MessageTooLarge as error:
            self.stats.unpublishable += 1
            logger.error("a record of reload key %s is not published: %s", bounded_repr(key, 80), error)
            return False

    # --- commits and partition ownership ------------------------------------------------------

    def snapshot(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Position]:
        positions = {}
        for topic, number in partitions:
            partition = self._partitions.get(number)
            if partition is not None and partition.next_offset >= 0:
                state = {"event_time": partition.event_time if partition.event_time != _NEVER else None, "sources": partition.sources}
                positions[(topic, number)] = Position(partition.next_offset, state)
        return positions

    def upgrade_state(self, metadata: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Version 1 metadata: ``{"v": 1, "progress": P}``."""
        progress = metadata.get("progress")
        return {"event_time": progress, "sources": 0} if metadata.get("v") == 1 and isinstance(progress, int) else None

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        for _, number in partitions:
            self._partitions.pop(number, None)

    def assigned(self, partitions: Sequence[Committed]) -> dict[tuple[str, int], RestorePlan]:
        plans = {}
        for entry in partitions:
            partition = self._partitions[entry.partition] = _Partition(RegressionDetector(self._detection), next_offset=entry.offset)
            state = entry.state or {}
            event_time, sources = state.get("event_time"), state.get("sources")
            if not isinstance(event_time, int) or event_time == _NEVER or entry.offset <= entry.low:
                continue
            partition.event_time = event_time
            if isinstance(sources, int) and sources > 0:
                partition.sources = sources
                partition.watermarks = dict.fromkeys(range(sources), event_time)
            since_ms = event_time // _NANOS_PER_MS - self._detection.retention_ms - self._settings.clock_skew_ms
            plans[(entry.topic, entry.partition)] = RestorePlan(until_offset=entry.offset, since_time_ms=since_ms)
        return plans

    def restore_messages(
        self, partition: tuple[str, int], messages: Sequence[Message], arrivals: Sequence[int], outbox: Outbox
    ) -> None:
        found = self._partitions.get(partition[1])
        if found is None:
            return
        for message in messages:
            try:
                item = parse(message.value())
            except InvalidRecordError:
                continue  # dead-lettered by the member that read it first
            if not isinstance(item, Watermarks):
                self._apply(found, item)

    def restored(self, partition: tuple[str, int], committed: Committed, position: int, outbox: Outbox) -> None:
        found = self._partitions.get(partition[1])
        if found is None:
            return
        # The looks due by the committed event time were published before that commit: replay them silently.
        self.stats.suppressed_on_restore += len(found.core.advance(found.event_time))
        found.core.take_looks()
        found.next_offset = position
        self.stats.restored_partitions += 1


def detector_runtime(
    kafka: KafkaSettings, detection: DetectionSettings | None = None, settings: DetectorSettings | None = None
) -> StageRuntime:
    """The detector on its runtime."""
    settings = settings or DetectorSettings()
    stage = StreamingDetector(kafka, detection or DetectionSettings(), settings)
    return StageRuntime(kafka, stage, runtime_settings(settings))
