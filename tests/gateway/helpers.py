"""Shared test helpers: an SDK tracer provider wired to a registry, a movable clock."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.handle import ReloadRegistry
from gateway.processor import ReloadStampingSpanProcessor


class MovableClock:
    def __init__(self, now: int = 1_000_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, nanos: int) -> int:
        self.now += nanos
        return self.now


def instrumented(service: str = "llm-gateway", instance: str = "gw-1", **registry_kwargs):
    """(provider, registry, exporter, events): spans end up in ``exporter`` with the mid-flight mark."""
    events: list = []
    provider = TracerProvider(
        resource=Resource({"service.name": service, "service.instance.id": instance}), shutdown_on_exit=False
    )
    registry = ReloadRegistry(
        service, instance, tracer=provider.get_tracer("test"), listeners=[events.append], **registry_kwargs
    )
    exporter = InMemorySpanExporter()
    provider.add_span_processor(ReloadStampingSpanProcessor(registry, SimpleSpanProcessor(exporter)))
    return provider, registry, exporter, events
