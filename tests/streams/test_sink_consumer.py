"""The sink consumer end to end: real broker, real Avro, real chDB; exact counts across duplicates and a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.settings import KafkaSettings
from sinks.clickhouse import ClickHouseSink
from sinks.settings import SinkSettings
from sinks.testing import BASE_TIME_UNIX_NANO, enriched_spans
from streams.sink import sink_runtime
from tests.threads import start_stoppable

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

REPO = Path(__file__).resolve().parents[2]


def produce(kafka: KafkaSettings, topic: str, values: list[bytes | None], keys: list[bytes] | None = None) -> None:
    producer = Producer(kafka.confluent_config() | {"linger.ms": 5})
    for index, value in enumerate(values):
        key = keys[index] if keys else f"k{index}".encode()
        producer.produce(topic, value=value, key=key)
        if index % 5_000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def end_offsets(kafka: KafkaSettings, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer(kafka.confluent_config() | {"group.id": "probe"})
    try:
        ends = {}
        for topic in topics:
            for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                ends[(topic, partition)] = high
        return ends
    finally:
        consumer.close()


def committed(kafka: KafkaSettings, group: str, keys: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    consumer = Consumer(kafka.confluent_config() | {"group.id": group})
    try:
        offsets = consumer.committed([TopicPartition(t, p) for t, p in keys], timeout=10)
        return {(tp.topic, tp.partition): tp.offset for tp in offsets}
    finally:
        consumer.close()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def reload_event(index: int) -> dict[str, Any]:
    return {
        "reload_id": f"r{index}", "service_name": "llm-gateway", "service_instance_id": None, "component": "model",
        "old_version": None, "new_version": f"m{index}", "requested_time_unix_nano": BASE_TIME_UNIX_NANO + index,
        "effective_time_unix_nano": BASE_TIME_UNIX_NANO + index + 1_000, "status": "SUCCEEDED", "source": "test",
        "trace_id": None, "span_id": None, "model_context": {}, "changed_keys": [],
    }


def anomaly(severity: str) -> dict[str, Any]:
    return {
        "anomaly_id": "a1", "reload_id": "r1", "service_name": "llm-gateway", "component": "model", "old_version": "m0",
        "new_version": "m1", "metric": "latency", "baseline_value": 1.0, "observed_value": 2.0, "p_value": 0.01,
        "baseline_count": 10, "observed_count": 10, "detected_time_unix_nano": BASE_TIME_UNIX_NANO, "severity": severity,
    }


def test_duplicate_deliveries_and_poison_messages_land_exactly_once(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    topics = kafka_settings.topics
    span_codec = kafka_settings.codec("EnrichedSpan")
    spans = enriched_spans(3_000, seed=7)
    span_values = [span_codec.encode(span) for span in spans]
    poison = [b"not avro at all", b"\xc3\x01" + b"\x00" * 8 + b"body", span_values[0][:30]]
    produce(kafka_settings, topics.spans_enriched, span_values + poison + span_values[:1_000] + [None])
    reload_codec = kafka_settings.codec("ReloadEvent")
    produce(kafka_settings, topics.reloads, [reload_codec.encode(reload_event(i)) for i in (1, 2, 1)], [b"s"] * 3)
    anomaly_codec = kafka_settings.codec("Anomaly")
    produce(kafka_settings, topics.reload_anomalies, [anomaly_codec.encode(anomaly(s)) for s in ("WARNING", "CRITICAL")])
    letter = {
        "source_topic": topics.spans, "source_partition": 0, "source_offset": 5, "raw_key": None, "raw_value": b"??",
        "error_kind": "wrong_magic", "error": "bad", "stage": "decode", "dead_lettered_time_unix_nano": BASE_TIME_UNIX_NANO,
    }
    produce(kafka_settings, topics.dead_letter, [kafka_settings.codec("DeadLetter").encode(letter)] * 2)
    total = len(span_values) + len(poison) + 1_000 + 1 + 3 + 2 + 2

    group = f"sink-{uuid.uuid4().hex[:8]}"
    settings = SinkSettings(url=f"chdb://{tmp_path / 'chdb'}", flush_rows=700, flush_interval_ms=200, group_id=group)
    runtime = sink_runtime(kafka_settings, settings, batch_size=400)
    consumer = runtime.stage
    thread, stop, errors = start_stoppable(runtime.run, name="sink")
    try:
        wait_for(lambda: consumer.stats.messages >= total or bool(errors), 90, "every message to be consumed")
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors
    sink = consumer.sink
    try:
        assert sink.count("spans_enriched") == 3_000
        assert sink.query("SELECT uniqExact(trace_id, span_id) FROM spans_enriched")[0][0] == 3_000
        assert sink.count("reload_events") == 2
        assert sink.query("SELECT severity FROM anomalies FINAL") == [("CRITICAL",)]
        letters = sink.query(
            "SELECT source_topic, error_kind, stage FROM dead_letters FINAL ORDER BY source_topic, source_offset"
        )
        from_sink = [row for row in letters if row[0] == topics.spans_enriched]
        assert sorted(row[1] for row in from_sink) == sorted(["wrong_magic", "unknown_fingerprint", "malformed", "tombstone"])
        assert {row[2] for row in from_sink} == {"decode", "sink"}
        assert [row for row in letters if row[0] == topics.spans] == [(topics.spans, "wrong_magic", "decode")]
        raw = sink.query(
            "SELECT raw_value FROM dead_letters FINAL WHERE error_kind = 'wrong_magic' AND stage = 'decode'"
            " AND source_topic = {topic:String}",
            {"topic": topics.spans_enriched},
            binary_strings=True,
        )
        assert raw == [(b"not avro at all",)]
        ends = end_offsets(kafka_settings, [topics.spans_enriched, topics.reloads, topics.reload_anomalies, topics.dead_letter])
        ends = {key: end for key, end in ends.items() if end > 0}  # empty partitions have nothing to commit
        assert committed(kafka_settings, group, list(ends)) == ends
    finally:
        consumer.close_sink()


def run_child(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_crash_between_insert_and_commit_re_inserts_and_final_counts_stay_exact(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    topics = kafka_settings.topics
    codec = kafka_settings.codec("EnrichedSpan")
    spans = enriched_spans(4_000, seed=11)
    produce(kafka_settings, topics.spans_enriched, [codec.encode(span) for span in spans])
    group = f"sink-{uuid.uuid4().hex[:8]}"
    chdb_path = tmp_path / "chdb"
    env = os.environ | {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "RELOADTRACE_TOPIC_PREFIX": topics.prefix,
        "RELOADTRACE_SINK_URL": f"chdb://{chdb_path}",
        "RELOADTRACE_SINK_FLUSH_ROWS": "1000",
        "RELOADTRACE_SINK_FLUSH_INTERVAL_MS": "60000",
        "RELOADTRACE_SINK_GROUP_ID": group,
        "RELOADTRACE_SINK_SESSION_TIMEOUT_MS": "6000",
        "PYTHONPATH": str(REPO),
    }
    keys = list(end_offsets(kafka_settings, [topics.spans_enriched]))
    crashed = run_child([sys.executable, "-m", "tests.streams.sink_child", "2"], env)
    output, _ = crashed.communicate(timeout=120)
    assert crashed.returncode == -signal.SIGKILL, output
    assert "flush 2" in output
    first_commit = sum(max(offset, 0) for offset in committed(kafka_settings, group, keys).values())
    flushed = sum(int(line.split()[1]) for line in output.splitlines() if line.startswith("flushed "))
    assert 0 < first_commit < flushed  # flush 1 was committed, flush 2 was not ...
    sink = ClickHouseSink(SinkSettings(url=f"chdb://{chdb_path}"))
    try:
        # ... yet its rows are in ClickHouse (and maybe those of flush 3, in flight on the other writer)
        assert sink.count("spans_enriched") >= flushed
    finally:
        sink.close()

    restarted = run_child([str(Path(sys.executable).parent / "reloadtrace"), "sink"], env)
    ends = end_offsets(kafka_settings, [topics.spans_enriched])
    assert all(end > 0 for end in ends.values())
    try:
        wait_for(lambda: committed(kafka_settings, group, keys) == ends, 120, "the restarted sink to commit everything")
    finally:
        restarted.send_signal(signal.SIGTERM)
        output, _ = restarted.communicate(timeout=60)
    assert restarted.returncode == 0, output

    sink = ClickHouseSink(SinkSettings(url=f"chdb://{chdb_path}"))
    try:
        assert sink.count("spans_enriched", final=False) >= 4_000  # flush 2's rows re-read and re-inserted
        assert sink.count("spans_enriched") == 4_000
        stored = {row[0] for row in sink.query("SELECT span_id FROM spans_enriched FINAL")}
        assert stored == {span["span_id"] for span in spans}
    finally:
        sink.close()
