"""The OTel span exporter that writes contract Span records (Avro) to the spans topic."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from gateway.convert import span_record
from gateway.delivery import DeliveryStats, make_producer
from gateway.redaction import Redactor
from gateway.settings import GatewaySettings
from schemas.errors import ReloadtraceError
from schemas.records import validate_span
from schemas.settings import KafkaSettings

_LOG = logging.getLogger(__name__)


class KafkaSpanExporter(SpanExporter):
    """Writes each span as an Avro ``Span`` keyed by trace_id; use it behind a ``BatchSpanProcessor``.

    Guarantees: never raises into the application; every span handed in is counted in
    :attr:`stats` (delivered, delivery failed, dropped because the producer queue was full, dropped
    as invalid, or still in flight). Memory is bounded: the producer holds at most
    ``exporter_queue_max_messages`` undelivered messages, beyond that spans are dropped and
    counted. Not guaranteed: delivery (a broker down longer than ``exporter_message_timeout_ms``
    loses the spans, counted as ``delivery_failed``); order across trace ids.

    Args:
        kafka: broker, topics, framing.
        settings: redaction and producer limits (default: from the environment).
        topic: default ``kafka.topics.spans``.
        redactor: default ``settings.redactor()``.
        producer: a ready confluent-kafka producer (tests); default one built from the settings.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: GatewaySettings | None = None,
        *,
        topic: str | None = None,
        redactor: Redactor | None = None,
        producer: Any = None,
    ) -> None:
        self.settings = settings or GatewaySettings()
        self.topic = topic or kafka.topics.spans
        self.redactor = redactor or self.settings.redactor()
        self.stats = DeliveryStats()
        self._codec = kafka.codec("Span")
        self._producer = producer if producer is not None else make_producer(kafka, self.settings)
        self._shut_down = False

    def _produce_one(self, span: ReadableSpan) -> None:
        try:
            record = span_record(span, self.redactor)
            validate_span(record)
            value = self._codec.encode(record)
        except ReloadtraceError as error:
            self.stats.add("dropped_invalid")
            self.stats.last_error = str(error)
            _LOG.warning("span %s dropped: %s", span.name, error)
            return
        key = record["trace_id"].encode()
        for attempt in (0, 1):
            try:
                self._producer.produce(self.topic, key=key, value=value, on_delivery=self.stats.on_delivery)
                self.stats.add("produced")
                return
            except BufferError:
                if attempt == 0:
                    self._producer.poll(0)  # serve delivery reports, which may free room
        self.stats.add("dropped_queue_full")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Hand the batch to the producer; FAILURE when any span of it was dropped (never raises)."""
        if self._shut_down:
            self.stats.add("dropped_after_shutdown", len(spans))
            return SpanExportResult.FAILURE
        dropped_before = self.stats.dropped_queue_full + self.stats.dropped_invalid
        try:
            for span in spans:
                self._produce_one(span)
            self._producer.poll(0)
        except Exception as error:  # noqa: BLE001 - an exporter must never raise into the SDK/app
            self.stats.last_error = repr(error)
            _LOG.exception("span export failed")
            return SpanExportResult.FAILURE
        dropped_now = self.stats.dropped_queue_full + self.stats.dropped_invalid
        return SpanExportResult.SUCCESS if dropped_now == dropped_before else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait up to the timeout for every produced span's delivery report; True when none is left."""
        try:
            return self._producer.flush(timeout_millis / 1000) == 0
        except Exception:  # noqa: BLE001
            _LOG.exception("flush failed")
            return False

    def shutdown(self) -> None:
        """Flush for at most ``exporter_flush_timeout_ms``; later exports are dropped and counted."""
        if self._shut_down:
            return
        self._shut_down = True
        self.force_flush(self.settings.exporter_flush_timeout_ms)
