"""OTLP out: ``spans.enriched`` republished as ``otlp_proto`` for any Collector's kafkareceiver (Tempo, Jaeger, a vendor).

Each batch of enriched spans becomes one ``ExportTraceServiceRequest`` per trace, keyed by its hex
trace id (as the kafkaexporter's ``partition_traces_by_id`` writes), with the versions as span
attributes (``reload.version.<component>`` …, :mod:`schemas.otlp`). A stage on
:class:`streams.stage.StageRuntime`, in its own consumer group: at least once (offsets committed after
delivery), so a restart may send spans again; a late reload's correction is sent too, as the same
span with a higher ``reload.enrichment_revision`` (keep the highest). Messages that do not decode are
skipped and counted (the sink dead-letters them); a trace too large for one message goes span by
span, and a span too large alone is counted and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from schemas.errors import DecodeError, DecodeErrorKind
from schemas.kafka_io import ensure_topics
from schemas.otlp import enriched_otlp_messages
from schemas.settings import KafkaSettings
from schemas.text import bounded_repr
from streams.stage import MessageTooLarge, Outbox, Position, RuntimeSettings, Stage, StageRuntime

logger = logging.getLogger(__name__)


@dataclass
class OtlpOutStats:
    spans: int = 0
    messages: int = 0
    undecodable: int = 0
    too_large: int = 0


class EnrichedOtlpPublisher(Stage):
    """Reads ``spans.enriched``, publishes ``otlp_proto`` to ``topic``."""

    name = "otlp-out"

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self._kafka = kafka
        self._topic = topic
        self._codec = kafka.codec("EnrichedSpan")
        self._positions: dict[tuple[str, int], int] = {}
        self.stats = OtlpOutStats()

    def topics(self) -> Sequence[str]:
        return (self._kafka.topics.spans_enriched,)

    def start(self, runtime: StageRuntime) -> None:
        ensure_topics(self._kafka.confluent_config(), [self._topic], partitions=self._kafka.partitions)

    def ingest(self, messages: Sequence[Message], arrivals: Sequence[int] | None, outbox: Outbox) -> None:
        spans = []
        for message in messages:
            self._positions[(message.topic(), message.partition())] = message.offset() + 1
            value = message.value()
            try:
                if value is None:
                    raise DecodeError(DecodeErrorKind.TRUNCATED, "empty message (tombstone)", "EnrichedSpan")
                spans.append(self._codec.decode(value))
            except DecodeError:
                self.stats.undecodable += 1
        for message in enriched_otlp_messages(spans):
            self._send(outbox, message.key, message.value, spans)
        self.stats.spans += len(spans)

    def _send(self, outbox: Outbox, key: bytes, value: bytes, spans: list[dict[str, Any]]) -> None:
        try:
            outbox.publish(self._topic, key, value)
            self.stats.messages += 1
        except MessageTooLarge:
            trace = [span for span in spans if span["trace_id"].encode() == key]
            if len(trace) <= 1:
                self.stats.too_large += 1
                logger.warning("a span of trace %s is too large for %s: not sent", bounded_repr(key, 40), self._topic)
                return
            for span in trace:  # one message per span instead
                for single in enriched_otlp_messages([span]):
                    self._send(outbox, single.key, single.value, [span])

    def snapshot(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Position]:
        return {key: Position(self._positions[key]) for key in partitions if key in self._positions}

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        for key in partitions:
            self._positions.pop(key, None)


def otlp_out_runtime(kafka: KafkaSettings, topic: str, *, group_id: str) -> StageRuntime:
    """OTLP out on its runtime, in consumer group ``group_id``."""
    return StageRuntime(
        kafka, EnrichedOtlpPublisher(kafka, topic), RuntimeSettings(group_id=group_id, batch_size=2_000, create_topics=False)
    )
