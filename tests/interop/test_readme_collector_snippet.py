"""The Collector snippet of the README, pasted into a config with an OTLP receiver, brings SDK spans to the
topic one trace per message, decodable by schemas.otlp."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infra.kafka import free_port
from infra.otelcol.collector import Collector, otlp_receiver
from tests.interop.kafka_otlp import read_otlp_topic
from tests.interop.python_sdk import send_otlp_http

pytestmark = [pytest.mark.kafka, pytest.mark.interop]

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_pasted_snippet_works(kafka_bootstrap_servers, otlp_topic, start_collector, tmp_path) -> None:
    text = README.read_text()
    snippet = re.search(r"Paste into your Collector's config.*?```yaml\n(.*?)```", text, re.S).group(1)
    assert "topic: otlp_spans" in snippet and 'brokers: ["kafka-1:9092"]' in snippet
    pasted = tmp_path / "pasted.yaml"
    pasted.write_text(snippet.replace('["kafka-1:9092"]', f'["{kafka_bootstrap_servers}"]')
                      .replace("topic: otlp_spans", f"topic: {otlp_topic}"))
    http_port, grpc_port = free_port(), free_port()
    ours = {"receivers": {"otlp": otlp_receiver(http_port, grpc_port)},  # the user's own config, around the paste
            "service": {"telemetry": {"metrics": {"level": "none"}}}}
    collector = start_collector(Collector(ours, tmp_path / "collector", http_port=http_port, grpc_port=grpc_port,
                                          extra_config_paths=(pasted,)))
    traffic = send_otlp_http(collector.otlp_http_endpoint)
    records = read_otlp_topic(kafka_bootstrap_servers, otlp_topic, "otlp_proto", span_count=len(traffic.spans))
    assert sum(len(record.decoded.spans) for record in records) == len(traffic.spans)
    assert all({span["trace_id"] for span in record.decoded.spans} == {record.key.decode()} for record in records)
