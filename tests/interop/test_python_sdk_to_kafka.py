"""The OpenTelemetry Python SDK (OTLP/HTTP exporter) -> the project's Collector -> Kafka, read back with
schemas.otlp: every span as the SDK sent it, reload spans as the gateway's ReloadEvents, nothing dropped."""

from __future__ import annotations

import pytest

from gateway.convert import span_record
from gateway.redaction import NO_REDACTION
from infra.otelcol.collector import otlp_to_kafka
from tests.interop.kafka_otlp import read_otlp_topic
from tests.interop.python_sdk import send_otlp_http

pytestmark = [pytest.mark.kafka, pytest.mark.interop]


def _key(span: dict) -> tuple[str, str]:
    return span["trace_id"], span["span_id"]


@pytest.mark.parametrize(
    ("encoding", "partition_traces_by_id"),
    [("otlp_proto", False), ("otlp_json", False), ("otlp_proto", True), ("otlp_json", True)],
)
def test_every_sdk_span_reaches_kafka_as_sent_and_reload_spans_become_reload_events(
    kafka_bootstrap_servers, otlp_topic, start_collector, tmp_path, encoding, partition_traces_by_id
) -> None:
    collector = start_collector(otlp_to_kafka(kafka_bootstrap_servers, tmp_path / "collector", topic=otlp_topic,
                                              encoding=encoding, partition_traces_by_id=partition_traces_by_id))
    traffic = send_otlp_http(collector.otlp_http_endpoint)
    records = read_otlp_topic(kafka_bootstrap_servers, otlp_topic, encoding, span_count=len(traffic.spans))
    assert all(record.decoded.errors == [] for record in records)
    received = [span for record in records for span in record.decoded.spans]
    expected = [span_record(span, NO_REDACTION) for span in traffic.spans]
    for span in expected:  # the Python SDK's OTLP encoder (1.45) does not send a link's trace_state
        span["links"] = [dict(link, trace_state="") for link in span["links"]]
    assert sorted(received, key=_key) == sorted(expected, key=_key)  # every span, once, field for field
    reloads = [reload for record in records for reload in record.decoded.reloads]
    assert sorted(reloads, key=lambda r: r.reload_id) == sorted(
        (event for event in traffic.reloads if event.trace_id is not None), key=lambda r: r.reload_id)
    assert {reload.status for reload in reloads} == {"SUCCEEDED", "FAILED"}
    assert any(reload.service_instance_id for reload in reloads) and any(reload.model_context for reload in reloads)
    # What Span.v1 dropped came through the Collector and Kafka.
    server = next(span for span in received if span["kind"] == "SERVER")
    client = next(span for span in received if span["kind"] == "CLIENT")
    assert server["trace_state"] == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    assert server["events"][0]["name"] == "request.received" and server["attributes"]["tags"] == '["a","b"]'
    assert [event["name"] for event in client["events"]] == ["exception"]
    assert [link["span_id"] for link in client["links"]] == ["00f067aa0ba902b7", server["span_id"]]
    assert (server["scope_name"], server["scope_version"]) == ("checkout.http", "2.3.4")
    if partition_traces_by_id:  # one trace per message, keyed by its hex id: a trace stays on one partition
        partitions: dict[str, set[int]] = {}
        for record in records:
            trace_ids = {span["trace_id"] for span in record.decoded.spans}
            assert trace_ids == {record.key.decode()}
            partitions.setdefault(record.key.decode(), set()).add(record.partition)
        assert all(len(found) == 1 for found in partitions.values())
        assert len(partitions) == len({span["trace_id"] for span in expected})
