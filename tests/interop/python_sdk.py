"""Spans made by the real OpenTelemetry Python SDK, and a sender of them over OTLP/HTTP.

``record_traffic`` makes a small, varied set of finished spans (every attribute type, events,
links, trace_state, an error with an exception event, every kind, a gateway reload span of each
scope and outcome) with the SDK's in-memory exporter; ``send_otlp_http`` exports the same kind of
traffic through the SDK's own ``OTLPSpanExporter`` (http/protobuf) to a Collector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from gateway.handle import ReloadRegistry
from gateway.versioning import model_descriptor
from schemas.records import ReloadEvent

SERVICE = "checkout-gateway"
INSTANCE = "checkout-gateway-7"
BASE_TIME_UNIX_NANO = 1_764_547_200_000_000_000  # 2025-12-01T00:00:00Z
REMOTE_TRACE_STATE = TraceState([("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")])


@dataclass
class Traffic:
    """The spans one run made, in the order they ended, and the reload events its registry emitted."""

    spans: list[ReadableSpan] = field(default_factory=list)
    reloads: list[ReloadEvent] = field(default_factory=list)


class _Clock:
    """Event time for the registry: 1 ms steps from the base time."""

    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1_000_000
        return self.now


def _record(tracer: trace.Tracer, registry: ReloadRegistry, clock: _Clock) -> None:
    remote = SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=REMOTE_TRACE_STATE,
    )
    parent_context = trace.set_span_in_context(NonRecordingSpan(remote))
    attributes = {
        "http.route": "/v1/chat", "http.response.status_code": 200, "gen_ai.request.temperature": 0.7,
        "gen_ai.request.stream": True, "tags": ("a", "b"), "ports": (80, 443), "weights": (0.5, 1.0),
        "flags": (True, False), "unicode": "grüße ✓",
    }
    start = clock()
    server = tracer.start_span("POST /v1/chat", context=parent_context, kind=SpanKind.SERVER, attributes=attributes,
                               start_time=start)
    server.add_event("request.received", {"bytes": 812, "route": "/v1/chat"}, timestamp=clock())
    child_context = trace.set_span_in_context(server)
    client = tracer.start_span(
        "chat gpt-4o", context=child_context, kind=SpanKind.CLIENT, start_time=clock(),
        links=[Link(remote, {"link.reason": "retry-of"}), Link(server.get_span_context())],
    )
    error = TimeoutError("upstream took too long")
    client.record_exception(error, timestamp=clock())
    client.set_status(Status(StatusCode.ERROR, "upstream timeout"))
    client.end(end_time=clock())
    for kind in (SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.INTERNAL):
        tracer.start_span(f"work {kind.name.lower()}", context=child_context, kind=kind, start_time=clock()).end(
            end_time=clock()
        )
    server.set_status(Status(StatusCode.OK))
    server.end(end_time=clock())
    # Reload spans of the gateway: service-wide, instance-scoped (a canary), FAILED, with a model context.
    registry.register("config", {"timeout_ms": 100})
    registry.register("model", model_descriptor("gpt-4o", "2024-08-06", parameters={"temperature": 0.2}))
    registry["config"].reload({"timeout_ms": 250}, source="deploy-pipeline")
    registry["config"].reload({"timeout_ms": 300}, source="operator", instance_scoped=True)
    registry["model"].reload(model_descriptor("gpt-4o", "2024-11-20", parameters={"temperature": 0.3}),
                             source="consul-watch")

    def reject(value: object) -> bool:
        return False

    registry.register("routing_rules", {"routes": ["a"]}, validator=reject)
    registry["routing_rules"].reload({"routes": ["a", "b"]}, source="operator")


def tracer_provider(exporter: SpanExporter, *, span_limits: SpanLimits | None = None) -> TracerProvider:
    """A provider of the test service's resource exporting every span as it ends."""
    resource = Resource.create(
        {"service.name": SERVICE, "service.instance.id": INSTANCE, "deployment.environment.name": "test",
         "service.version": "1.4.2"}
    )
    provider = TracerProvider(resource=resource, span_limits=span_limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _traffic_through(exporter: SpanExporter, *, start_unix_nano: int, span_limits: SpanLimits | None) -> Traffic:
    provider = tracer_provider(exporter, span_limits=span_limits)
    traffic = Traffic()
    clock = _Clock(start_unix_nano)
    registry = ReloadRegistry(
        SERVICE, INSTANCE, clock=clock, tracer=provider.get_tracer("reloadtrace.gateway", "0.1.0"),
        listeners=[traffic.reloads.append],
    )
    _record(provider.get_tracer("checkout.http", "2.3.4"), registry, clock)
    provider.shutdown()
    return traffic


def record_traffic(*, start_unix_nano: int = BASE_TIME_UNIX_NANO, span_limits: SpanLimits | None = None) -> Traffic:
    """Finished SDK spans (in-memory) and the reload events, deterministic but for the random ids."""
    exporter = InMemorySpanExporter()
    traffic = _traffic_through(exporter, start_unix_nano=start_unix_nano, span_limits=span_limits)
    traffic.spans = list(exporter.get_finished_spans())
    return traffic


class _Both(SpanExporter):
    """Hands every batch to the OTLP exporter and keeps a copy."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self.kept: list[ReadableSpan] = []
        self.results: list[object] = []

    def export(self, spans: Sequence[ReadableSpan]):  # type: ignore[override]
        self.kept.extend(spans)
        result = self.exporter.export(spans)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()


def send_otlp_http(endpoint: str, *, start_unix_nano: int = BASE_TIME_UNIX_NANO,
                   span_limits: SpanLimits | None = None) -> Traffic:
    """Send the traffic to ``endpoint`` (``http://host:port/v1/traces``) with the SDK's OTLP/HTTP exporter.

    Raises:
        AssertionError: an export did not succeed.
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    both = _Both(OTLPSpanExporter(endpoint=endpoint, timeout=10))
    traffic = _traffic_through(both, start_unix_nano=start_unix_nano, span_limits=span_limits)
    assert all(result is SpanExportResult.SUCCESS for result in both.results), both.results
    traffic.spans = both.kept
    return traffic
