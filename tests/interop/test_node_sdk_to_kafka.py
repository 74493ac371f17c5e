"""A second OpenTelemetry SDK (JavaScript, from npm) -> the Collector -> Kafka: its reload span becomes the
ReloadEvent it says, and its request span is enriched with the version that reload set."""

from __future__ import annotations

import orjson
import pytest

from infra.otelcol.collector import otlp_to_kafka
from schemas.otlp_files import write_otlp_file
from schemas.records import ReloadEvent
from streams.replay import run_replay
from tests.interop.kafka_otlp import read_otlp_topic
from tests.interop.node_sdk import send_with_node

pytestmark = [pytest.mark.kafka, pytest.mark.interop]

BASE = 1_764_547_200_000_000_000


def test_a_node_reload_span_and_request_span_through_the_collector(
    kafka_bootstrap_servers, otlp_topic, start_collector, node_sdk, tmp_path
) -> None:
    collector = start_collector(otlp_to_kafka(kafka_bootstrap_servers, tmp_path / "collector", topic=otlp_topic))
    sent = send_with_node(node_sdk, collector.otlp_http_endpoint, service_name="node-gateway",
                          service_instance_id="node-gateway-1", base_time_unix_nano=BASE)
    records = read_otlp_topic(kafka_bootstrap_servers, otlp_topic, "otlp_proto", span_count=3)
    assert all(record.decoded.errors == [] for record in records)
    spans = {span["span_id"]: span for record in records for span in record.decoded.spans}
    assert len(spans) == 3
    reloads = [reload for record in records for reload in record.decoded.reloads]
    assert reloads == [ReloadEvent(
        reload_id="node-reload-1", service_name="node-gateway", component="model", new_version="m-node-2",
        old_version="m-node-1", requested_time_unix_nano=BASE, effective_time_unix_nano=BASE + 20_000_000,
        status="SUCCEEDED", source="node-deploy", service_instance_id=None,
        trace_id=sent["reload"]["trace_id"], span_id=sent["reload"]["span_id"],
        model_context={"model.id": "gpt-node", "model.parameters.temperature": "0.3"},
        changed_keys=("model.id", "parameters.temperature"),
    )]
    request = spans[sent["request"]["span_id"]]
    assert (request["name"], request["kind"], request["status_code"]) == ("POST /v1/chat", "SERVER", "OK")
    assert (request["service_name"], request["service_instance_id"]) == ("node-gateway", "node-gateway-1")
    assert (request["start_time_unix_nano"], request["end_time_unix_nano"]) == (int(sent["request"]["start"]),
                                                                                int(sent["request"]["end"]))
    assert request["attributes"] == {"http.route": "/v1/chat", "http.response.status_code": 200,
                                     "gen_ai.request.temperature": 0.3}
    assert request["events"][0]["name"] == "first.token"
    assert request["links"][0]["span_id"] == sent["reload"]["span_id"]
    assert (request["scope_name"], request["scope_version"]) == ("node-gateway", "9.8.7")
    assert spans[sent["child"]["span_id"]]["parent_span_id"] == sent["request"]["span_id"]
    # The topic as an OTLP file, replayed (the enrichment core the worker uses): the request span carries
    # the version the Node reload span set; no reload event file at all.
    path = tmp_path / "node.otlp.pb"
    write_otlp_file(path, [record.value for record in records])
    summary = run_replay(path, None, tmp_path / "replay", detect=False)
    assert summary.reloads_used == 1 and summary.spans_written == 3
    rows = {row["span_id"]: row for row in map(orjson.loads, summary.enriched_path.read_bytes().splitlines())}
    enriched = rows[sent["request"]["span_id"]]
    assert enriched["versions"] == enriched["versions_at_end"] == {"model": "m-node-2"}
    assert enriched["reload_ids"] == {"model": "node-reload-1"} and enriched["mid_flight"] is False
