"""End to end on the real broker: an instrumented stdlib HTTP handler, a model reload in the middle of a request."""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import context as context_api
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from gateway.baggage import extract
from gateway.exporter import KafkaSpanExporter
from gateway.handle import ReloadRegistry
from gateway.pinning import pin
from gateway.processor import kafka_span_processor
from gateway.publisher import ReloadPublisher
from gateway.settings import GatewaySettings
from gateway.versioning import model_descriptor
from schemas.settings import KafkaSettings
from tests.gateway.kafka_reading import consume

pytestmark = pytest.mark.kafka

SECRET = "sk-live-0123456789abcdef"
COOKIE = "session=cafebabe42"


class Gateway:
    """A tiny LLM gateway: one handler, one model handle, the OTel SDK exporting to Kafka."""

    def __init__(self, kafka: KafkaSettings) -> None:
        settings = GatewaySettings(exporter_flush_timeout_ms=20_000)
        self.provider = TracerProvider(
            resource=Resource(
                {"service.name": "llm-gateway", "service.instance.id": "gw-a", "deployment.environment.name": "test"}
            ),
            shutdown_on_exit=False,
        )
        self.registry = ReloadRegistry("llm-gateway", "gw-a", tracer=self.provider.get_tracer("reloadtrace"))
        self.publisher = ReloadPublisher(kafka, settings)
        self.registry.add_listener(self.publisher)
        self.exporter = KafkaSpanExporter(kafka, settings)
        self.provider.add_span_processor(kafka_span_processor(self.registry, self.exporter, schedule_delay_millis=100))
        self.model = self.registry.register(
            "model",
            model_descriptor(
                "gpt-4o", "2024-08-06", provider="openai", parameters={"temperature": 0.2, "api_key": SECRET}
            ),
        )
        self.tracer = self.provider.get_tracer("gateway.http")
        self.inside = threading.Event()
        self.reloaded = threading.Event()
        self.hold_first_request = True

    def handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                incoming = extract(dict(self.headers.items()))
                token = context_api.attach(incoming)
                try:
                    with (
                        pin(gateway.registry),
                        gateway.tracer.start_as_current_span(
                            "POST /v1/chat/completions",
                            kind=SpanKind.SERVER,
                            attributes={
                                "http.request.method": "POST",
                                "http.route": "/v1/chat/completions",
                                # careless instrumentation recording headers: redaction must catch it
                                "http.request.header.authorization": self.headers.get("Authorization", ""),
                                "http.request.header.cookie": self.headers.get("Cookie", ""),
                            },
                        ) as server_span,
                    ):
                        if gateway.hold_first_request:
                            gateway.hold_first_request = False
                            gateway.inside.set()
                            assert gateway.reloaded.wait(10)
                        model = gateway.model.get()
                        with gateway.tracer.start_as_current_span(
                            f"chat {model['id']}",
                            kind=SpanKind.CLIENT,
                            attributes={
                                "gen_ai.provider.name": "openai",
                                "gen_ai.request.model": model["id"],
                                "gen_ai.usage.output_tokens": 12,
                            },
                        ):
                            pass
                        body = json.dumps(
                            {
                                "model_version": model.version,
                                "trace_id": format(server_span.get_span_context().trace_id, "032x"),
                            }
                        ).encode()
                        server_span.set_attribute("http.response.status_code", 200)
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    context_api.detach(token)

        return Handler


def _post(port: int) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=b'{"messages": []}',
        headers={"Authorization": f"Bearer {SECRET}", "Cookie": COOKIE, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


def test_mid_request_model_reload_is_pinned_marked_and_traced_on_the_broker(kafka_settings: KafkaSettings) -> None:
    gateway = Gateway(kafka_settings)
    server = ThreadingHTTPServer(("127.0.0.1", 0), gateway.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    old_version = gateway.model.version
    first: dict = {}
    client = threading.Thread(target=lambda: first.update(_post(port)))
    client.start()
    assert gateway.inside.wait(10)
    event = gateway.model.reload(
        model_descriptor("gpt-4o", "2024-11-20", provider="openai", parameters={"temperature": 0.2, "api_key": SECRET}),
        source="deploy-pipeline",
    )
    gateway.reloaded.set()
    client.join(20)
    second = _post(port)
    server.shutdown()
    assert gateway.provider.force_flush(20_000)
    assert gateway.publisher.flush(20) == 0
    assert first["model_version"] == old_version and second["model_version"] == event.new_version != old_version

    span_messages = consume(kafka_settings, kafka_settings.topics.spans, 5)
    reload_messages = consume(kafka_settings, kafka_settings.topics.reloads, 2)
    span_codec, reload_codec = kafka_settings.codec("Span"), kafka_settings.codec("ReloadEvent")
    spans = [span_codec.decode(m.value()) for m in span_messages]
    reloads = [reload_codec.decode(m.value()) for m in reload_messages]
    assert all(m.key() == codec["trace_id"].encode() for m, codec in zip(span_messages, spans))
    assert all(m.key() == b"llm-gateway" for m in reload_messages)

    by_trace: dict[str, list] = {}
    for span in spans:
        by_trace.setdefault(span["trace_id"], []).append(span)
    first_spans = {s["kind"]: s for s in by_trace[first["trace_id"]]}
    second_spans = {s["kind"]: s for s in by_trace[second["trace_id"]]}
    # the straddling request: pinned old version on both its spans, marked mid-flight with the reload id
    assert first_spans["SERVER"]["attributes"]["reload.version.model"] == old_version
    assert first_spans["CLIENT"]["attributes"]["reload.version.model"] == old_version
    assert first_spans["SERVER"]["attributes"]["reload.model.version"] == "2024-08-06"
    assert first_spans["SERVER"]["attributes"]["reload.mid_flight"] is True
    assert json.loads(first_spans["SERVER"]["attributes"]["reload.mid_flight.reload_ids"]) == [event.reload_id]
    assert first_spans["CLIENT"]["attributes"]["reload.mid_flight"] is False  # it started after the swap
    assert second_spans["SERVER"]["attributes"]["reload.version.model"] == event.new_version
    assert second_spans["SERVER"]["attributes"]["reload.mid_flight"] is False
    assert first_spans["SERVER"]["service_instance_id"] == "gw-a"

    # the ReloadEvent, with the ids of its own control-plane trace
    (published,) = [r for r in reloads if r["reload_id"] == event.reload_id]
    assert published["status"] == "SUCCEEDED" and published["old_version"] == old_version
    assert published["service_instance_id"] is None and published["source"] == "deploy-pipeline"
    assert published["changed_keys"] == ["version"]
    assert published["model_context"]["model.version"] == "2024-11-20"
    (reload_span,) = [s for s in spans if s["span_id"] == published["span_id"]]
    assert reload_span["trace_id"] == published["trace_id"] and reload_span["parent_span_id"] is None
    assert reload_span["name"] == "reload model" and published["trace_id"] not in (
        first["trace_id"],
        second["trace_id"],
    )
    assert any(r["source"] == "startup" and r["new_version"] == old_version for r in reloads)

    # secrets never reached the broker, in any message of either topic
    for message in span_messages + reload_messages:
        raw = message.value()
        assert SECRET.encode() not in raw and b"cafebabe42" not in raw
    assert "http.request.header.authorization" not in first_spans["SERVER"]["attributes"]
    assert gateway.exporter.stats.delivered == len(spans) and gateway.exporter.stats.dropped == 0
    gateway.provider.shutdown()
