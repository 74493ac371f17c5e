"""Publishing files and simulations: ordering options, skipped lines, and the real broker's arrival order."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway.simulation.commands import run_produce, run_simulate
from gateway.simulation.config import ScheduledReload, SimulationConfig
from gateway.simulation.output import write_simulation
from gateway.simulation.produce import Interleaving, ProduceReport, file_stream, publication_delays
from gateway.simulation.simulator import simulate
from schemas.settings import KafkaSettings
from tests.gateway.kafka_reading import consume

SMALL = SimulationConfig(
    seed=4,
    services=("llm-gateway",),
    duration_s=12,
    requests_per_second_per_service=5,
    reloads=(
        ScheduledReload(at_s=3.0, service="llm-gateway", component="model", lateness_s=4.0),
        ScheduledReload(at_s=6.0, service="llm-gateway", component="config", instance=1),
        ScheduledReload(at_s=8.0, service="llm-gateway", component="routing_rules", fail=True),
    ),
)


@pytest.fixture(scope="module")
def small():
    return simulate(SMALL)


@pytest.fixture
def files(small, tmp_path: Path) -> dict[str, Path]:
    return write_simulation(small, tmp_path)


def test_orders_and_bad_lines(small, files, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    lines = files["spans"].read_text().splitlines()
    bad_span = json.loads(lines[0]) | {"trace_id": "XYZ"}
    broken.write_text("\n".join([lines[0], "{not json", json.dumps(bad_span), *lines[1:]]) + "\n")
    report = ProduceReport()
    items = file_stream(broken, files["reloads"], report)
    assert [position for _, position, _ in report.skipped] == [2, 3]
    assert "trace_id" in report.skipped[1][2]
    reload_count = len(small.reloads)
    assert [item.kind for item in items] == ["reload"] * reload_count + ["span"] * len(small.spans)
    spans_first = file_stream(files["spans"], files["reloads"], ProduceReport(), interleaving=Interleaving.SPANS_FIRST)
    assert spans_first[0].kind == "span" and spans_first[-1].kind == "reload"
    delays = publication_delays(json.loads(files["ground_truth"].read_text()))
    by_time = file_stream(
        files["spans"],
        files["reloads"],
        ProduceReport(),
        interleaving=Interleaving.EVENT_TIME,
        publication_delays_ns=delays,
    )
    assert [(item.kind, item.record.get("reload_id") or item.record["span_id"]) for item in by_time] == [
        (kind, record.get("reload_id") or record["span_id"]) for kind, record in small.interleaved()
    ]


@pytest.mark.kafka
def test_event_time_produce_really_publishes_the_late_reload_after_the_spans(
    small, files, kafka_settings: KafkaSettings
) -> None:
    code = run_produce(
        kafka_settings,
        files["spans"],
        files["reloads"],
        interleaving=Interleaving.EVENT_TIME,
        ground_truth=files["ground_truth"],
    )
    assert code == 0
    span_messages = consume(kafka_settings, kafka_settings.topics.spans, len(small.spans))
    reload_messages = consume(kafka_settings, kafka_settings.topics.reloads, len(small.reloads))
    assert len(span_messages) == len(small.spans) and len(reload_messages) == len(small.reloads)
    span_codec, reload_codec = kafka_settings.codec("Span"), kafka_settings.codec("ReloadEvent")
    arrival = {span_codec.decode(m.value())["span_id"]: m.timestamp()[1] for m in span_messages}
    late = next(
        reload_codec.decode(m.value()) | {"_ts": m.timestamp()[1]}
        for m in reload_messages
        if reload_codec.decode(m.value())["reload_id"] == "sim4-r000"
    )
    published = late["effective_time_unix_nano"] + 4 * 10**9
    ended_before = [s["span_id"] for s in small.spans if s["end_time_unix_nano"] < published]
    assert ended_before and all(arrival[span_id] <= late["_ts"] for span_id in ended_before)
    assert {reload_codec.decode(m.value())["status"] for m in reload_messages} == {"SUCCEEDED", "FAILED"}


@pytest.mark.kafka
def test_simulate_to_kafka(small, kafka_settings: KafkaSettings) -> None:
    before = time.time_ns()
    assert run_simulate(SMALL, kafka=kafka_settings, out=None, file_format="jsonl", realtime=False) == 0
    spans = consume(kafka_settings, kafka_settings.topics.spans, len(small.spans))
    decoded = sorted((kafka_settings.codec("Span").decode(m.value()) for m in spans), key=lambda s: s["span_id"])
    expected = sorted(small.spans, key=lambda s: s["span_id"])
    # A backfill of the last duration_s, ending now (the worker refuses spans far from its clock):
    # the same traffic, shifted in time as a whole.
    shift = decoded[0]["start_time_unix_nano"] - expected[0]["start_time_unix_nano"]
    times = ("start_time_unix_nano", "end_time_unix_nano")

    def timeless(span: dict) -> dict:
        events = [{k: v for k, v in event.items() if k != "time_unix_nano"} for event in span.get("events", ())]
        return {k: v for k, v in span.items() if k not in times} | {"events": events}

    assert [timeless(s) for s in decoded] == [timeless(s) for s in expected]
    assert all(s[t] - e[t] == shift for s, e in zip(decoded, expected, strict=True) for t in times)
    assert all(got["time_unix_nano"] - event["time_unix_nano"] == shift
               for s, e in zip(decoded, expected, strict=True) for got, event in zip(s["events"], e["events"]))
    assert before - SMALL.duration_s * 1e9 - 5e9 <= min(s["start_time_unix_nano"] for s in decoded) <= before
    # every simulated request carried a bearer token in an attribute; none reached the broker
    assert all(b"sk-sim-" not in message.value() and b"authorization" not in message.value() for message in spans)


def test_real_time_pacing_follows_publish_times(monkeypatch) -> None:
    from gateway.simulation import produce as produce_module
    from gateway.simulation.produce import StreamItem, StreamPublisher
    from tests.gateway.test_exporter import FakeProducer

    class FrozenTime:
        now = 100.0

        def monotonic(self) -> float:
            return self.now

        def sleep(self, seconds: float) -> None:
            sleeps.append(round(seconds, 6))
            self.now += seconds

    sleeps: list[float] = []
    monkeypatch.setattr(produce_module, "time", FrozenTime())
    span = simulate(SMALL).spans[0]
    items = [StreamItem("span", span, t * 10**9) for t in (0, 0, 1, 3)]
    producer = FakeProducer()
    report = StreamPublisher(KafkaSettings(bootstrap_servers="127.0.0.1:1"), producer=producer).publish(
        items, ProduceReport(), pace=2.0
    )
    assert sleeps == [0.5, 1.0] and report.spans == 4 and len(producer.messages) == 4
