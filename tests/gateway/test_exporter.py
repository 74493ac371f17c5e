"""The Kafka span exporter without a broker: batching behind the SDK, delivery counting, failure handling."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.exporter import KafkaSpanExporter
from gateway.settings import GatewaySettings
from schemas.records import validate_span
from schemas.settings import KafkaSettings

KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix="unit.")


class FakeProducer:
    """Records produce calls; delivers on poll/flush; raises BufferError beyond ``capacity`` undelivered."""

    def __init__(self, capacity: int = 10_000, fail_delivery: bool = False) -> None:
        self.capacity = capacity
        self.fail_delivery = fail_delivery
        self.pending: list = []
        self.messages: list = []

    def produce(self, topic, key, value, on_delivery) -> None:
        if len(self.pending) >= self.capacity:
            raise BufferError("queue full")
        self.messages.append((topic, key, value))
        self.pending.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        for callback in self.pending:
            callback("delivery failed" if self.fail_delivery else None, None)
        self.pending.clear()
        return 0


def _provider(processor) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource({"service.name": "llm-gateway", "service.instance.id": "gw-1", "k8s.pod.name": "p"}),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(processor)
    return provider


def test_batches_are_keyed_by_trace_id_and_decode_to_valid_spans() -> None:
    producer = FakeProducer()
    exporter = KafkaSpanExporter(KAFKA, producer=producer)
    batch_sizes: list[int] = []
    original = exporter.export
    exporter.export = lambda spans: (batch_sizes.append(len(spans)), original(spans))[1]  # type: ignore[method-assign]
    processor = BatchSpanProcessor(exporter, max_export_batch_size=5, schedule_delay_millis=60_000)
    tracer = _provider(processor).get_tracer("app")
    for number in range(12):
        with tracer.start_as_current_span("POST /v1/chat", kind=SpanKind.SERVER) as root:
            root.set_attribute("request.number", number)
            root.set_attribute("tags", ["a", "b"])
            with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as child:
                child.set_status(Status(StatusCode.ERROR, "upstream 503"))
    assert processor.force_flush(10_000)
    assert sum(batch_sizes) == 24 and max(batch_sizes) <= 5
    codec = KAFKA.codec("Span")
    records = []
    for topic, key, value in producer.messages:
        record = codec.decode(value)
        validate_span(record)
        assert topic == "unit.spans" and key == record["trace_id"].encode()
        records.append(record)
    children = [r for r in records if r["kind"] == "CLIENT"]
    roots = {r["span_id"]: r for r in records if r["kind"] == "SERVER"}
    assert len(children) == 12 and len(roots) == 12
    assert all(
        c["parent_span_id"] in roots and c["status_code"] == "ERROR" and c["status_message"] == "upstream 503"
        for c in children
    )
    assert all(r["parent_span_id"] is None and r["attributes"]["tags"] == '["a","b"]' for r in roots.values())
    assert all(
        r["service_instance_id"] == "gw-1" and r["resource_attributes"] == {"k8s.pod.name": "p"} for r in records
    )
    producer.flush()
    assert exporter.stats.delivered == 24 and exporter.stats.in_flight == 0


def test_full_producer_queue_drops_and_counts_without_raising() -> None:
    producer = FakeProducer(capacity=3)
    exporter = KafkaSpanExporter(KAFKA, producer=producer)
    tracer = _provider(
        BatchSpanProcessor(exporter, max_export_batch_size=100, schedule_delay_millis=60_000)
    ).get_tracer("app")
    spans = []
    for number in range(10):
        span = tracer.start_span(f"s{number}")
        span.end()
        spans.append(span)
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert exporter.stats.produced == 3 and exporter.stats.dropped_queue_full == 7


def test_producer_exceptions_and_exports_after_shutdown_never_raise() -> None:
    class Exploding(FakeProducer):
        def produce(self, *args, **kwargs) -> None:
            raise RuntimeError("librdkafka fell over")

    exporter = KafkaSpanExporter(KAFKA, producer=Exploding())
    span = _provider(BatchSpanProcessor(exporter)).get_tracer("app").start_span("s")
    span.end()
    assert exporter.export([span]) is SpanExportResult.FAILURE
    exporter.shutdown()
    assert exporter.export([span, span]) is SpanExportResult.FAILURE
    assert exporter.stats.dropped_after_shutdown == 2


def test_broker_down_no_exception_reaches_the_app_and_drops_are_bounded() -> None:
    """A real librdkafka producer pointed at a closed port: memory bounded, every span accounted for."""
    settings = GatewaySettings(
        exporter_queue_max_messages=10, exporter_message_timeout_ms=300, exporter_flush_timeout_ms=3000
    )
    exporter = KafkaSpanExporter(KAFKA, settings)
    processor = BatchSpanProcessor(exporter, max_queue_size=20, max_export_batch_size=20, schedule_delay_millis=50)
    provider = _provider(processor)
    tracer = provider.get_tracer("app")
    for number in range(50):  # the application keeps working
        with tracer.start_as_current_span(f"request {number}"):
            pass
    provider.force_flush(5_000)
    exporter.shutdown()
    processor.shutdown()
    stats = exporter.stats
    assert stats.produced <= settings.exporter_queue_max_messages  # never more in flight than the queue
    assert stats.delivered == 0 and stats.in_flight == 0
    assert stats.delivery_failed == stats.produced
    # every span the SDK queue handed over is accounted for: failed delivery or dropped at the producer
    handed_over = stats.produced + stats.dropped_queue_full + stats.dropped_after_shutdown
    assert 0 < handed_over <= 50 and stats.dropped == handed_over
    assert stats.dropped_queue_full > 0  # the bound really bit
