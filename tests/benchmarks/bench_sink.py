"""Sink ingest rows/s into the embedded engine: the real sink stage on the broker, beside the engine's limits.

Rows are EnrichedSpan messages (~410 bytes) pre-filled into ``spans.enriched`` (4 partitions). "Sink
ingest" is :class:`streams.sink.SinkConsumer` as the worker runs it, timed from the first message
read to the commit of the last one. The limits, from the same run and rows with no Kafka and no
Python per row: the same Avro containers inserted straight (one client, then two), the rows as
Arrow tables into ``spans_enriched`` and into a bare copy (no views). Realistic rows: the sink run
again over the e2e benchmark's simulated spans enriched by the real core (~1.6 KB, ~20 attributes).

Where the CPU goes: every thread's CPU of this process from ``/proc/self/task``, grouped by job
(inserts, background merges, the consumer thread, librdkafka), and the broker's process CPU
(psutil); their sum per row against the machine's cores is the most this machine can ingest.
"""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Producer

from infra.kafka import create_topics
from schemas.codec import codec_for
from schemas.kafka_io import MessageView
from schemas.settings import KafkaSettings
from schemas.topics import TopicNames
from sinks.avro_blocks import container, landing_table
from sinks.clickhouse import ClickHouseSink, open_client
from sinks.ddl import apply_schema
from sinks.settings import SinkSettings
from sinks.testing import enriched_spans
from streams.sink import SinkConsumer

