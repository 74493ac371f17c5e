"""The gateway's reload span follows the reload span convention: converted by schemas.reload_span (from the
Avro span the gateway exports, and from the OTLP the SDK exports), it is the ReloadEvent the gateway publishes."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.exporter import KafkaSpanExporter
from gateway.handle import ReloadRegistry
from gateway.processor import ReloadStampingSpanProcessor
from gateway.publisher import ReloadPublisher
from gateway.redaction import Redactor
from gateway.settings import GatewaySettings
from gateway.versioning import model_descriptor
from gateway.watch import FileWatch
from schemas.otlp import decode_otlp_proto
from schemas.records import ReloadEvent
from schemas.reload_span import is_reload_span, reload_event_from_span
from schemas.settings import KafkaSettings
from tests.gateway.helpers import MovableClock
from tests.gateway.test_exporter import FakeProducer

KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix="unit.")


def _gateway(redactor: Redactor):
    """A gateway as a service wires it: stamping processor, Avro span exporter, reload publisher; plus
    an in-memory copy of every ended span for the SDK's own OTLP encoder."""
    clock = MovableClock(1_764_547_200_000_000_000)
    provider = TracerProvider(resource=Resource({"service.name": "llm-gateway", "service.instance.id": "gw-3"}),
                              shutdown_on_exit=False)
    span_producer, reload_producer = FakeProducer(), FakeProducer()
    exporter = KafkaSpanExporter(KAFKA, GatewaySettings(), producer=span_producer, redactor=redactor)
    publisher = ReloadPublisher(KAFKA, producer=reload_producer, redactor=redactor)
    emitted: list[ReloadEvent] = []
    registry = ReloadRegistry("llm-gateway", "gw-3", clock=clock, tracer=provider.get_tracer("reloadtrace.gateway"),
                              listeners=[publisher, emitted.append])
    memory = InMemorySpanExporter()
    provider.add_span_processor(ReloadStampingSpanProcessor(registry, SimpleSpanProcessor(exporter)))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return clock, registry, span_producer, reload_producer, memory, emitted


def _reloads(registry: ReloadRegistry, clock: MovableClock, tmp_path) -> None:
    parameters = {"temperature": 0.2, "api_key": "sk-secret"}
    registry.register("model", model_descriptor("gpt-4o", "1", parameters=parameters, prompt_template="Be brief."))
    registry.register("config", {"timeout_ms": 100}, validator=lambda value: value["timeout_ms"] < 1000)
    clock.advance(5_000_000)
    registry["model"].reload(model_descriptor("gpt-4o", "2", parameters=parameters | {"temperature": 0.4}),
                             source="deploy-pipeline")
    clock.advance(7_000_000)
    registry["config"].reload({"timeout_ms": 250}, source="operator", instance_scoped=True)
    clock.advance(3_000_000)
    registry["config"].reload({"timeout_ms": 5000})  # FAILED: the validator refuses it
    watched = tmp_path / "routing.json"
    watched.write_text('{"routes": ["a", "b"]}')
    registry.register("routing_rules", {"routes": ["a"]})
    FileWatch(registry["routing_rules"], watched).poll_once()  # a fetch span, then the reload span


def test_the_reload_span_converted_is_the_published_event_on_both_paths(tmp_path) -> None:
    redactor = Redactor(salt=b"one salt for spans and events")
    clock, registry, span_producer, reload_producer, memory, emitted = _gateway(redactor)
    _reloads(registry, clock, tmp_path)
    span_producer.flush()
    reload_codec = KAFKA.codec("ReloadEvent")
    published = [ReloadEvent.from_dict(reload_codec.decode(value)) for _, _, value in reload_producer.messages]
    from_spans = [event for event in published if event.trace_id is not None]  # startup announcements have no span
    assert [event.status for event in from_spans] == ["SUCCEEDED", "SUCCEEDED", "FAILED", "SUCCEEDED"]
    assert from_spans[1].service_instance_id == "gw-3" and from_spans[0].service_instance_id is None
    assert "model.parameters.api_key" not in from_spans[0].model_context and from_spans[0].model_context
    # Path 1: the Avro span the gateway's exporter wrote to the spans topic.
    span_codec = KAFKA.codec("Span")
    avro_spans = [span_codec.decode(value) for _, _, value in span_producer.messages]
    assert sum(is_reload_span(span) for span in avro_spans) == len(from_spans)  # the fetch span is none
    assert [reload_event_from_span(span) for span in avro_spans if is_reload_span(span)] == from_spans
    # Path 2: the SDK's own OTLP encoding of the same spans (what a Collector gets), decoded by schemas.otlp.
    # The SDK holds spans unredacted (redaction is the exporter's and the publisher's job), so they give the
    # events as the registry emitted them, before the publisher redacted the model context.
    decoded = decode_otlp_proto(encode_spans(memory.get_finished_spans()).SerializeToString())
    assert decoded.errors == []
    assert decoded.reloads == [event for event in emitted if event.trace_id is not None]
    assert "model.parameters.api_key" in decoded.reloads[0].model_context


def test_redaction_of_a_model_context_key_covers_the_reload_span_attribute() -> None:
    redactor = Redactor(extra_patterns=["model.parameters.seed"])  # a glob: matches the whole key only
    assert redactor.is_denied("model.parameters.seed")
    assert redactor.is_denied("reload.model_context.model.parameters.seed")
    assert not redactor.is_denied("reload.model_context.model.parameters.temperature")
