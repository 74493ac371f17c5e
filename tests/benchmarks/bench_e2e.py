"""End to end: Kafka → worker (enrich + detect + sink) → embedded ClickHouse, beside the raw consume + decode rate.

On the broker of ``KAFKA_BOOTSTRAP_SERVERS``, each on topics of its own:

* **Sustained throughput**: pre-encoded simulated spans produced as fast as the broker takes them
  into a consuming ``reloadtrace worker``, timed until every consumer group (enricher, detector,
  sink) has committed the end of its topics; beside it, a bare consumer decoding the same topic.
  OTLP ingest is the same spans as ``otlp_proto`` into ``otlp_spans``, the runs in the order Avro,
  OTLP, OTLP, Avro (each rate over its two runs). Also catch-up (the spans already in the topic at start).
* **Freshness**: spans produced at a fixed rate into an idle worker; ClickHouse's ``inserted_at``
  minus ``end_time``, p50 and p99 (the 2 s grace period is part of it).
* **Peak RSS**, sampled every 0.25 s: the worker process (the enricher), each child (sink with the
  embedded ClickHouse, detector), and their sum.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition

from infra.consumer_lag import consumer_group_lag
from infra.kafka import create_topics
from infra.processes import ManagedProcess, wait_until
from schemas.settings import KafkaSettings
from schemas.topics import TopicNames
from streams.app import consumer_groups
from streams.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
SPANS = int(os.environ.get("BENCH_E2E_SPANS", "300000"))
FRESHNESS_RATE = int(os.environ.get("BENCH_E2E_RATE", "5000"))
FRESHNESS_SECONDS = int(os.environ.get("BENCH_E2E_SECONDS", "30"))
PARTITIONS = 4
TARGET_SPANS_PER_S = 20_000
TARGET_P99_FRESHNESS_S = 5.0
TARGET_RSS_MB = 500


def realistic_spans(count: int, start_unix_nano: int) -> tuple[list[dict], list]:
    """``count`` realistic spans and the reloads of their first minute: one simulation, repeated with fresh ids and
    shifted in time (the sink benchmark uses them too)."""
    from gateway.simulation.config import SimulationConfig
    from gateway.simulation.simulator import simulate

    base = simulate(
        SimulationConfig(
            seed=5, requests_per_second_per_service=200, duration_s=60, start_time_unix_nano=start_unix_nano
        )
    )
    rng = random.Random(5)
    spans: list[dict] = []
    period = 60 * 10**9
    copy = 0
    while len(spans) < count:
        shift = copy * period
        ids: dict[str, str] = {}
        for span in base.spans:
            trace = ids.setdefault(span["trace_id"], f"{rng.getrandbits(128):032x}")
            spans.append(
                dict(
                    span,
                    trace_id=trace,
                    span_id=f"{rng.getrandbits(64):016x}",
                    parent_span_id=None if span["parent_span_id"] is None else f"{rng.getrandbits(64):016x}",
                    start_time_unix_nano=span["start_time_unix_nano"] + shift,
                    end_time_unix_nano=span["end_time_unix_nano"] + shift,
                )
            )
            if len(spans) == count:
                break
        copy += 1
    return spans, base.reloads


def _produce(kafka: KafkaSettings, spans: list[dict], reloads) -> float:
    producer = Producer(kafka.confluent_config() | {"linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4"})
    span_codec, reload_codec = kafka.codec("Span"), kafka.codec("ReloadEvent")
    for reload in reloads:
        producer.produce(kafka.topics.reloads, key=reload.service_name.encode(), value=reload_codec.encode(reload.to_dict()))
    producer.flush(30)
    started = time.perf_counter()
    for span in spans:
        while True:
            try:
                producer.produce(kafka.topics.spans, key=span["trace_id"].encode(), value=span_codec.encode(span))
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0
    return len(spans) / (time.perf_counter() - started)


def _raw_consume_decode(kafka: KafkaSettings, expected: int) -> float:
    codec = kafka.codec("Span")
    consumer = Consumer(
        kafka.confluent_config()
        | {"group.id": f"bench-raw-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(kafka.topics.spans, p, 0) for p in range(PARTITIONS)])
    seen = 0
    started = None
    while seen < expected:
        for message in consumer.consume(5_000, timeout=1.0):
            if started is None:
                started = time.perf_counter()
            if message.error() is None:
                codec.decode(message.value())
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return seen / elapsed


def _worker(kafka: KafkaSettings, directory: Path, group_id: str) -> ManagedProcess:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "RELOADTRACE_TOPIC_PREFIX": kafka.topic_prefix,
        "RELOADTRACE_PARTITIONS": str(PARTITIONS),
        "RELOADTRACE_GROUP_ID": group_id,
        "RELOADTRACE_SINK_URL": f"chdb://{directory / 'chdb'}",
    }
    return ManagedProcess(
        [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "warn"], log_path=directory / "worker.log", env=env, cwd=REPO
    ).start()


def _groups(kafka: KafkaSettings, group_id: str) -> dict[str, list[str]]:
    return consumer_groups(kafka, WorkerSettings(group_id=group_id, sink_url="chdb://unused"))


def _assigned(kafka: KafkaSettings, group_id: str) -> bool:
    """True once the group is stable with every spans partition assigned (the worker is consuming)."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka.confluent_config() | {"log_level": 3})
    try:
        description = admin.describe_consumer_groups([group_id])[group_id].result(timeout=10)
    except Exception:  # noqa: BLE001 - not there yet
        return False
    partitions = sum(len(member.assignment.topic_partitions) for member in description.members if member.assignment)
    return description.state == ConsumerGroupState.STABLE and partitions >= PARTITIONS


