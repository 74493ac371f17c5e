"""The bodies of ``reloadtrace simulate`` and ``reloadtrace produce`` (the typer wrappers live in streams/cli.py)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from gateway.simulation.config import NANOS, SimulationConfig
from gateway.simulation.output import write_simulation
from gateway.simulation.produce import (
    Interleaving,
    ProduceReport,
    StreamPublisher,
    file_stream,
    publication_delays,
    simulation_items,
)
from gateway.simulation.simulator import simulate
from schemas.settings import KafkaSettings
from schemas.text import safe_text


def progress_bar(console: Console, *, when_piped: bool = False) -> Progress:
    """The rich progress bar of the commands (description, bar, n/total, elapsed); off when the
    console is not a terminal unless ``when_piped`` (the demo shows it in CI logs too)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not (console.is_terminal or when_piped),
    )


def run_simulate(
    config: SimulationConfig,
    *,
    kafka: KafkaSettings | None,
    out: Path | None,
    file_format: str,
    realtime: bool,
    speed: float | None = None,
    console: Console | None = None,
) -> int:
    """Simulate, then write files and/or publish to Kafka; returns the exit code (1 if anything was undelivered).

    Event time: ``realtime`` (or ``speed``, a factor of real time) starts it now and paces the
    publication; publishing to Kafka without pacing backfills the last ``duration_s`` (ending now),
    since the worker dead-letters spans far from its clock; files alone keep the config's start.
    """
    console = console or Console(stderr=True)
    if realtime:
        speed = 1.0
    now = time.time_ns() // 1_000_000 * 1_000_000
    if speed is not None:
        config = replace(config, start_time_unix_nano=now)
    elif kafka is not None:
        config = replace(config, start_time_unix_nano=now - int(config.duration_s * 1e9))
    with progress_bar(console) as progress:
        task = progress.add_task("simulating", total=None)
        simulation = simulate(
            config, on_progress=lambda done, total: progress.update(task, completed=done, total=total)
        )
    counts = simulation.ground_truth["counts"]
    console.print(
        f"simulated {counts['requests']} requests ({counts['spans']} spans), {counts['reloads']} reloads "
        f"({counts['failed_reloads']} failed, {counts['late_reloads']} late), {counts['mid_flight_spans']} mid-flight spans"
    )
    if out is not None:
        paths = write_simulation(simulation, out, file_format=file_format)
        console.print("wrote " + ", ".join(str(path) for path in paths.values()))
    exit_code = 0
    if kafka is not None:
        items = simulation_items(simulation)
        report = ProduceReport()
        with progress_bar(console) as progress:
            task = progress.add_task("publishing" + (f" at {speed:g}x real time" if speed else ""), total=len(items))
            StreamPublisher(kafka).publish(
                items, report, pace=speed, on_item=lambda n: progress.update(task, completed=n)
            )
        console.print(
            f"published {report.spans} spans to {kafka.topics.spans} and {report.reloads} reloads to "
            f"{kafka.topics.reloads}; delivered {report.delivery.delivered}, failed {report.undelivered}"
        )
        exit_code = 1 if report.undelivered else 0
    return exit_code


def run_produce(
    kafka: KafkaSettings,
    spans: Path,
    reloads: Path,
    *,
    interleaving: Interleaving,
    ground_truth: Path | None,
    console: Console | None = None,
) -> int:
    """Publish two record files; returns 1 when a record was not delivered, 0 otherwise (skipped lines are reported)."""
    console = console or Console(stderr=True)
    delays = publication_delays(json.loads(ground_truth.read_text())) if ground_truth is not None else None
    report = ProduceReport()
    items = file_stream(spans, reloads, report, interleaving=interleaving, publication_delays_ns=delays)
    with progress_bar(console) as progress:
        task = progress.add_task("publishing", total=len(items))
        StreamPublisher(kafka).publish(items, report, on_item=lambda n: progress.update(task, completed=n))
    console.print(
        f"published {report.spans} spans and {report.reloads} reloads ({interleaving.value}); "
        f"delivered {report.delivery.delivered}, undelivered {report.undelivered}, skipped {len(report.skipped)} bad lines"
    )
    for path, position, error in report.skipped[:20]:
        console.print(Text(safe_text(f"  skipped {path}:{position}: {error}", 2_000)))  # literal: lines quote the file
    if len(report.skipped) > 20:
        console.print(f"  ... and {len(report.skipped) - 20} more")
    return 1 if report.undelivered else 0


__all__ = ["NANOS", "run_produce", "run_simulate"]
