"""``reloadtrace gate`` capacity: verdict requests per second on one core, and p99 latency at 1,000 requests/s.

The gate runs as the real command (``reloadtrace gate``, bearer token on) pinned to CPU 0 with
``os.sched_setaffinity``; the load comes from another process pinned to CPU 1
(:mod:`tests.benchmarks.http_load`: keep-alive connections on loopback). Its store holds
``BENCH_GATE_RELOADS`` reloads (one ReloadVerdict each on ``reload.verdicts``), and while it is
measured a producer keeps publishing new looks (``BENCH_GATE_LOOKS_PER_S``), so the gate's Kafka
thread shares the core as in production. Requests alternate lookups by version and by reload_id.
Limits (issue 17): at least 1,000 verdict requests/s on one core, p99 at most 20 ms.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import httpx
from confluent_kafka import Producer

from infra.kafka import create_topics, free_port
from schemas.settings import KafkaSettings
from schemas.topics import TopicNames
from tests.benchmarks.http_load import LoadResult, get_request, paced, saturate

RELOADS = int(os.environ.get("BENCH_GATE_RELOADS", "20000"))
LOOKS_PER_S = float(os.environ.get("BENCH_GATE_LOOKS_PER_S", "200"))
SECONDS = float(os.environ.get("BENCH_GATE_SECONDS", "10"))
TARGET_RATE = 1_000.0
P99_LIMIT_MS = 20.0
SERVER_CPU, LOAD_CPU = 0, 1
T0 = 1_800_000_000 * 1_000_000_000
HEADING = "## Delivery gate: verdict requests on one core"


def _verdict(number: int, look_index: int) -> dict[str, Any]:
    effective = T0 + number * 1_000_000_000
    return {
        "reload_id": f"bench-r{number:06d}",
        "service_name": f"svc-{number % 500}",
        "service_instance_id": None,
        "component": "model",
        "old_version": f"v{number - 1}",
        "new_version": f"v{number}",
        "status": "SUCCEEDED",
        "requested_time_unix_nano": effective - 50_000_000,
        "effective_time_unix_nano": effective,
        "look_time_unix_nano": effective + (look_index + 1) * 2_000_000_000,
        "look_index": look_index,
        "looks_total": 10,
        "final": look_index == 9,
        "window_end_unix_nano": effective + 300_000_000_000,
        "metrics": [
            {
                "metric": name,
                "severity": None,
                "emitted_severity": None,
                "baseline_value": 250.0,
                "observed_value": 252.0,
                "p_value": 0.41,
                "baseline_count": 3000,
                "observed_count": 200,
            }
            for name in ("latency", "error_rate")
        ],
    }


def _publish(kafka: KafkaSettings, count: int) -> None:
    codec = kafka.codec("ReloadVerdict")
    producer = Producer(kafka.confluent_config() | {"linger.ms": 20})
    for number in range(count):
        producer.produce(
            kafka.topics.reload_verdicts, key=f"bench-r{number:06d}".encode(), value=codec.encode(_verdict(number, 0))
        )
        if number % 1000 == 0:
            producer.poll(0)
    producer.flush(60)


def _keep_publishing(kafka: KafkaSettings, stop: threading.Event) -> int:
    codec = kafka.codec("ReloadVerdict")
    producer = Producer(kafka.confluent_config() | {"linger.ms": 20})
    sent = 0
    started = time.monotonic()
    while not stop.is_set():
        number = sent % RELOADS
        producer.produce(
            kafka.topics.reload_verdicts,
            key=f"bench-r{number:06d}".encode(),
            value=codec.encode(_verdict(number, 1 + (sent // RELOADS) % 9)),
        )
        producer.poll(0)
        sent += 1
        delay = started + sent / LOOKS_PER_S - time.monotonic()
        if delay > 0:
            stop.wait(delay)
    producer.flush(30)
    return sent


def _load(kind: str, port: int, token: str, queue: multiprocessing.Queue) -> None:
    os.sched_setaffinity(0, {LOAD_CPU})
    headers = {"Authorization": f"Bearer {token}"}
    requests = []
    for number in range(0, RELOADS, max(1, RELOADS // 2000)):
        requests.append(
            get_request(
                "127.0.0.1", port, f"/v1/verdict?service=svc-{number % 500}&component=model&version=v{number}", headers
            )
        )
        requests.append(get_request("127.0.0.1", port, f"/v1/verdict?reload_id=bench-r{number:06d}", headers))
    if kind == "saturate":
        result = saturate("127.0.0.1", port, requests, connections=8, duration_s=SECONDS)
    else:
        result = paced("127.0.0.1", port, requests, rate_per_s=TARGET_RATE, connections=32, duration_s=SECONDS)
    queue.put(result)


def _measure(kind: str, port: int, token: str) -> LoadResult:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_load, args=(kind, port, token, queue))
    process.start()
    result = queue.get(timeout=SECONDS + 120)
    process.join(30)
    return result


def _pin_to_server_cpu() -> None:
    os.sched_setaffinity(0, {SERVER_CPU})


def main() -> str:
    if len(os.sched_getaffinity(0)) < 2:
        return f"{HEADING}\n\nNot measured: the benchmark needs two CPUs (server and load).\n"
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    names = TopicNames(prefix=f"bg{uuid.uuid4().hex[:8]}.")
    create_topics(bootstrap, names.with_configs(), partitions=4)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=names.prefix, partitions=4)
    _publish(kafka, RELOADS)
    token, port = secrets.token_urlsafe(24), free_port()
    env = os.environ | {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "RELOADTRACE_TOPIC_PREFIX": names.prefix,
        "RELOADTRACE_GATE_TOKEN": token,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "gate", "--port", str(port)],
        env=env,
        preexec_fn=_pin_to_server_cpu,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()
    publisher_counts: list[int] = []
    try:
        started = time.monotonic()
        while time.monotonic() - started < 120:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                if health.status_code == 200 and health.json()["reloads"] >= RELOADS:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        load_s = time.monotonic() - started
        publisher = threading.Thread(target=lambda: publisher_counts.append(_keep_publishing(kafka, stop)), daemon=True)
        publisher.start()
        saturated = _measure("saturate", port, token)
        at_target = _measure("paced", port, token)
        stop.set()
        publisher.join(60)
    finally:
        stop.set()
        server.send_signal(signal.SIGTERM)
        try:
            server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    ok = saturated.statuses.get(200, 0) == saturated.answered and at_target.statuses.get(200, 0) == at_target.answered
    looks = publisher_counts[0] if publisher_counts else 0
    answered = "all" if ok else f"not all: {saturated.statuses} {at_target.statuses}"
    rate_verdict = "meets" if saturated.rate_per_s >= TARGET_RATE else "**misses**"
    p99 = at_target.percentile_ms(0.99)
    p99_verdict = "meets" if p99 <= P99_LIMIT_MS and at_target.rate_per_s >= TARGET_RATE * 0.98 else "**misses**"
    return (
        f"{HEADING}\n\n"
        f"`reloadtrace gate` (aiohttp, bearer token on) pinned to one CPU, {RELOADS:,} reloads in its store (loaded in"
        f" {load_s:.1f} s), {looks:,} new looks published to `reload.verdicts` during the measurement"
        f" (~{LOOKS_PER_S:.0f}/s); the load from another process on the other CPU, keep-alive connections on loopback,"
        " lookups by version and by reload_id alternately.\n\n"
        "| figure | measured | limit | verdict |\n|---|---|---|---|\n"
        f"| verdict requests/s, closed loop (8 connections, {SECONDS:.0f} s) | {saturated.rate_per_s:,.0f}"
        f" (p50 {saturated.percentile_ms(0.5):.1f} ms, p99 {saturated.percentile_ms(0.99):.1f} ms)"
        f" | ≥ 1,000 | {rate_verdict} |\n"
        f"| latency at 1,000 requests/s offered (open loop, 32 connections, {SECONDS:.0f} s): p50 / p99 / max"
        f" | {at_target.percentile_ms(0.5):.2f} / {p99:.2f} / {max(at_target.latencies_s) * 1000:.1f} ms"
        f" ({at_target.rate_per_s:,.0f} answered/s) | p99 ≤ 20 ms | {p99_verdict} |\n"
        f"| answers 200 | {answered} | all | |\n\n"
        "Latency of the open loop counts from when each request was due (no coordinated omission).\n\n"
        "Command: `make bench BENCH=gate` (`BENCH_GATE_RELOADS`, `BENCH_GATE_LOOKS_PER_S`, `BENCH_GATE_SECONDS`).\n"
    )
