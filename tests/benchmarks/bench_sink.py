"""Sink ingest rows/s into the embedded engine: the real SinkConsumer on the broker, beside the engine's limits.

Rows are EnrichedSpan Kafka messages (single-object Avro, ~410 bytes, 5 span attributes, 2 resource
attributes, 2 versions) pre-filled into ``spans.enriched`` (4 partitions) on the broker of
``KAFKA_BOOTSTRAP_SERVERS``. "Sink ingest" is :class:`sinks.consumer.SinkConsumer` as the worker runs
it (default settings but the data directory): consume, header check, batches sealed every
``flush_rows`` and written by the writer threads as Avro containers into ``spans_enriched_avro``
(ClickHouse decodes and converts, the two materialized views run), offsets committed in order. It is
timed from the first message read to the commit of the last one (the group join before is not).

The limits, from the same run and the same rows, with no Kafka and no Python per row: the same Avro
containers inserted straight (one client, then two clients at once), the rows as Arrow tables into
``spans_enriched`` (same table, same views; one and two clients) and into a bare copy (no views).
"""

from __future__ import annotations

import gc
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Producer

from infra.kafka import create_topics
from schemas.codec import codec_for
from schemas.settings import KafkaSettings
from schemas.topics import TopicNames
from sinks.avro_blocks import container
from sinks.clickhouse import ClickHouseSink, open_client
from sinks.consumer import SinkConsumer
from sinks.ddl import apply_schema
from sinks.settings import SinkSettings
from sinks.testing import FakeMessage, enriched_spans

ROWS = int(os.environ.get("BENCH_SINK_ROWS", "400000"))
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


def fill_topic(bootstrap: str, messages: list[bytes]) -> KafkaSettings:
    prefix = f"benchsink{uuid.uuid4().hex[:6]}."
    create_topics(bootstrap, TopicNames(prefix).with_configs(), partitions=PARTITIONS)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=PARTITIONS)
    producer = Producer(kafka.confluent_config() | {"linger.ms": 20, "batch.size": 1_000_000})
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


def consume_all(kafka: KafkaSettings, directory: str, *, writers: int) -> tuple[float, float, ClickHouseSink, int]:
    """(wall s from first message to last commit, CPU s over the same span, the open sink, flushes)."""
    settings = SinkSettings(
        url=f"chdb://{directory}", database="bench_sink", group_id=f"bench-sink-{uuid.uuid4().hex[:6]}",
        writers=writers, flush_rows=FLUSH_ROWS
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

    gc.collect()
    thread = threading.Thread(target=run, name="sink")
    thread.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not errors:
        if consumer.first_message is not None and not cpu_at_first:
            cpu_at_first.append(time.process_time())
        if consumer.stats.rows_flushed >= ROWS and consumer.last_commit is not None:
            break
        time.sleep(0.002)
    cpu_end = time.process_time()
    stop.set()
    thread.join(60)
    assert not errors, errors
    assert consumer.stats.rows_flushed == ROWS and consumer.first_message and consumer.last_commit
    return consumer.last_commit - consumer.first_message, cpu_end - cpu_at_first[0], consumer.sink, consumer.stats.flushes


def main() -> str:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    codec = codec_for("EnrichedSpan")
    messages = [codec.encode(span) for span in enriched_spans(ROWS, seed=3)]
    kafka = fill_topic(bootstrap, messages)
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as directory:
        wall, cpu, sink, flushes = consume_all(kafka, directory, writers=WRITERS)
        results["sink"] = (wall, cpu)
        try:
            assert sink.count("spans_enriched") == ROWS
            one_wall, one_cpu, _sink, _ = consume_all(kafka, directory, writers=1)
            results["sink1"] = (one_wall, one_cpu)
            client = sink.client
            schema, header = codec.split(messages[0])
            containers = [container(schema, [m[header:] for m in messages[i : i + FLUSH_ROWS]]) for i in range(0, ROWS, FLUSH_ROWS)]
            arrow = client.query_arrow("SELECT * EXCEPT (inserted_at) FROM bench_sink.spans_enriched FINAL", use_strings=True)
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
                        (lambda c, i=i, b=b, d=database: c.raw_insert(
                            f"{d}.spans_enriched_avro", None, b, fmt="Avro",
                            settings=_SAME_AS_THE_SINK | {"insert_deduplication_token": f"{d}-{i}"}))
                        for i, b in enumerate(containers)
                    ]
                else:
                    table = "bare" if name == "bare" else "spans_enriched"
                    jobs = [
                        (lambda c, a=a, d=database, t=table: c.insert_arrow(f"{d}.{t}", a, settings=_SAME_AS_THE_SINK))
                        for a in arrows
                    ]
                results[name] = timed(lambda jobs=jobs, count=count: in_parallel(clients[:count], jobs))
                table = "bare" if name == "bare" else "spans_enriched"
                assert client.command(f"SELECT count() FROM {database}.{table}") == ROWS
            clients[1].close()
            # the consumer's work before the engine, alone: header check, batching, container bytes
            python_wall, python_cpu = timed(lambda: in_process_python(messages, codec))
            results["python"] = (python_wall, python_cpu)
        finally:
            sink.close()

    def rate(key: str) -> str:
        wall, cpu = results[key]
        return f"{ROWS / wall:,.0f} | {ROWS / cpu:,.0f}"

    sink_rate = ROWS / results["sink"][0]
    avro2 = ROWS / results["avro2"][0]
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
        f"| the consumer's Python per row alone (header check, batch, container bytes; no Kafka, no engine) | {rate('python')} |",
        "",
        (
            f"Target: >= {TARGET_ROWS_PER_S:,} rows/s: {'met' if sink_rate >= TARGET_ROWS_PER_S else 'NOT met'}"
            f" ({sink_rate / TARGET_ROWS_PER_S:.0%} of it); the sink runs at {sink_rate / avro2:.0%} of the engine's"
            " own rate for the same containers on 2 clients."
        ),
        "",
        (
            "Command: `KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 .venv/bin/python -m tests.benchmarks.bench_sink`"
            " (`BENCH_SINK_ROWS` sets the row count, `BENCH_SINK_FLUSH_ROWS` and `BENCH_SINK_WRITERS` the sink's)."
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
    fake = [FakeMessage(topic, index % PARTITIONS, index // PARTITIONS, value) for index, value in enumerate(messages)]
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