class _RssSampler(threading.Thread):
    """Peak RSS of the worker process and of each of its child processes (sink, detector), and of their sum."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self._process = psutil.Process(pid)
        self.peak = 0
        self.peaks: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                sizes = {"worker": self._process.memory_info().rss}
                for child in self._process.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        sizes[child.cmdline()[-1]] = child.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, sum(sizes.values()))
            for name, size in sizes.items():
                self.peaks[name] = max(self.peaks.get(name, 0), size)
            self.stop.wait(0.25)


def _query(sink_url: str, sql: str) -> list:
    code = (
        "import sys, orjson; from sinks.report import open_report_client\n"
        "c, _ = open_report_client(sys.argv[1]); print(orjson.dumps([list(r) for r in c.query(sys.argv[2]).result_rows]).decode())"
    )
    out = subprocess.run([sys.executable, "-c", code, sink_url, sql], cwd=REPO, check=True, capture_output=True, text=True)
    import orjson

    return orjson.loads(out.stdout.strip().splitlines()[-1])


def _fresh_kafka(bootstrap: str) -> KafkaSettings:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    create_topics(bootstrap, TopicNames(prefix).with_configs(), partitions=PARTITIONS)
    return KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=PARTITIONS)


def _encoded(kafka: KafkaSettings, spans: list[dict]) -> list[tuple[bytes, bytes]]:
    codec = kafka.codec("Span")
    return [(span["trace_id"].encode(), codec.encode(span)) for span in spans]


def _produce_raw(kafka: KafkaSettings, messages: list[tuple[bytes, bytes]]) -> None:
    _produce_raw_to(kafka, kafka.topics.spans, messages)


OTLP_SPANS_PER_MESSAGE = 512
"""Spans per OTLP message of the OTLP ingest run (a Collector's batch; one trace a message decodes ~20% slower)."""


def _otlp_messages(spans: list[dict]) -> list[tuple[bytes | None, bytes]]:
    from schemas.otlp import span_otlp_request

    return [
        (None, span_otlp_request(spans[first : first + OTLP_SPANS_PER_MESSAGE]).SerializeToString())
        for first in range(0, len(spans), OTLP_SPANS_PER_MESSAGE)
    ]


def _produce_raw_to(kafka: KafkaSettings, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer(kafka.confluent_config() | {"linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4"})
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0


def _run_until_landed(kafka: KafkaSettings, directory: Path, group_id: str, feed=None) -> dict:
    """Start a worker; once it consumes, call ``feed()``; wait until every group committed everything."""
    started = time.perf_counter()
    worker = _worker(kafka, directory, group_id)
    sampler = _RssSampler(worker.pid)
    sampler.start()
    groups = _groups(kafka, group_id)
    try:
        wait_until(lambda: _assigned(kafka, group_id), timeout_s=120, interval_s=0.2, what="worker consuming", alive=[worker])
        assigned = time.perf_counter()
        if feed is not None:
            feed()
        while not all(consumer_group_lag(kafka.bootstrap_servers, g, n) == 0 for g, n in groups.items()):
            worker.check_alive()
            time.sleep(0.25)
        done = time.perf_counter()
    finally:
        sampler.stop.set()
        log = directory / "worker.log"
        log_bytes_at_stop = log.stat().st_size if log.exists() else 0  # what the stop itself logs comes after
        worker.stop()
    return {
        "log_bytes_at_stop": log_bytes_at_stop,
        "startup_s": assigned - started,
        "seconds": done - assigned,
        "peak_rss_mb": sampler.peak / 2**20,
        "process_rss_mb": {name: size / 2**20 for name, size in sampler.peaks.items()},
    }


def _sustained(bootstrap: str, directory: Path, reloads: list, topic_of, messages: list) -> dict:
    """One sustained run on fresh topics: ``messages`` produced into ``topic_of(topics)`` of a running worker."""
    kafka = _fresh_kafka(bootstrap)
    _produce(kafka, [], reloads)
    run = _run_until_landed(
        kafka, directory, f"bench-{uuid.uuid4().hex[:6]}", feed=lambda: _produce_raw_to(kafka, topic_of(kafka.topics), messages)
    )
    run["rows"] = _query(f"chdb://{directory / 'chdb'}", "SELECT count() FROM spans_enriched FINAL")[0][0]
    return run


def throughput(bootstrap: str, directory: Path) -> dict:
    spans, reloads = realistic_spans(SPANS, time.time_ns() - 600 * 10**9)
    # Sustained: the worker consumes while a producer (pre-encoded messages) writes as fast as it can; the same
    # spans as Avro and as OTLP (otlp_proto, as a Collector's kafkaexporter writes them), in the order Avro, OTLP,
    # OTLP, Avro, so that a machine drifting during the runs weighs on both alike.
    avro_messages = _encoded(KafkaSettings(), spans)
    otlp_messages = _otlp_messages(spans)
    feeds = {"avro": (lambda t: t.spans, avro_messages), "otlp": (lambda t: t.otlp_spans, otlp_messages)}
    runs: dict[str, list[dict]] = {"avro": [], "otlp": []}
    for number, kind in enumerate(("avro", "otlp", "otlp", "avro")):
        runs[kind].append(_sustained(bootstrap, directory / f"{kind}{number}", reloads, *feeds[kind]))
    live = runs["avro"][0]
    # Catch-up: the same spans already in the topic when the worker starts (a restart after an outage).
    backlog = _fresh_kafka(bootstrap)
    produce_rate = _produce(backlog, spans, reloads)
    raw_rate = _raw_consume_decode(backlog, len(spans))
    catch_up = _run_until_landed(backlog, directory / "backlog", f"bench-{uuid.uuid4().hex[:6]}")
    rate = lambda kind: len(spans) * len(runs[kind]) / sum(run["seconds"] for run in runs[kind])  # noqa: E731
    return {
        "spans": len(spans),
        "rows": min(run["rows"] for run in runs["avro"]),
        "produce_rate": produce_rate,
        "raw_rate": raw_rate,
        "e2e_rate": rate("avro"),
        "e2e_runs": [len(spans) / run["seconds"] for run in runs["avro"]],
        "otlp_rate": rate("otlp"),
        "otlp_runs": [len(spans) / run["seconds"] for run in runs["otlp"]],
        "otlp_rows": min(run["rows"] for run in runs["otlp"]),
        "catch_up_rate": len(spans) / catch_up["seconds"],
        "startup_s": live["startup_s"],
        "peak_rss_mb": max(live["peak_rss_mb"], catch_up["peak_rss_mb"]),
        "live_rss_mb": live["peak_rss_mb"],
        "catch_up_rss_mb": catch_up["peak_rss_mb"],
        "live_process_rss_mb": live["process_rss_mb"],
        "catch_up_process_rss_mb": catch_up["process_rss_mb"],
    }


def freshness(bootstrap: str, directory: Path) -> dict:
    kafka = _fresh_kafka(bootstrap)
    template, reloads = realistic_spans(FRESHNESS_RATE, time.time_ns())
    group_id = f"bench-{uuid.uuid4().hex[:6]}"
    worker = _worker(kafka, directory, group_id)
    producer = Producer(kafka.confluent_config() | {"linger.ms": 5})
    codec, reload_codec = kafka.codec("Span"), kafka.codec("ReloadEvent")
    try:
        for reload in reloads:
            producer.produce(kafka.topics.reloads, key=reload.service_name.encode(), value=reload_codec.encode(reload.to_dict()))
        producer.flush(30)
        wait_until(lambda: _assigned(kafka, group_id), timeout_s=60, what="worker consuming", alive=[worker])
        time.sleep(2)
        rng = random.Random(9)
        total = FRESHNESS_RATE * FRESHNESS_SECONDS
        started = time.perf_counter()
        for number in range(total):
            due = started + number / FRESHNESS_RATE
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            span = template[number % len(template)]
            duration = span["end_time_unix_nano"] - span["start_time_unix_nano"]
            end = time.time_ns()
            record = dict(
                span,
                trace_id=f"{rng.getrandbits(128):032x}",
                span_id=f"{rng.getrandbits(64):016x}",
                start_time_unix_nano=end - duration,
                end_time_unix_nano=end,
            )
            producer.produce(kafka.topics.spans, key=record["trace_id"].encode(), value=codec.encode(record))
            producer.poll(0)
        producer.flush(60)
        achieved = total / (time.perf_counter() - started)
        groups = _groups(kafka, group_id)
        wait_until(
            lambda: all(consumer_group_lag(bootstrap, g, n) == 0 for g, n in groups.items()),
            timeout_s=300, interval_s=0.5, what="drained", alive=[worker],
        )
    finally:
        worker.stop()
    p50, p99, worst = _query(
        f"chdb://{directory / 'chdb'}",
        "SELECT quantiles(0.5, 0.99, 1)(toUnixTimestamp64Milli(inserted_at) - intDiv(toUnixTimestamp64Nano(end_time), 1000000))"
        " FROM spans_enriched WHERE enrichment_revision = 0",
    )[0][0]
    return {"rate": achieved, "spans": total, "p50_s": p50 / 1000, "p99_s": p99 / 1000, "max_s": worst / 1000}


def _runs(rates: list[float]) -> str:
    return " and ".join(f"{rate:,.0f}" for rate in rates)


def _mb(peaks: dict[str, float], name: str) -> str:
    return f"{peaks[name]:.0f} MB" if name in peaks else "-"


def main() -> str:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        t = throughput(bootstrap, Path(first))
        f = freshness(bootstrap, Path(second))
    verdict = lambda ok: "meets" if ok else "**misses**"
    return f"""## End to end: Kafka → worker (enrich + detect + sink) → embedded ClickHouse

One `reloadtrace worker` (default settings: the enricher in the worker process, the sink and the detector in a child process each; grace period 2 s), {PARTITIONS} partitions, the broker on the same machine.

| figure | measured | limit / target | verdict |
|---|---|---|---|
| sustained end-to-end spans/s ({t['spans']:,} spans produced as fast as possible into a running worker, until all landed; two runs: {_runs(t['e2e_runs'])}) | {t['e2e_rate']:,.0f} | target ≥ {TARGET_SPANS_PER_S:,} | {verdict(t['e2e_rate'] >= TARGET_SPANS_PER_S)} |
| sustained OTLP ingest spans/s (the same spans as `otlp_proto`, {OTLP_SPANS_PER_MESSAGE} a message, into `otlp_spans` of a running worker, between the two Avro runs; {t['otlp_rows']:,} landed; two runs: {_runs(t['otlp_runs'])}) | {t['otlp_rate']:,.0f} ({t['otlp_rate'] / t['e2e_rate']:.0%} of Avro) | within 30% of Avro | {verdict(t['otlp_rate'] >= 0.7 * t['e2e_rate'] and t['otlp_rows'] == t['spans'])} |
| catch-up spans/s (the same spans already in the topic when the worker starts) | {t['catch_up_rate']:,.0f} | | |
| worker start-up until consuming | {t['startup_s']:.1f} s | | |
| raw consume + Avro decode of the same topic (one consumer, nothing else) | {t['raw_rate']:,.0f} | the ceiling of one Python process | |
| spans in ClickHouse after the run (FINAL) | {t['rows']:,} | {t['spans']:,} produced | {verdict(t['rows'] == t['spans'])} |
| worker process peak RSS (enricher), sustained run (catch-up run: {_mb(t['catch_up_process_rss_mb'], 'worker')}) | {_mb(t['live_process_rss_mb'], 'worker')} | ≤ {TARGET_RSS_MB} MB | {verdict(t['live_process_rss_mb'].get('worker', 0) <= TARGET_RSS_MB)} |
| child processes' peak RSS, sustained run (catch-up run): sink with embedded ClickHouse / detector | {_mb(t['live_process_rss_mb'], 'sink')} ({_mb(t['catch_up_process_rss_mb'], 'sink')}) / {_mb(t['live_process_rss_mb'], 'detector')} ({_mb(t['catch_up_process_rss_mb'], 'detector')}) | | |
| whole worker (process + children) peak RSS, sustained run (catch-up run: {t['catch_up_rss_mb']:.0f} MB) | {t['live_rss_mb']:.0f} MB | ≤ {TARGET_RSS_MB} MB | {verdict(t['live_rss_mb'] <= TARGET_RSS_MB)} |
| freshness p50 (span end → row in ClickHouse) at {f['rate']:,.0f} spans/s for {FRESHNESS_SECONDS} s | {f['p50_s']:.2f} s | includes the 2 s grace period | |
| freshness p99 | {f['p99_s']:.2f} s | ≤ {TARGET_P99_FRESHNESS_S:.0f} s | {verdict(f['p99_s'] <= TARGET_P99_FRESHNESS_S)} |
| freshness max | {f['max_s']:.2f} s | | |

(The producer of the backlog ran at {t['produce_rate']:,.0f} spans/s before the worker started.)

Command: `make bench BENCH=e2e` (or `KAFKA_BOOTSTRAP_SERVERS=… .venv/bin/python -m tests.benchmarks e2e`; sizes via
`BENCH_E2E_SPANS`, `BENCH_E2E_RATE`, `BENCH_E2E_SECONDS`).
"""