ROWS = int(os.environ.get("BENCH_SINK_ROWS", "400000"))
REALISTIC_ROWS = int(os.environ.get("BENCH_SINK_REALISTIC_ROWS", "200000"))
TARGET_ROWS_PER_S = 200_000
PARTITIONS = 4
DEFAULTS = SinkSettings()
FLUSH_ROWS = int(os.environ.get("BENCH_SINK_FLUSH_ROWS", DEFAULTS.flush_rows))
WRITERS = int(os.environ.get("BENCH_SINK_WRITERS", DEFAULTS.writers))
_SAME_AS_THE_SINK = {"optimize_on_insert": 0, "deduplicate_blocks_in_dependent_materialized_views": 1}


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads — chDB works in threads)."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def in_parallel(clients: Sequence[Any], jobs: Sequence[Callable[[Any], None]]) -> None:
    """Run ``jobs`` spread round-robin over one thread per client (each thread on its own client)."""

    def work(index: int) -> None:
        for job in jobs[index :: len(clients)]:
            job(clients[index])

    threads = [threading.Thread(target=work, args=(index,)) for index in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of each live thread of this process by native id, with its OS name (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    threads: dict[int, tuple[str, float]] = {}
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            threads[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return threads


def cpu_by_role(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], python_roles: dict[int, str]
) -> dict[str, float]:
    """CPU seconds spent between two :func:`thread_cpu` snapshots, by role.

    Python threads are named by ``python_roles`` (native id -> role); the others by the names the
    engine (ClickHouse: ``MergeMutate`` merges, pool threads running a query's pipeline) and
    librdkafka (``rdk:*``) give their threads.
    """
    roles: dict[str, float] = {}
    for tid, (name, seconds) in after.items():
        spent = seconds - before.get(tid, (name, 0.0))[1]
        if tid in python_roles:
            role = python_roles[tid]
        elif name.startswith("MergeMutate"):
            role = MERGES
        elif name.startswith("rdk:"):
            role = LIBRDKAFKA
        elif name.startswith(("ThreadPool", "QueryPipelineEx", "QueryPullPipeEx", "QueryPushPipeEx")):
            role = INSERTS
        else:
            role = OTHER
        roles[role] = roles.get(role, 0.0) + spent
    return roles


INSERTS = "engine: inserts (writer threads, the engine's query threads)"
MERGES = "engine: background merges"
CONSUMER = "consumer thread (Python: consume, header check, batching, commits)"
LIBRDKAFKA = "librdkafka threads (fetch, decompression)"
OTHER = "other threads of the process (the benchmark's own loop, chDB housekeeping)"
BROKER = "the broker (another process on the same cores)"


def broker_process(bootstrap: str) -> psutil.Process | None:
    """The process listening on the bootstrap port, when it runs on this machine."""
    port = int(bootstrap.rsplit(":", 1)[1])
    with contextlib.suppress(psutil.Error, OSError):
        for connection in psutil.net_connections(kind="tcp"):
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
                return psutil.Process(connection.pid)
    return None


def process_cpu(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    with contextlib.suppress(psutil.Error):
        times = process.cpu_times()
        return times.user + times.system
    return 0.0


def wait_for_merges(client: Any, timeout_s: float = 120) -> None:
    """Until the engine runs no background merge (so one measurement's merges do not bill the next)."""
    deadline = time.monotonic() + timeout_s
    time.sleep(0.2)
    while client.command("SELECT count() FROM system.merges") and time.monotonic() < deadline:
        time.sleep(0.1)


class _TimedConsumer(SinkConsumer):
    """The sink consumer, noting when the first message came and when each commit went out."""

    first_message: float | None = None
    last_commit: float | None = None

    def _ingest_all(self, messages: list[Any]) -> None:
        if messages and self.first_message is None:
            self.first_message = time.perf_counter()
        super()._ingest_all(messages)

    def _commit(self) -> None:
        super()._commit()
        if not self._to_commit:
            self.last_commit = time.perf_counter()


def realistic_messages(count: int, codec: Any) -> list[bytes]:
    """``count`` EnrichedSpan messages of the simulator's traffic, enriched by the real core (as the enricher would)."""
    from streams.enrichment import enrich
    from streams.timeline import VersionTimeline
    from tests.benchmarks.bench_e2e import realistic_spans

    spans, reloads = realistic_spans(count, time.time_ns() - 3_600 * 10**9)
    timeline = VersionTimeline()
    for reload in reloads:
        timeline.add(reload)
    return [codec.encode(enrich(span, timeline)) for span in spans]


def fill_topic(bootstrap: str, messages: list[bytes], *, compression: str = "none") -> KafkaSettings:
    prefix = f"benchsink{uuid.uuid4().hex[:6]}."
    create_topics(bootstrap, TopicNames(prefix).with_configs(), partitions=PARTITIONS)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=PARTITIONS)
    producer = Producer(
        kafka.confluent_config() | {"linger.ms": 20, "batch.size": 1_000_000, "compression.type": compression}
    )
    topic = kafka.topics.spans_enriched
    for index, value in enumerate(messages):
        while True:
            try:
                producer.produce(topic, value=value, key=b"%d" % (index // 4), partition=index % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
        if index % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return kafka


@dataclass
class Consumed:
    """One timed run of the sink consumer: from its first message to its last commit."""

    wall: float
    cpu: float
    sink: ClickHouseSink
    flushes: int
    roles: dict[str, float]
    """CPU seconds over the same window by role (see :func:`cpu_by_role`), the broker's included."""


def consume_all(
    kafka: KafkaSettings, directory: str, *, writers: int, rows: int = ROWS, database: str = "bench_sink"
) -> Consumed:
    """Run the sink consumer over the whole pre-filled topic, timed from its first message to its last commit."""
    settings = SinkSettings(
        url=f"chdb://{directory}",
        database=database,
        group_id=f"bench-sink-{uuid.uuid4().hex[:6]}",
        writers=writers,
        flush_rows=FLUSH_ROWS,
    )
    consumer = _TimedConsumer(kafka, settings)
    _ = consumer.sink  # opens the engine and applies the DDL before the clock starts
    stop = threading.Event()
    errors: list[BaseException] = []
    cpu_at_first: list[float] = []

    def run() -> None:
        try:
            consumer.run(stop)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    broker = broker_process(kafka.bootstrap_servers)
    gc.collect()
    thread = threading.Thread(target=run, name="sink")
    thread.start()
    deadline = time.monotonic() + 300
    threads_at_first: dict[int, tuple[str, float]] = {}
    broker_at_first = 0.0
    while time.monotonic() < deadline and not errors:
        if consumer.first_message is not None and not cpu_at_first:
            cpu_at_first.append(time.process_time())
            threads_at_first, broker_at_first = thread_cpu(), process_cpu(broker)
        if consumer.stats.rows_flushed >= rows and consumer.last_commit is not None:
            break
        time.sleep(0.002)
    cpu_end = time.process_time()
    threads_at_end, broker_at_end = thread_cpu(), process_cpu(broker)  # before the writer threads end
    python_roles = {
        live.native_id: INSERTS if live.name.startswith("sink-writer") else CONSUMER if live is thread else OTHER
        for live in threading.enumerate()
        if live.native_id is not None
    }
    stop.set()
    thread.join(60)
    assert not errors, errors
    assert consumer.stats.rows_flushed == rows and consumer.first_message and consumer.last_commit
    roles = cpu_by_role(threads_at_first, threads_at_end, python_roles)
    if broker is not None:
        roles[BROKER] = broker_at_end - broker_at_first
    return Consumed(
        consumer.last_commit - consumer.first_message,
        cpu_end - cpu_at_first[0],
        consumer.sink,
        consumer.stats.flushes,
        roles,
    )


def main() -> str:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    codec = codec_for("EnrichedSpan")
    messages = [codec.encode(span) for span in enriched_spans(ROWS, seed=3)]
    kafka = fill_topic(bootstrap, messages)
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as directory:
        consumed = consume_all(kafka, directory, writers=WRITERS)
        sink, flushes = consumed.sink, consumed.flushes
        results["sink"] = (consumed.wall, consumed.cpu)
        try:
            assert sink.count("spans_enriched") == ROWS
            wait_for_merges(sink.client)
            one = consume_all(kafka, directory, writers=1)
            results["sink1"] = (one.wall, one.cpu)
            client = sink.client
            schema, header = codec.split(messages[0])
            containers = [
                container(schema, [m[header:] for m in messages[i : i + FLUSH_ROWS]])
                for i in range(0, ROWS, FLUSH_ROWS)
            ]
            arrow = client.query_arrow(
                "SELECT * EXCEPT (inserted_at) FROM bench_sink.spans_enriched FINAL", use_strings=True
            )
            arrows = [arrow.slice(i, FLUSH_ROWS) for i in range(0, ROWS, FLUSH_ROWS)]
            clients = [client, open_client(f"chdb://{directory}")]
            for name, count in (("avro1", 1), ("avro2", 2), ("arrow1", 1), ("arrow2", 2), ("bare", 1)):
                database = f"raw_{name}"
                client.command(f"CREATE DATABASE {database}")
                apply_schema(client, database)
                if name == "bare":
                    client.command(f"CREATE TABLE {database}.bare AS {database}.spans_enriched")
                if name.startswith("avro"):
                    jobs = [
                        (
                            lambda c, i=i, b=b, d=database: c.raw_insert(
                                f"{d}.{landing_table('spans_enriched', schema)}",
                                None,
                                b,
                                fmt="Avro",
                                settings=_SAME_AS_THE_SINK | {"insert_deduplication_token": f"{d}-{i}"},
                            )
                        )
                        for i, b in enumerate(containers)
                    ]
                else:
                    table = "bare" if name == "bare" else "spans_enriched"
                    jobs = [
                        (lambda c, a=a, d=database, t=table: c.insert_arrow(f"{d}.{t}", a, settings=_SAME_AS_THE_SINK))
                        for a in arrows
                    ]
                wait_for_merges(client)
                results[name] = timed(lambda jobs=jobs, count=count: in_parallel(clients[:count], jobs))
                if name == "avro2":  # the same inserts with the CPU of the merges they cause
                    merges_cpu = time.process_time()
                    wait_for_merges(client)
                    results["avro2_merged"] = (results[name][0], results[name][1] + time.process_time() - merges_cpu)
                table = "bare" if name == "bare" else "spans_enriched"
                assert client.command(f"SELECT count() FROM {database}.{table}") == ROWS
            clients[1].close()
            # the consumer's work before the engine, alone: header check, batching, container bytes
            python_wall, python_cpu = timed(lambda: in_process_python(messages, codec))
            results["python"] = (python_wall, python_cpu)
            realistic = realistic_messages(REALISTIC_ROWS, codec)
            realistic_bytes = sum(map(len, realistic)) / len(realistic)
            realistic_kafka = fill_topic(bootstrap, realistic, compression="lz4")
            del realistic
            wait_for_merges(client)
            real = consume_all(
                realistic_kafka, directory, writers=WRITERS, rows=REALISTIC_ROWS, database="bench_sink_realistic"
            )
            assert real.sink.count("spans_enriched") == REALISTIC_ROWS
            real.sink.close()
        finally:
            sink.close()

    def rate(key: str) -> str:
        wall, cpu = results[key]
        return f"{ROWS / wall:,.0f} | {ROWS / cpu:,.0f}"

    sink_rate = ROWS / results["sink"][0]
    avro2 = ROWS / results["avro2"][0]
    cores = os.cpu_count() or 1
    per_row = {role: seconds / ROWS * 1e6 for role, seconds in consumed.roles.items()}
    total_us = sum(per_row.values())
    engine_us = results["avro2_merged"][1] / ROWS * 1e6
    budget = [f"| {role} | {us:.2f} |" for role, us in sorted(per_row.items(), key=lambda item: -item[1])]
    lines = [
        "## ClickHouse sink (embedded chDB)",
        "",
        (
            f"{ROWS:,} EnrichedSpan messages pre-filled in {PARTITIONS} partitions of `spans.enriched` on the broker;"
            f" the sink's defaults: flush every {FLUSH_ROWS:,} rows, {WRITERS} writers ({flushes} flushes)."
            " Rows/s by wall time; CPU rows/s counts the CPU time of the process, all threads (chDB's too)."
        ),
        "",
        "| what | rows/s | CPU rows/s |",
        "|---|---:|---:|",
        f"| **sink ingest**: `SinkConsumer` from the broker, first message to last commit ({WRITERS} writers) | **{rate('sink').replace(' | ', '** | ', 1)} |",
        f"| the same with 1 writer (flushes not overlapped) | {rate('sink1')} |",
        f"| limit: the same Avro containers inserted straight, 1 client | {rate('avro1')} |",
        f"| limit: the same Avro containers inserted straight, 2 clients at once | {rate('avro2')} |",
        f"| limit: the rows as Arrow into `spans_enriched` (same 2 views), 1 client | {rate('arrow1')} |",
        f"| limit: the rows as Arrow into `spans_enriched` (same 2 views), 2 clients at once | {rate('arrow2')} |",
        f"| limit: the rows as Arrow into a bare copy (no views), 1 client | {rate('bare')} |",
        (
            f"| sink ingest of realistic rows (the simulator's enriched spans, {realistic_bytes:,.0f} B per message,"
            f" LZ4 batches; {REALISTIC_ROWS:,} rows, {WRITERS} writers) | {REALISTIC_ROWS / real.wall:,.0f} |"
            f" {REALISTIC_ROWS / real.cpu:,.0f} |"
        ),
        f"| the consumer's Python per row alone (header check, batch, container bytes; no Kafka, no engine) | {rate('python')} |",
        "",
        (
            f"Target: >= {TARGET_ROWS_PER_S:,} rows/s: {'met' if sink_rate >= TARGET_ROWS_PER_S else 'NOT met'}"
            f" ({sink_rate / TARGET_ROWS_PER_S:.0%} of it); the sink runs at {sink_rate / avro2:.0%} of the engine's"
            " own rate for the same containers on 2 clients."
        ),
        "",
        f"Where the CPU of the sink-ingest run went, per row ({cores} cores on this machine):",
        "",
        "| role | CPU µs per row |",
        "|---|---:|",
        *budget,
        f"| **total** | **{total_us:.2f}** |",
        "",
        (
            f"At that cost {cores} cores ingest at most {cores / total_us * 1e6:,.0f} rows/s. The engine alone (the same"
            f" containers on 2 clients, no Kafka, no Python per row) costs {engine_us:.2f} µs of CPU per row once the"
            f" background merges its inserts cause are counted: {cores / engine_us * 1e6:,.0f} rows/s on {cores} cores"
            " with nothing else running."
        ),
        "",
        (
            "Command: `KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 .venv/bin/python -m tests.benchmarks.bench_sink`"
            " (`BENCH_SINK_ROWS` and `BENCH_SINK_REALISTIC_ROWS` set the row counts, `BENCH_SINK_FLUSH_ROWS` and"
            " `BENCH_SINK_WRITERS` the sink's)."
        ),
    ]
    return "\n".join(lines)


def in_process_python(messages: list[bytes], codec: Any) -> None:
    """What the consumer does in Python for these messages, with no Kafka and no engine (inserts are no-ops)."""

    class NoEngine:
        database = ""

        def raw_insert(self, *args: Any, **kwargs: Any) -> None:
            return None

    settings = SinkSettings(url="chdb:///unused", flush_rows=FLUSH_ROWS, flush_interval_ms=3_600_000, writers=1)
    sink = ClickHouseSink(settings, client=NoEngine(), apply_ddl=False)
    consumer = SinkConsumer(KafkaSettings(topic_prefix=""), settings, sink=sink)
    topic = KafkaSettings(topic_prefix="").topics.spans_enriched
    fake = [MessageView(topic, index % PARTITIONS, index // PARTITIONS, value) for index, value in enumerate(messages)]
    consumer._open_writers(sink)
    consumer._commit = lambda: None  # type: ignore[method-assign]
    try:
        for start in range(0, len(fake), 10_000):
            consumer._ingest_all(fake[start : start + 10_000])  # type: ignore[arg-type]
            if consumer._due():
                consumer._seal_and_submit()
            consumer._complete_done()
        consumer._drain()
    finally:
        consumer._close_writers()
    assert consumer.stats.rows_flushed == len(messages)


if __name__ == "__main__":
    print(main())
