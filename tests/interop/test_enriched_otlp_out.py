"""Enriched OTLP out -> Kafka -> the Collector's kafkareceiver -> its file and debug exporters: any Collector
pipeline (Tempo, Jaeger, a vendor) receives the spans with the versions that served them."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Producer

from infra.otelcol.collector import Collector, collector_config, file_exporter, kafka_receiver
from schemas.otlp import ENRICHMENT_REVISION, MID_FLIGHT, MID_FLIGHT_RELOAD_IDS, enriched_otlp_messages
from schemas.otlp_files import read_otlp_messages
from sinks.testing import enriched_spans

pytestmark = [pytest.mark.kafka, pytest.mark.interop]


def test_the_collector_kafkareceiver_reads_enriched_spans_with_their_versions(
    kafka_bootstrap_servers, otlp_topic, start_collector, tmp_path
) -> None:
    spans = enriched_spans(12, seed=1)  # seed 0 starts with an all-zero trace id, which no OTLP reader keeps
    for index, span in enumerate(spans):
        span.update(versions={"model": f"m{index % 3}", "config": "c7"}, versions_at_end={"model": f"m{index % 3 + 1}"},
                    reload_ids={"model": f"r{index % 3}"}, mid_flight=index % 2 == 1,
                    mid_flight_reload_ids=[f"r{index % 3 + 1}"] if index % 2 else [], enrichment_revision=index % 4,
                    events=[{"time_unix_nano": span["start_time_unix_nano"], "name": "e", "attributes": {"k": 1},
                             "dropped_attributes_count": 0}], trace_state="rojo=1", scope_name="gw")
    producer = Producer({"bootstrap.servers": kafka_bootstrap_servers})
    messages = enriched_otlp_messages(spans)
    for message in messages:
        producer.produce(otlp_topic, key=message.key, value=message.value)
    assert producer.flush(30) == 0
    out = tmp_path / "received.otlp.jsonl"
    config = collector_config(
        {"kafka": kafka_receiver(kafka_bootstrap_servers, topic=otlp_topic, group_id=f"col-{uuid.uuid4().hex[:8]}")},
        {"file": file_exporter(out), "debug": {"verbosity": "detailed"}},
        {"traces": (["kafka"], ["file", "debug"])},
    )
    collector = start_collector(Collector(config, tmp_path / "collector"))
    received: dict[tuple[str, str], dict] = {}
    deadline = time.monotonic() + 60
    while len(received) < len(spans) and time.monotonic() < deadline:
        time.sleep(0.5)
        if out.exists():
            for message in read_otlp_messages(out):  # the Collector's own OTLP/JSON
                assert message.decoded is not None and message.decoded.errors == []
                received.update({(s["trace_id"], s["span_id"]): s for s in message.decoded.spans})
    assert len(received) == len(spans)
    for span in spans:
        back = received[(span["trace_id"], span["span_id"])]
        attributes = back["attributes"]
        assert attributes["reload.version.model"] == span["versions"]["model"]
        assert attributes["reload.version.config"] == "c7"
        assert attributes["reload.version_at_end.model"] == span["versions_at_end"]["model"]
        assert attributes["reload.reload_id.model"] == span["reload_ids"]["model"]
        assert attributes[MID_FLIGHT] is span["mid_flight"]
        ids = f'["{span["mid_flight_reload_ids"][0]}"]' if span["mid_flight"] else "[]"
        assert attributes[MID_FLIGHT_RELOAD_IDS] == ids
        assert attributes[ENRICHMENT_REVISION] == span["enrichment_revision"]
        assert attributes["gen_ai.request.model"] == span["attributes"]["gen_ai.request.model"]
        assert (back["trace_state"], back["scope_name"], back["events"][0]["name"]) == ("rojo=1", "gw", "e")
        identity = (span["service_name"], span["service_instance_id"])
        assert (back["service_name"], back["service_instance_id"]) == identity
    log = collector.log_text()  # the debug exporter prints every attribute with its OTLP type
    assert "reload.version.model: Str(m1)" in log and "reload.mid_flight: Bool(true)" in log
    assert "reload.enrichment_revision: Int(3)" in log and "reload.mid_flight.reload_ids: Slice" in log
