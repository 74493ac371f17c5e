"""The OTel span processor that stamps pinned versions at start and the mid-flight mark at end."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from types import MappingProxyType

from opentelemetry import context as context_api
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from gateway.attributes import (
    GEN_AI_REQUEST_MODEL,
    MID_FLIGHT,
    MID_FLIGHT_COMPONENTS,
    MID_FLIGHT_RELOAD_IDS,
    version_stamp,
)
from gateway.baggage import upstream_attributes
from gateway.handle import RELOAD_ID_ATTRIBUTE, ReloadRegistry
from gateway.pinning import current_pin
from gateway.versioning import Snapshot

_LOG = logging.getLogger(__name__)
_STAMP_CACHE_SIZE = 256


class ReloadStampingSpanProcessor(SpanProcessor):
    """Stamps spans with component versions and forwards them, marked, to ``downstream``.

    At start: the versions pinned by the running request (``gateway.pinning.pin``), or the
    registry's current ones when no request is pinned. At end: ``reload.mid_flight`` (bool) and,
    when true, ``reload.mid_flight.reload_ids`` / ``.components`` — the successful reloads of this
    registry with start < effective ≤ end, the rule the enrichment stream applies.

    The SDK freezes a span's attributes before ``on_end``, so the mark is added to a copy handed
    to ``downstream`` (typically ``BatchSpanProcessor(KafkaSpanExporter(...))``): register this
    processor *instead of* the exporting one, not next to it. Never raises into the application.

    Args:
        registry: the handles of this service instance.
        downstream: receives every ended span with the mark; None = stamp only.
        copy_baggage: also copy upstream versions found in W3C baggage onto each span.
        exporter: flushed after ``downstream`` on :meth:`force_flush`, so a flush waits for
            delivery too (the SDK's ``BatchSpanProcessor.force_flush`` does not flush its exporter).
    """

    def __init__(
        self,
        registry: ReloadRegistry,
        downstream: SpanProcessor | None = None,
        *,
        copy_baggage: bool = True,
        exporter: SpanExporter | None = None,
    ) -> None:
        self.registry = registry
        self.downstream = downstream
        self.copy_baggage = copy_baggage
        self.exporter = exporter
        self._stamps: dict[tuple[int, ...], tuple[tuple[Snapshot, ...], dict[str, str]]] = {}

    def _stamp(self, snapshots: Mapping[str, Snapshot]) -> dict[str, str]:
        # Keyed by the identities of the snapshot objects; the cached entry keeps them alive, so an
        # id cannot be reused by another snapshot while its entry exists.
        key = tuple(map(id, snapshots.values()))
        entry = self._stamps.get(key)
        if entry is None:
            entry = (tuple(snapshots.values()), version_stamp(snapshots))
            if len(self._stamps) >= _STAMP_CACHE_SIZE:
                self._stamps.clear()
            self._stamps[key] = entry
        return entry[1]

    def on_start(self, span: Span, parent_context: context_api.Context | None = None) -> None:
        try:
            pinned = current_pin(self.registry)
            snapshots = pinned.snapshots if pinned is not None else self.registry.snapshots()
            attributes = dict(self._stamp(snapshots))
            if GEN_AI_REQUEST_MODEL in attributes and span.attributes and GEN_AI_REQUEST_MODEL in span.attributes:
                del attributes[GEN_AI_REQUEST_MODEL]  # the span names its own model
            if self.copy_baggage:
                attributes.update(upstream_attributes(parent_context))
            span.set_attributes(attributes)
        except Exception:  # noqa: BLE001 - instrumentation never breaks the application
            _LOG.exception("could not stamp versions on span %s", span.name)
        if self.downstream is not None:
            self.downstream.on_start(span, parent_context)

    def marked(self, span: ReadableSpan) -> ReadableSpan:
        """A copy of ``span`` with the mid-flight attributes."""
        attributes = dict(span.attributes or {})
        if span.start_time is not None and span.end_time is not None and RELOAD_ID_ATTRIBUTE not in attributes:
            reloads = self.registry.reloads_between(span.start_time, span.end_time)
            attributes[MID_FLIGHT] = bool(reloads)
            if reloads:
                attributes[MID_FLIGHT_RELOAD_IDS] = tuple(sorted({reload_id for _, reload_id, _ in reloads}))
                attributes[MID_FLIGHT_COMPONENTS] = tuple(sorted({component for _, _, component in reloads}))
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            # the values were already cleaned by the SDK; a read-only view avoids cleaning them twice
            attributes=MappingProxyType(attributes),
            events=span.events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def on_end(self, span: ReadableSpan) -> None:
        if self.downstream is None:
            return
        try:
            forwarded = self.marked(span)
        except Exception:  # noqa: BLE001 - forward unmarked rather than lose the span
            _LOG.exception("could not mark span %s", span.name)
            forwarded = span
        self.downstream.on_end(forwarded)

    def shutdown(self) -> None:
        if self.downstream is not None:
            self.downstream.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        flushed = True if self.downstream is None else self.downstream.force_flush(timeout_millis)
        if self.exporter is not None:
            remaining_millis = max(0, int((deadline - time.monotonic()) * 1000))
            flushed = self.exporter.force_flush(remaining_millis) and flushed
        return flushed


def kafka_span_processor(
    registry: ReloadRegistry, exporter: SpanExporter, *, copy_baggage: bool = True, **batch_options: int
) -> ReloadStampingSpanProcessor:
    """The usual wiring: stamping → ``BatchSpanProcessor(exporter, **batch_options)``, flushes reaching the exporter.

    ``provider.add_span_processor(kafka_span_processor(registry, KafkaSpanExporter(kafka)))``.
    """
    return ReloadStampingSpanProcessor(
        registry, BatchSpanProcessor(exporter, **batch_options), copy_baggage=copy_baggage, exporter=exporter
    )
