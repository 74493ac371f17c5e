"""ReloadPublisher without a broker: keyed by service, model context redacted, never raising; span conversion edges."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from gateway.convert import attribute_value, span_record
from gateway.publisher import ReloadPublisher
from gateway.redaction import Redactor
from gateway.versioning import model_descriptor
from schemas.settings import KafkaSettings
from tests.gateway.helpers import instrumented
from tests.gateway.test_exporter import FakeProducer

KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix="unit.")


def test_events_are_keyed_by_service_and_model_context_is_redacted() -> None:
    producer = FakeProducer()
    publisher = ReloadPublisher(KAFKA, producer=producer)
    _, registry, _, _ = instrumented(service="chat-api")
    registry.add_listener(publisher)
    handle = registry.register(
        "model", model_descriptor("gpt-4o", "1", parameters={"temperature": 0.1, "api_key": "sk-zzz"})
    )
    handle.reload(model_descriptor("gpt-4o", "2", parameters={"temperature": 0.1, "api_key": "sk-yyy"}))
    assert publisher.flush() == 0 and publisher.stats.delivered == 2
    codec = KAFKA.codec("ReloadEvent")
    for topic, key, value in producer.messages:
        assert topic == "unit.reloads" and key == b"chat-api" and b"sk-" not in value
        context = codec.decode(value)["model_context"]
        assert context["model.parameters.temperature"] == "0.1" and "model.parameters.api_key" not in context


def test_publish_never_raises() -> None:
    class Full(FakeProducer):
        def produce(self, *args, **kwargs) -> None:
            raise BufferError

    publisher = ReloadPublisher(KAFKA, producer=Full())
    _, registry, _, _ = instrumented()
    registry.add_listener(publisher)
    registry.register("config", {"v": 1})
    assert publisher.stats.dropped_queue_full == 1 and registry.listener_errors == 0


def test_conversion_edges() -> None:
    assert attribute_value(2**70) == str(2**70) and attribute_value(-5) == -5
    assert attribute_value((1.5, 2.5)) == "[1.5,2.5]" and attribute_value(True) is True
    provider = TracerProvider(resource=Resource({}), shutdown_on_exit=False)
    span = provider.get_tracer("t").start_span("consume", kind=SpanKind.CONSUMER)
    span.end()
    record = span_record(span, Redactor())
    assert record["kind"] == "CONSUMER" and record["service_instance_id"] == ""
    assert record["service_name"] == "unknown_service"  # no service.name on the resource
    assert len(record["trace_id"]) == 32 and record["trace_id"] == record["trace_id"].lower()
