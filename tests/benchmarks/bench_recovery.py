"""Recovery from a backlog: a worker started after an outage drains it in memory that does not grow with it.

For each backlog size (``BENCH_RECOVERY_SIZES``, default 250,000 and 1,000,000 realistic spans, the
e2e benchmark's): the spans and their reloads are produced into fresh topics, the outage lasts
past the correction horizon (the backlog is older than the horizon when the worker starts, as after
any real outage), then one ``reloadtrace worker`` starts and runs until every consumer group has
committed the end of its topics. Reported: time to drain, peak RSS of the worker process and of
the whole worker (children included), whether a group member left its group (a restore too long
for ``max.poll.interval.ms`` would show as a revoke or a lost assignment in the log), and whether
ClickHouse (FINAL) holds exactly what ``reloadtrace replay`` computes from the same spans, and the
anomalies ``detect_offline`` finds. A sustained run (the smaller backlog produced into a running
worker) gives the same-run reference for memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from schemas.files import write_records
from streams.detection import DetectionSettings, detect_offline, strongest
from streams.replay import run_replay
from streams.settings import WorkerSettings
from tests.benchmarks.bench_e2e import (
    REPO,
    _encoded,
    _fresh_kafka,
    _produce,
    _produce_raw,
    _run_until_landed,
    realistic_spans,
)

SIZES = [int(size) for size in os.environ.get("BENCH_RECOVERY_SIZES", "250000,1000000").split(",")]
HORIZON_S = WorkerSettings().correction_horizon_ms / 1000
TOLERANCE = 0.15
TARGET_ENRICHER_MB = 500
_COMPARED = ("trace_id", "span_id", "versions", "versions_at_end", "reload_ids", "mid_flight", "mid_flight_reload_ids")


def _dump(sink_url: str, sql: str, path: Path) -> None:
    """Run ``sql`` on the store (a child process: chDB holds one data directory per process) into ``path`` (JSON lines)."""
    code = (
        "import sys, orjson; from sinks.report import open_report_client\n"
        "c, _ = open_report_client(sys.argv[1])\n"
        "with open(sys.argv[3], 'wb') as out:\n"
        "    with c.query_rows_stream(sys.argv[2]) as rows:\n"
        "        for row in rows: out.write(orjson.dumps(list(row), default=str) + b'\\n')\n"
    )
    subprocess.run([sys.executable, "-c", code, sink_url, sql, str(path)], cwd=REPO, check=True)


def _stored(directory: Path) -> tuple[dict[tuple[str, str], tuple], list[dict[str, Any]]]:
    sink_url = f"chdb://{directory / 'chdb'}"
    spans_path, anomalies_path = directory / "stored.jsonl", directory / "anomalies.jsonl"
    _dump(
        sink_url,
        "SELECT trace_id, span_id, versions, versions_at_end, reload_ids, mid_flight, arraySort(mid_flight_reload_ids)"
        " FROM spans_enriched FINAL",
        spans_path,
    )
    _dump(sink_url, "SELECT anomaly_id, reload_id, metric, severity, detected_time FROM anomalies FINAL", anomalies_path)
    stored = {}
    for line in spans_path.read_bytes().splitlines():
        row = orjson.loads(line)
        stored[(row[0], row[1])] = (row[2], row[3], row[4], bool(row[5]), row[6])
    anomalies = [dict(zip(("anomaly_id", "reload_id", "metric", "severity", "detected"), orjson.loads(line), strict=True))
                 for line in anomalies_path.read_bytes().splitlines()]
    return stored, anomalies


def _replayed(spans: list[dict], reloads: list, directory: Path) -> dict[tuple[str, str], tuple]:
    spans_path, reloads_path = directory / "spans.avro", directory / "reloads.avro"
    write_records(spans_path, "Span", spans)
    write_records(reloads_path, "ReloadEvent", [reload.to_dict() for reload in reloads])
    summary = run_replay(spans_path, reloads_path, directory / "replay", detect=False)
    expected = {}
    for line in summary.enriched_path.read_bytes().splitlines():
        row = orjson.loads(line)
        expected[(row["trace_id"], row["span_id"])] = (
            row["versions"], row["versions_at_end"], row["reload_ids"], row["mid_flight"], sorted(row["mid_flight_reload_ids"])
        )
    return expected


def _left_group(log: Path, until_byte: int) -> bool:
    """Whether a member lost or gave up partitions while running (the clean stop's own revokes come later)."""
    with log.open("rb") as handle:
        text = handle.read(until_byte).decode(errors="replace")
    return any(sign in text for sign in ("MAXPOLL", "max.poll.interval", "partitions lost", "partitions revoked"))


def _recovery(size: int, bootstrap: str, directory: Path) -> dict[str, Any]:
    spans, reloads = realistic_spans(size, time.time_ns() - 3_600 * 10**9)
    kafka = _fresh_kafka(bootstrap)
    _produce(kafka, spans, reloads)
    outage_ends = time.monotonic() + HORIZON_S + 10  # the backlog is older than the correction horizon
    expected = _replayed(spans, reloads, directory)
    offline = strongest(detect_offline(spans, reloads, DetectionSettings()))
    time.sleep(max(0.0, outage_ends - time.monotonic()))
    run = _run_until_landed(kafka, directory, f"bench-{uuid.uuid4().hex[:6]}")
    stored, anomalies = _stored(directory)
    streamed = {(a["anomaly_id"], a["severity"]) for a in anomalies}
    return run | {
        "size": size,
        "rate": size / run["seconds"],
        "exact": stored == expected,
        "differ": sum(1 for key, value in expected.items() if stored.get(key) != value) + len(set(stored) - set(expected)),
        "anomalies_exact": streamed == {(a.anomaly_id, a.severity) for a in offline.values()},
        "anomalies": len(anomalies),
        "left_group": _left_group(directory / "worker.log", run["log_bytes_at_stop"]),
    }


def _sustained(size: int, bootstrap: str, directory: Path) -> dict[str, Any]:
    spans, reloads = realistic_spans(size, time.time_ns() - 600 * 10**9)
    kafka = _fresh_kafka(bootstrap)
    _produce(kafka, [], reloads)
    messages = _encoded(kafka, spans)
    run = _run_until_landed(kafka, directory, f"bench-{uuid.uuid4().hex[:6]}", feed=lambda: _produce_raw(kafka, messages))
    return run | {"size": size, "rate": size / run["seconds"]}


def main() -> str:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        sustained = _sustained(min(SIZES), bootstrap, root / "sustained")
        for size in SIZES:
            runs.append(_recovery(size, bootstrap, root / f"backlog-{size}"))
    mb = lambda run, name: run["process_rss_mb"].get(name, 0.0)  # noqa: E731
    rows = "\n".join(
        f"| {run['size']:,} | {run['seconds']:.0f} s ({run['rate']:,.0f} spans/s) | {mb(run, 'worker'):.0f} MB"
        f" | {mb(run, 'sink'):.0f} / {mb(run, 'detector'):.0f} MB | {run['peak_rss_mb']:.0f} MB"
        f" | {'yes' if run['left_group'] else 'no'} | {'yes' if run['exact'] else '**no** (%d spans differ)' % run['differ']}"
        f" | {'yes' if run['anomalies_exact'] else '**no**'} ({run['anomalies']}) |"
        for run in runs
    )
    small, large = runs[0], runs[-1]
    growth = large["peak_rss_mb"] / small["peak_rss_mb"] - 1
    versus_sustained = large["peak_rss_mb"] / sustained["peak_rss_mb"] - 1
    verdict = lambda ok: "meets" if ok else "**misses**"  # noqa: E731
    return f"""## Recovery: a worker started after an outage, a backlog waiting

Backlogs of the e2e benchmark's realistic spans produced into fresh topics; the worker starts once the backlog is older
than the correction horizon ({HORIZON_S:.0f} s) and runs until every group has committed everything. Default settings, 4
partitions, the broker on the same machine.

| backlog | time to drain | worker process peak RSS | sink / detector peak RSS | whole worker peak RSS | member left its group | ClickHouse FINAL = replay | anomalies = offline |
|---:|---:|---:|---:|---:|---|---|---|
{rows}

| criterion | measured | target | verdict |
|---|---|---|---|
| whole-worker peak, {large['size']:,} vs {small['size']:,} backlog | {growth:+.0%} | within ±{TOLERANCE:.0%} | {verdict(abs(growth) <= TOLERANCE)} |
| whole-worker peak, {large['size']:,} backlog vs the sustained run ({sustained['size']:,} spans into a running worker: {sustained['peak_rss_mb']:.0f} MB, {sustained['rate']:,.0f} spans/s) | {versus_sustained:+.0%} | at most +{TOLERANCE:.0%} | {verdict(versus_sustained <= TOLERANCE)} |
| worker process (enricher) peak, largest backlog | {mb(large, 'worker'):.0f} MB | ≤ {TARGET_ENRICHER_MB} MB | {verdict(mb(large, 'worker') <= TARGET_ENRICHER_MB)} |

Command: `make bench BENCH=recovery` (`BENCH_RECOVERY_SIZES=250000,1000000`).
"""
