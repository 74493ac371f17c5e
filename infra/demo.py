"""`make demo`: the whole pipeline on the embedded defaults, started, driven, reported and stopped.

Starts a fresh local Kafka (free port, ``.kafka-demo``) and one ``reloadtrace worker`` into the
embedded ClickHouse (``data/demo/chdb``), publishes about two minutes of accelerated simulated
LLM-gateway traffic (every component kind, canaries, a FAILED reload, late reload events, one bad
model reload), waits for the pipeline to drain, prints the report (and ``out/demo/report.html``),
checks the regression was flagged against the right reload, and stops everything it started, on
success, failure or Ctrl-C. Every run starts from empty data.

``--via-collector`` sends the spans as OTLP/HTTP through the project's Collector (``infra/otelcol``)
into ``otlp_spans``; reload events still go to ``reloads``, and the reload spans give them again.

Usage: ``python -m infra.demo [--speed 5] [--duration-s 600] [--via-collector] [--keep-kafka]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console

from infra.consumer_lag import consumer_group_lag
from infra.kafka import KafkaBroker, create_topics, free_port
from infra.processes import ManagedProcess, wait_until

REPO = Path(__file__).resolve().parent.parent
_DEFAULT_SPEED = 5.0
_DEFAULT_DURATION_S = 600.0
_DEFAULT_RATE = 20.0
_DEMO_SERVICES = ("llm-gateway", "chat-api", "rag-api")
_BAD_MODEL_RELOAD_INDEX = 4
_DRAIN_TIMEOUT_S = 300.0
_OTLP_BATCH_SPANS = 512


class OtlpHttpPublisher:
    """Publishes stream items like :class:`gateway.simulation.produce.StreamPublisher`, but the spans as OTLP/HTTP
    requests to a Collector (batched, at most ``_OTLP_BATCH_SPANS`` a request); reloads to Kafka."""

    def __init__(self, kafka: Any, endpoint: str) -> None:
        import httpx

        from gateway.simulation.produce import StreamPublisher

        self._kafka_publisher = StreamPublisher(kafka)
        self._endpoint = endpoint
        self._client = httpx.Client(timeout=30)
        self.requests = 0

    def publish(self, items: list[Any], report: Any, *, pace: float, on_item: Any) -> None:
        from schemas.otlp import span_otlp_request

        batch: list[dict[str, Any]] = []
        first_time = items[0].publish_time_unix_nano if items else 0
        wall_start = time.monotonic()

        def send() -> None:
            if batch:
                response = self._client.post(
                    self._endpoint, content=span_otlp_request(batch).SerializeToString(),
                    headers={"Content-Type": "application/x-protobuf"},
                )
                response.raise_for_status()
                self.requests += 1
                report.spans += len(batch)
                batch.clear()

        for number, item in enumerate(items, start=1):
            delay = wall_start + (item.publish_time_unix_nano - first_time) / 1e9 / pace - time.monotonic()
            if delay > 0.05:
                send()
                time.sleep(delay)
            if item.kind == "span":
                batch.append(item.record)
                if len(batch) >= _OTLP_BATCH_SPANS:
                    send()
            else:
                send()
                self._kafka_publisher.publish([item], report)
            on_item(number)
        send()


def demo_config(*, duration_s: float, rate: float, start_time_unix_nano: int, seed: int = 7):
    """The demo scenario: what reloads when, which one is the bad model, which ones are late."""
    from gateway.simulation.config import Regression, ScheduledReload, SimulationConfig

    d = duration_s
    schedule = (
        ScheduledReload(at_s=0.12 * d, service="llm-gateway", component="config", source="consul-watch"),
        ScheduledReload(at_s=0.18 * d, service="chat-api", component="feature_flags", lateness_s=20.0, source="operator"),
        ScheduledReload(at_s=0.25 * d, service="rag-api", component="prompt_template", source="deploy-pipeline"),
        ScheduledReload(at_s=0.30 * d, service="llm-gateway", component="routing_rules", instance=0, source="deploy-pipeline"),
        # index 4: the bad model reload (see _BAD_MODEL_RELOAD_INDEX), published late as well
        ScheduledReload(at_s=0.45 * d, service="llm-gateway", component="model", lateness_s=15.0, source="deploy-pipeline"),
        ScheduledReload(at_s=0.50 * d, service="chat-api", component="model", fail=True, source="deploy-pipeline"),
        ScheduledReload(at_s=0.55 * d, service="rag-api", component="credentials", lateness_s=25.0, source="vault-rotation"),
        ScheduledReload(at_s=0.65 * d, service="chat-api", component="rate_limit_policy", source="operator"),
        ScheduledReload(at_s=0.75 * d, service="llm-gateway", component="model", source="rollback"),
        ScheduledReload(at_s=0.85 * d, service="rag-api", component="config", instance=1, lateness_s=10.0, source="etcd-watch"),
    )
    return SimulationConfig(
        seed=seed,
        services=_DEMO_SERVICES,
        instances_per_service=3,
        requests_per_second_per_service=rate,
        duration_s=duration_s,
        start_time_unix_nano=start_time_unix_nano,
        reloads=schedule,
        regressions=(Regression(reload_index=_BAD_MODEL_RELOAD_INDEX, latency_factor=2.0, error_rate=0.15),),
    )


def run_demo(args: argparse.Namespace, console: Console) -> int:
    from gateway.simulation.commands import progress_bar
    from gateway.simulation.produce import ProduceReport, StreamPublisher, simulation_items
    from gateway.simulation.simulator import simulate
    from schemas.settings import KafkaSettings

    kafka_dir = REPO / ".kafka-demo"
    data_dir = REPO / "data" / "demo"
    out_dir = REPO / "out" / "demo"
    shutil.rmtree(data_dir, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    sink_url = f"chdb://{data_dir / 'chdb'}"

    broker = KafkaBroker(port=free_port(), controller_port=free_port(), data_dir=kafka_dir)
    broker.wipe()
    worker: ManagedProcess | None = None
    collector = None
    try:
        console.rule("[bold]1. Kafka")
        broker.start()
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, partitions=4)
        create_topics(broker.bootstrap_servers, kafka.topics.with_configs(), partitions=kafka.partitions)
        console.print(f"Kafka 4.1 (KRaft) on {broker.bootstrap_servers}, data in {kafka_dir}")

        if args.via_collector:
            from infra.otelcol.collector import build, otlp_to_kafka

            console.rule("[bold]1b. OpenTelemetry Collector")
            binary = build().binary
            collector = otlp_to_kafka(broker.bootstrap_servers, out_dir / "collector", topic=kafka.topics.otlp_spans)
            collector.binary = binary
            collector.start()
            console.print(f"Collector {binary} on {collector.otlp_http_endpoint} -> Kafka {kafka.topics.otlp_spans} (otlp_proto)")

        console.rule("[bold]2. Worker")
        group_id = f"demo-{uuid.uuid4().hex[:6]}"
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "RELOADTRACE_SINK_URL": sink_url,
            "RELOADTRACE_GROUP_ID": group_id,
            "RELOADTRACE_GRACE_PERIOD_MS": "2000",
        }
        worker = ManagedProcess(
            [sys.executable, "-m", "streams.cli", "worker"], log_path=out_dir / "worker.log", env=env, cwd=REPO
        ).start()
        console.print(f"reloadtrace worker (pid {worker.pid}, group {group_id}): enrich + detect + sink into {sink_url}")
        console.print(f"its log: {worker.log_path}")

        console.rule("[bold]3. Traffic")
        start = time.time_ns() // 1_000_000 * 1_000_000
        config = demo_config(duration_s=args.duration_s, rate=args.rate, start_time_unix_nano=start)
        simulation = simulate(config)
        counts = simulation.ground_truth["counts"]
        console.print(
            f"{counts['requests']} requests ({counts['spans']} spans) over {args.duration_s:.0f} s of event time "
            f"at {args.speed:g}x: {counts['reloads']} reloads ({counts['failed_reloads']} failed, "
            f"{counts['late_reloads']} published late), {counts['mid_flight_spans']} spans straddle a reload"
        )
        bad_reload_id = f"sim{config.seed}-r{_BAD_MODEL_RELOAD_INDEX:03d}"  # the simulator's id of schedule entry 4
        bad_reload = next(reload for reload in simulation.reloads if reload.reload_id == bad_reload_id)
        console.print(
            f"injected regression: {bad_reload.reload_id} ({bad_reload.service_name} {bad_reload.component} "
            f"{bad_reload.old_version} -> {bad_reload.new_version}): latency x2, errors 1% -> 15%"
        )
        items = simulation_items(simulation)
        report = ProduceReport()
        with progress_bar(console, when_piped=True) as progress:
            task = progress.add_task("publishing", total=len(items))

            def on_item(number: int) -> None:
                if number % 500 == 0 or number == len(items):
                    progress.update(task, completed=number)
                    worker.check_alive()

            if collector is not None:
                OtlpHttpPublisher(kafka, collector.otlp_http_endpoint).publish(items, report, pace=args.speed, on_item=on_item)
            else:
                StreamPublisher(kafka).publish(items, report, pace=args.speed, on_item=on_item)
        if report.undelivered:
            console.print(f"[red]{report.undelivered} records were not delivered to Kafka")
            return 1

        console.rule("[bold]4. Draining")
        from streams.app import consumer_groups
        from streams.settings import WorkerSettings

        groups = consumer_groups(kafka, WorkerSettings(group_id=group_id, sink_url=sink_url))

        def drained() -> bool:
            return all(consumer_group_lag(broker.bootstrap_servers, g, t) == 0 for g, t in groups.items())

        wait_until(drained, timeout_s=_DRAIN_TIMEOUT_S, interval_s=1.0, what="the pipeline draining", alive=[worker])
        time.sleep(3.0)  # a last detector look and its anomalies
        wait_until(drained, timeout_s=_DRAIN_TIMEOUT_S, interval_s=1.0, what="the pipeline draining", alive=[worker])
        code = worker.stop()
        console.print(f"worker stopped (exit {code}); every record is in ClickHouse")
        worker = None

        console.rule("[bold]5. Report")
        html = out_dir / "report.html"
        report_code = subprocess.run(
            [sys.executable, "-m", "streams.cli", "report", "--sink-url", sink_url, "--html", str(html)],
            cwd=REPO,
            check=False,
        ).returncode
        if report_code != 0:
            console.print(f"[red]reloadtrace report failed with exit code {report_code}")
            return 1
        return _check(sink_url, simulation, bad_reload.reload_id, console)
    finally:
        if worker is not None:
            worker.stop()
        if collector is not None:
            collector.stop()
        if not args.keep_kafka:
            broker.stop()
            console.print("Kafka stopped")


def _check(sink_url: str, simulation: Any, bad_reload_id: str, console: Console) -> int:
    """What the demo promises: the regression attributed to the right reload, mid-flight spans counted."""
    from sinks.report import open_report_client

    client, _ = open_report_client(sink_url)
    try:
        spans, mid_flight, corrected = client.query(
            "SELECT count(), countIf(mid_flight), countIf(enrichment_revision > 0) FROM spans_enriched FINAL"
        ).result_rows[0]
        flagged = client.query(
            "SELECT reload_id, metric, toString(severity) FROM anomalies FINAL WHERE metric IN ('latency', 'error_rate')"
        ).result_rows
    finally:
        client.close()
    expected_mid_flight = simulation.ground_truth["counts"]["mid_flight_spans"]
    console.rule("[bold]6. Checks")
    checks = [
        (spans == len(simulation.spans), f"spans in ClickHouse: {spans} of {len(simulation.spans)} produced"),
        (
            mid_flight == expected_mid_flight,
            f"mid-flight spans: {mid_flight} (simulator ground truth {expected_mid_flight}); "
            f"{corrected} spans corrected by late reload events",
        ),
    ]
    blamed = sorted({reload_id for reload_id, _, _ in flagged})
    metrics = sorted(f"{metric} {severity}" for reload_id, metric, severity in flagged if reload_id == bad_reload_id)
    checks.append((bad_reload_id in blamed, f"the bad model reload {bad_reload_id} flagged: {', '.join(metrics) or 'no'}"))
    checks.append((blamed in ([], [bad_reload_id]), f"reloads blamed for a regression: {', '.join(blamed) or 'none'}"))
    for ok, text in checks:
        console.print(("[green]ok   " if ok else "[red]FAIL ") + text)
    return 0 if all(ok for ok, _ in checks) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=_DEFAULT_SPEED, help="event time runs this many times faster")
    parser.add_argument("--duration-s", type=float, default=_DEFAULT_DURATION_S, help="seconds of event time")
    parser.add_argument("--rate", type=float, default=_DEFAULT_RATE, help="requests per second per service")
    parser.add_argument("--keep-kafka", action="store_true", help="leave the demo broker running")
    parser.add_argument("--via-collector", action="store_true",
                        help="send the spans as OTLP through the project's OpenTelemetry Collector (needs Go to build it)")
    args = parser.parse_args(argv)
    console = Console()
    os.chdir(REPO)
    try:
        return run_demo(args, console)
    except KeyboardInterrupt:
        console.print("interrupted; everything the demo started is stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
