"""Sink ingest rows/s into the embedded engine, beside the engine's raw Arrow insert of the same rows.

Rows are EnrichedSpan Kafka messages (single-object Avro, ~410 bytes, 5 span attributes, 2 resource
attributes, 2 versions). "Sink ingest" is what the consumer does per message after the poll: check
the header, wrap it in a SinkRecord, ``add`` it, and ``flush`` every 50,000 rows (the default): Avro
containers into ``spans_enriched_avro``, ClickHouse decodes and converts, the two materialized views
(per-minute aggregates, trace time ranges) run. The limits from the same run: the same rows as one
Arrow table inserted straight into ``spans_enriched`` (same table, same views) and into a bare copy
(no views), and the Python Avro decode the sink avoids (fastavro, what an Arrow path would add).
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from collections.abc import Callable

from schemas.codec import codec_for
from sinks.base import SinkRecord
from sinks.clickhouse import ClickHouseSink
from sinks.settings import SinkSettings
from sinks.testing import enriched_spans

ROWS = int(os.environ.get("BENCH_SINK_ROWS", "200000"))
TARGET_ROWS_PER_S = 200_000
FLUSH_ROWS = 50_000


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads — chDB works in threads)."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> str:
    codec = codec_for("EnrichedSpan")
    messages = [codec.encode(span) for span in enriched_spans(ROWS, seed=3)]
    with tempfile.TemporaryDirectory() as directory:
        settings = SinkSettings(url=f"chdb://{directory}", database="bench_sink", flush_rows=FLUSH_ROWS)
        sink = ClickHouseSink(settings)
        try:

            def ingest() -> None:
                split = codec.split
                for offset, value in enumerate(messages):
                    writer, body_offset = split(value)
                    sink.add(SinkRecord("spans_enriched", None, "spans.enriched", offset % 4, offset, None, value,
                                        avro_body=value[body_offset:], writer_schema=writer))
                    if sink.pending_rows >= FLUSH_ROWS:
                        sink.flush()
                sink.flush()

            sink_wall, sink_cpu = timed(ingest)
            assert sink.count("spans_enriched", final=False) == ROWS
            arrow = sink.client.query_arrow(
                "SELECT * EXCEPT (inserted_at) FROM bench_sink.spans_enriched", use_strings=True
            )
            sink.client.command("CREATE DATABASE raw_with_views")
            from sinks.ddl import apply_schema

            apply_schema(sink.client, "raw_with_views")
            same = {"optimize_on_insert": 0}  # as the sink inserts
            with_views_wall, with_views_cpu = timed(
                lambda: sink.client.insert_arrow("raw_with_views.spans_enriched", arrow, settings=same)
            )
            sink.client.command("CREATE TABLE raw_with_views.bare AS raw_with_views.spans_enriched")
            bare_wall, bare_cpu = timed(lambda: sink.client.insert_arrow("raw_with_views.bare", arrow, settings=same))
            assert sink.client.command("SELECT count() FROM raw_with_views.bare") == ROWS
            decode = codec.decode
            sample = messages[: min(ROWS, 50_000)]
            decode_wall, decode_cpu = timed(lambda: [decode(value) for value in sample])
        finally:
            sink.close()

    def rate(rows: int, seconds: float) -> str:
        return f"{rows / seconds:,.0f}"

    sink_rate = ROWS / sink_wall
    lines = [
        "## ClickHouse sink (embedded chDB)",
        "",
        (
            f"{ROWS:,} EnrichedSpan messages, flush every {FLUSH_ROWS:,} rows. Rows/s by wall time; CPU rows/s"
            " counts the CPU time of the process, all threads."
        ),
        "",
        "| what | rows/s | CPU rows/s |",
        "|---|---:|---:|",
        f"| **sink ingest** (header check, add, flush as Avro containers; engine decodes; 2 views) | **{rate(ROWS, sink_wall)}** | {rate(ROWS, sink_cpu)} |",
        f"| limit: raw Arrow insert of the same rows into `spans_enriched` (same 2 views) | {rate(ROWS, with_views_wall)} | {rate(ROWS, with_views_cpu)} |",
        f"| limit: raw Arrow insert into a bare copy (no views) | {rate(ROWS, bare_wall)} | {rate(ROWS, bare_cpu)} |",
        f"| the hop avoided: Python Avro decode alone (fastavro) | {rate(len(sample), decode_wall)} | {rate(len(sample), decode_cpu)} |",
        "",
        (
            f"Target: >= {TARGET_ROWS_PER_S:,} rows/s: {'met' if sink_rate >= TARGET_ROWS_PER_S else 'NOT met'}"
            f" ({sink_rate / TARGET_ROWS_PER_S:.0%} of it); the sink runs at"
            f" {with_views_wall / sink_wall:.0%} of the engine's raw Arrow rate into the same table."
        ),
        "",
        (
            "Command: `KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 .venv/bin/python -m tests.benchmarks sink`"
            " (`BENCH_SINK_ROWS` sets the row count)."
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
