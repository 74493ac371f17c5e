"""The `reloadtrace` command line: one entry point, each command a thin wrapper over its package.

Commands import their package lazily so that `reloadtrace --help` stays fast and a command only
pays for the libraries it uses.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="reloadtrace",
    help="Truthful traces across hot reloads: enrich spans with the versions active when they ran.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the installed reloadtrace version."""
    from importlib.metadata import version as installed_version

    typer.echo(installed_version("reloadtrace"))


@app.command()
def worker(
    bootstrap_servers: str = typer.Option(None, help="Kafka bootstrap servers [env KAFKA_BOOTSTRAP_SERVERS]"),
    topic_prefix: str = typer.Option(None, help="Topic name prefix [env RELOADTRACE_TOPIC_PREFIX]"),
    partitions: int = typer.Option(None, help="Partitions of topics the worker creates [env RELOADTRACE_PARTITIONS]"),
    grace_period_ms: int = typer.Option(None, help="Grace period for late reloads [env RELOADTRACE_GRACE_PERIOD_MS]"),
    correction_horizon_ms: int = typer.Option(
        None, help="How late a reload may still correct spans [env RELOADTRACE_CORRECTION_HORIZON_MS]"
    ),
    sink_url: str = typer.Option(None, help="ClickHouse URL, chdb://PATH or clickhouse://... [env RELOADTRACE_SINK_URL]"),
    group_id: str = typer.Option(None, help="Consumer group of the workers [env RELOADTRACE_GROUP_ID]"),
    loglevel: str = typer.Option("info", help="Log level: crit, error, warn, info, debug"),
) -> None:
    """Run a streaming worker: enrich spans, judge reloads, feed ClickHouse (until SIGTERM)."""
    from schemas.settings import KafkaSettings
    from streams.app import run_worker
    from streams.settings import WorkerSettings

    kafka_flags = {"bootstrap_servers": bootstrap_servers, "topic_prefix": topic_prefix, "partitions": partitions}
    worker_flags = {
        "grace_period_ms": grace_period_ms,
        "correction_horizon_ms": correction_horizon_ms,
        "sink_url": sink_url,
        "group_id": group_id,
    }
    kafka = KafkaSettings(**{key: value for key, value in kafka_flags.items() if value is not None})
    settings = WorkerSettings(**{key: value for key, value in worker_flags.items() if value is not None})
    run_worker(kafka, settings, loglevel=loglevel)


@app.command()
def replay(
    spans: str = typer.Option(..., "--spans", help="Span file (.jsonl or .avro), any order"),
    reloads: str = typer.Option(..., "--reloads", help="Reload event file (.jsonl or .avro), any order"),
    out: str = typer.Option(..., "--out", help="Output directory: enriched_spans.jsonl and anomalies.jsonl"),
    progress: bool = typer.Option(None, "--progress/--no-progress", help="Progress bar [default: on a terminal]"),
) -> None:
    """Enrich a span file offline with every reload known, and judge every reload."""
    from streams.replay import ReplayError, RecordFileError, print_summary, run_replay

    try:
        summary = run_replay(spans, reloads, out, progress=progress)
    except (RecordFileError, ReplayError) as error:
        typer.echo(f"reloadtrace replay: {error}", err=True)
        raise typer.Exit(2) from None
    print_summary(summary)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
