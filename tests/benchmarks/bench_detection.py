"""Time-to-detect of post-reload regressions on the gateway simulator, per regression kind, over 20 seeds.

Time-to-detect = ``detected_time_unix_nano`` - the reload's effective time: the event-time offset
of the first look that sufficed (the streaming detector takes that look once the enricher's
watermarks pass it, ``max_lateness_ms`` of event time after the latest request sent, so the alert
leaves that much later still). Also: misses and false alarms over the same runs, and the core's
judging rate.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid

import numpy as np

from gateway.simulation.simulator import simulate
from streams.detection import DetectionSettings, detect_offline
from streams.settings import WorkerSettings
from tests.streams.test_detection_simulated import SEEDS, expected_metrics, scenario

_LIMIT_S = 10.0  # "an obvious regression alerts within seconds": p95 time-to-detect of service-wide regressions
_STREAM_SEEDS = range(3)
_STREAM_LIMIT_ROWS_PER_S = 10_000  # what the enricher feeds at 1,000 services x 10 requests/s


def streaming_rate() -> tuple[int, float, float, int]:
    """(request rows, seconds in all, seconds from the first message, anomalies published by then) of the
    streaming detector on the broker, over a backlog of three runs."""
    from infra.kafka import create_topics
    from schemas.settings import KafkaSettings
    from schemas.topics import TopicNames
    from streams.detector import DetectorSettings, detector_runtime
    from tests.streams.test_detect_traffic import generate
    from tests.streams.test_detector_kafka import feed_of, produce

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    topics = TopicNames(prefix=f"bench{uuid.uuid4().hex[:8]}.")
    create_topics(bootstrap, topics.with_configs(), partitions=4)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=topics.prefix, partitions=4)
    rows = 0
    for seed in _STREAM_SEEDS:
        data = generate(seed)
        # Each run under its own service names, so the runs are distinct services on the topic.
        data.reloads = [
            dataclasses.replace(r, reload_id=f"s{seed}-{r.reload_id}", service_name=f"s{seed}-{r.service_name}")
            for r in data.reloads
        ]
        data.requests = [dataclasses.replace(r, service_name=f"s{seed}-{r.service_name}") for r in data.requests]
        produce(kafka, feed_of(data))
        rows += len(data.requests)
    runtime = detector_runtime(kafka, DetectionSettings(), DetectorSettings(group_id=f"bench-{uuid.uuid4().hex}"))
    detector = runtime.stage
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    started = time.perf_counter()
    thread.start()
    first_message = None
    while detector.stats.requests < rows and time.perf_counter() - started < 300:
        if first_message is None and detector.stats.messages:
            first_message = time.perf_counter()
        time.sleep(0.005)
    finished = time.perf_counter()
    stop.set()
    thread.join(60)
    return rows, finished - started, finished - (first_message or started), detector.stats.anomalies


def main() -> str:
    settings = DetectionSettings()
    first_look_s = settings.looks_ms[0] / 1000
    lateness_s = WorkerSettings().max_lateness_ms / 1000
    detect_times: dict[str, list[float]] = {}
    misses = false_alarms = benign = initial = requests = 0
    judging_s = 0.0
    for seed in SEEDS:
        simulation = simulate(scenario(seed))
        started = time.perf_counter()
        anomalies = detect_offline(simulation.spans, simulation.reloads, settings)
        judging_s += time.perf_counter() - started
        requests += sum(1 for span in simulation.spans if span["kind"] == "SERVER")
        rows = {row["reload_id"]: row for row in simulation.ground_truth["reloads"]}
        first: dict[tuple[str, str], int] = {}
        for anomaly in anomalies:
            if anomaly.severity != "INFO":
                first.setdefault((anomaly.reload_id, anomaly.metric), anomaly.detected_time_unix_nano)
        for reload_id, metrics in expected_metrics(simulation).items():
            row = rows[reload_id]
            flagged = {metric for rid, metric in first if rid == reload_id}
            false_alarms += len(flagged - metrics)
            benign += not metrics
            initial += bool(row["initial"])
            for metric in metrics:
                label = f"{'canary ' if row['service_instance_id'] else ''}{metric}"
                label += " x2" if metric == "latency" else " 1%->15%"
                if (reload_id, metric) not in first:
                    misses += 1
                    continue
                delay_s = (first[(reload_id, metric)] - row["effective_time_unix_nano"]) / 1e9
                detect_times.setdefault(label, []).append(delay_s)
    stream_rows, stream_s, stream_busy_s, stream_anomalies = streaming_rate()
    lines = [
        "## Detection: time-to-detect after a reload",
        "",
        (
            f"Gateway simulator, {len(SEEDS)} seeds, 10 requests/s per service on 3 instances (10% streaming requests);"
            f" default `DetectionSettings` (W = {settings.window_ms / 1000:.0f} s, {len(settings.looks_ms)} looks at"
            f" {', '.join(f'{ms / 1000:g}' for ms in settings.looks_ms)} s, alpha {settings.alpha:g} Bonferroni-spent)."
        ),
        "",
        "| regression | detected | median (s) | p95 (s) | max (s) | first look (s) | limit (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, values in sorted(detect_times.items()):
        limit = "-" if label.startswith("canary") else f"p95 ≤ {_LIMIT_S:g}"
        lines.append(
            f"| {label} | {len(values)}/{len(SEEDS)} | {np.median(values):.1f} | {np.percentile(values, 95):.1f} |"
            f" {max(values):.1f} | {first_look_s:g} | {limit} |"
        )
    lines += [
        "",
        (
            f"Misses: {misses}; false alarms (WARNING or worse on a benign reload, or a wrong metric): {false_alarms}"
            f" over {benign} benign reloads ({benign - initial} scheduled, {initial} start-up registrations)."
            f" The streaming detector takes each look once the enricher's watermarks pass it, {lateness_s:g} s of"
            " event time after the latest request sent (`max_lateness_ms`), so that late requests are in it."
        ),
        f"Judging rate of the core: {requests / judging_s:,.0f} requests/s ({requests:,} SERVER requests in {judging_s:.1f} s).",
        (
            f"Streaming detector on the broker, a backlog of {stream_rows:,} request rows ({len(_STREAM_SEEDS) * 5} services,"
            f" 4 partitions): {stream_rows / stream_busy_s:,.0f} rows/s from the first message"
            f" ({stream_rows / stream_s:,.0f} rows/s counting the {stream_s - stream_busy_s:.1f} s group join;"
            f" {stream_anomalies} anomalies published meanwhile); limit {_STREAM_LIMIT_ROWS_PER_S:,} rows/s"
            " (1,000 services at 10 requests/s)."
        ),
        "",
        "Command: `KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 .venv/bin/python -m tests.benchmarks detection`",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
