"""The OpenTelemetry Python SDK -> the project's Collector -> Kafka (otlp_proto, then otlp_json) -> the worker -> ClickHouse.

Every span lands, enriched exactly as ``replay`` enriches the same spans with the same reloads; the
reload spans became the reload events; events, links, trace_state and the scope survived to
ClickHouse; a poison OTLP message is in ``dead_letters`` once, and a bad span of an otherwise good
message once, with its index (its good spans landed).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from gateway.convert import span_record
from gateway.redaction import NO_REDACTION
from infra.otelcol.collector import otlp_to_kafka
from schemas.otlp import decode_otlp, span_otlp_request
from schemas.settings import KafkaSettings
from tests.e2e.pipeline import PipelineRun, expected_enrichment, _normal
from tests.interop.python_sdk import send_otlp_http

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.interop, pytest.mark.slow]


def _good_and_bad_message(start_unix_nano: int) -> tuple[bytes, list[dict]]:
    """An otlp_proto message of three spans, the middle one invalid (it ends before it starts)."""
    spans = []
    for number in range(3):
        spans.append({
            "trace_id": f"{0xABC0 + number:032x}", "span_id": f"{0xDE0 + number:016x}", "parent_span_id": None,
            "name": "GET /health", "kind": "SERVER", "service_name": "health-api", "service_instance_id": "h-1",
            "start_time_unix_nano": start_unix_nano + number, "end_time_unix_nano": start_unix_nano + number + 5_000_000,
            "status_code": "OK", "status_message": None, "attributes": {"http.route": "/health"},
            "resource_attributes": None,
        })
    request = span_otlp_request(spans)
    request.resource_spans[0].scope_spans[0].spans[1].end_time_unix_nano = start_unix_nano - 10  # ends before it starts
    value = request.SerializeToString()
    assert len(decode_otlp(value, "otlp_proto").errors) == 1
    return value, [spans[0], spans[2]]


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_sdk_spans_through_the_collector_land_enriched_as_replay_enriches_them(
    kafka_settings: KafkaSettings, start_collector, tmp_path: Path, encoding: str
) -> None:
    run = PipelineRun(kafka_settings, tmp_path / "run", env={"RELOADTRACE_OTLP_ENCODING": encoding})
    worker = run.start_worker()
    topic = kafka_settings.topics.otlp_spans
    try:
        collector = start_collector(otlp_to_kafka(kafka_settings.bootstrap_servers, tmp_path / "collector", topic=topic,
                                                  encoding=encoding))
        traffic = send_otlp_http(collector.otlp_http_endpoint, start_unix_nano=time.time_ns())
        poison = b"\x0a\xff\xff\xff\xff\x0fnot a protobuf message"
        mixed, mixed_good = _good_and_bad_message(time.time_ns())
        producer = Producer(kafka_settings.confluent_config())
        producer.produce(topic, value=poison if encoding == "otlp_proto" else b'{"resourceSpans": [oops')
        if encoding == "otlp_proto":
            producer.produce(topic, value=mixed)
        assert producer.flush(30) == 0
        run.drain(alive=[worker])
    finally:
        run.stop()
    tables = run.tables()
    spans = [span_record(span, NO_REDACTION) for span in traffic.spans]
    if encoding == "otlp_proto":
        spans += mixed_good
    reloads = [event for event in traffic.reloads if event.trace_id is not None]  # those with a reload span
    expected = expected_enrichment(spans, reloads)
    got = {(row[0], row[1]): _normal(row) for row in tables["spans"]}
    assert len(tables["spans"]) == len(got) and got == expected  # every span once, enriched as replay
    assert any(versions for versions, *_ in got.values())  # the reload spans' versions reached the spans
    assert sorted(tables["reload_ids"]) == sorted(reload.reload_id for reload in reloads)
    lossless = {(row[0], row[1]): row[2:] for row in tables["lossless"]}
    server = next(span for span in spans if span["kind"] == "SERVER" and span["events"])
    trace_state, scope_name, scope_version, event_names, link_ids = lossless[(server["trace_id"], server["span_id"])]
    assert trace_state == server["trace_state"] and (scope_name, scope_version) == ("checkout.http", "2.3.4")
    assert event_names == [event["name"] for event in server["events"]]
    client = next(span for span in spans if span["links"])
    assert lossless[(client["trace_id"], client["span_id"])][4] == [link["span_id"] for link in client["links"]]
    letters = [row for row in tables["dead_letters"] if row[0] == topic]
    whole = [row for row in letters if row[6] == 0]
    assert len(whole) == 1 and whole[0][3] == "malformed"  # the poison message, once
    if encoding == "otlp_proto":
        bad = [row for row in letters if row[6] != 0]
        assert [(row[3], row[6]) for row in bad] == [("invalid_record", 2)]  # span index 1 of its message, once


def test_a_node_sdk_request_span_lands_with_the_version_its_reload_span_set(
    kafka_settings: KafkaSettings, start_collector, node_sdk, tmp_path: Path
) -> None:
    from tests.interop.node_sdk import send_with_node

    run = PipelineRun(kafka_settings, tmp_path / "run")
    worker = run.start_worker()
    try:
        collector = start_collector(otlp_to_kafka(kafka_settings.bootstrap_servers, tmp_path / "collector",
                                                  topic=kafka_settings.topics.otlp_spans))
        sent = send_with_node(node_sdk, collector.otlp_http_endpoint, service_name="node-gateway",
                              service_instance_id="node-gateway-1", base_time_unix_nano=time.time_ns())
        run.drain(alive=[worker])
    finally:
        run.stop()
    tables = run.tables()
    rows = {row[1]: row for row in tables["spans"]}
    assert len(rows) == 3 and tables["reload_ids"] == ["node-reload-1"]
    request = rows[sent["request"]["span_id"]]
    assert (request[2], request[3], request[4]) == ({"model": "m-node-2"}, {"model": "m-node-2"}, {"model": "node-reload-1"})


def test_the_workers_otlp_out_reaches_a_collector_kafkareceiver_with_the_versions(
    kafka_settings: KafkaSettings, start_collector, tmp_path: Path
) -> None:
    import uuid

    from infra.otelcol.collector import Collector, collector_config, file_exporter, kafka_receiver
    from schemas.otlp_files import read_otlp_messages

    out_topic = f"{kafka_settings.topic_prefix}otlp_enriched"
    run = PipelineRun(kafka_settings, tmp_path / "run", env={"RELOADTRACE_ENRICHED_OTLP_TOPIC": out_topic})
    worker = run.start_worker()
    received_path = tmp_path / "received.otlp.jsonl"
    try:
        feeder = start_collector(otlp_to_kafka(kafka_settings.bootstrap_servers, tmp_path / "feeder",
                                               topic=kafka_settings.topics.otlp_spans))
        traffic = send_otlp_http(feeder.otlp_http_endpoint, start_unix_nano=time.time_ns())
        run.drain(alive=[worker])
        config = collector_config(
            {"kafka": kafka_receiver(kafka_settings.bootstrap_servers, topic=out_topic, group_id=f"col-{uuid.uuid4().hex[:8]}")},
            {"file": file_exporter(received_path)},
            {"traces": (["kafka"], ["file"])},
        )
        start_collector(Collector(config, tmp_path / "reader"))
        spans = [span_record(span, NO_REDACTION) for span in traffic.spans]
        expected = expected_enrichment(spans, [event for event in traffic.reloads if event.trace_id is not None])
        received: dict[tuple[str, str], dict] = {}
        deadline = time.monotonic() + 60
        while len(received) < len(spans) and time.monotonic() < deadline:
            time.sleep(0.5)
            if received_path.exists():
                for message in read_otlp_messages(received_path):
                    assert message.decoded is not None
                    for span in message.decoded.spans:
                        key = (span["trace_id"], span["span_id"])
                        best = received.get(key)
                        revision = span["attributes"]["reload.enrichment_revision"]
                        if best is None or revision > best["attributes"]["reload.enrichment_revision"]:
                            received[key] = span
    finally:
        run.stop()
    assert received.keys() == expected.keys()
    for key, (versions, at_end, reload_ids, mid_flight, mid_ids) in expected.items():
        attributes = received[key]["attributes"]
        assert {k.removeprefix("reload.version."): v for k, v in attributes.items() if k.startswith("reload.version.")} == versions
        assert {k.removeprefix("reload.version_at_end."): v for k, v in attributes.items()
                if k.startswith("reload.version_at_end.")} == at_end
        assert {k.removeprefix("reload.reload_id."): v for k, v in attributes.items() if k.startswith("reload.reload_id.")} == reload_ids
        assert attributes["reload.mid_flight"] is mid_flight
    assert any(expected_versions for expected_versions, *_ in expected.values())
