"""The `reloadtrace` command line: one entry point, each command flags → settings → its package's entry.

Settings come from flags through :func:`_settings` (a flag not given leaves its environment variable
or default in force; invalid settings are one line that quotes no value, exit 2); long-running
commands run their component through :func:`streams.serve.serve` (SIGTERM/SIGINT stop it cleanly,
exit 0; a failure is one line, exit 1). Commands import their package lazily so that
`reloadtrace --help` stays fast and a command only pays for the libraries it uses.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

# The simulate command's scenario and its defaults; no OpenTelemetry import, so cheap at startup.
from gateway.simulation.config import Regression, SimulationConfig, SimulationConfigError, service_names

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from pydantic_settings import BaseSettings

    from schemas.settings import KafkaSettings

SettingsT = TypeVar("SettingsT", bound="BaseSettings")

# The Kafka flags every Kafka command takes (None: the environment or the default applies).
BootstrapServers = Annotated[str | None, typer.Option(help="Kafka bootstrap servers [env KAFKA_BOOTSTRAP_SERVERS]")]
TopicPrefix = Annotated[str | None, typer.Option(help="Topic name prefix [env RELOADTRACE_TOPIC_PREFIX]")]

app = typer.Typer(
    name="reloadtrace",
    help="Truthful traces across hot reloads: enrich spans with the versions active when they ran.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(command: str, message: str) -> NoReturn:
    """End ``command`` for bad input: ``message`` as one line on stderr, exit 2."""
    from streams.serve import EXIT_BAD_SETTINGS

    typer.echo(f"reloadtrace {command}: {message}", err=True)
    raise typer.Exit(EXIT_BAD_SETTINGS)


def _settings(command: str, settings_class: type[SettingsT], **flags: Any) -> SettingsT:
    """``settings_class`` from the flags given: a flag that is None was not given, so its environment
    variable or default applies. Invalid settings end ``command`` (:func:`_fail`) naming each setting
    and why, never the value given (it may be a password or a URL with one)."""
    from pydantic import ValidationError

    from schemas.settings import settings_error

    try:
        return settings_class(**{name: value for name, value in flags.items() if value is not None})
    except ValidationError as error:
        _fail(command, settings_error(error))


def _kafka(command: str, bootstrap_servers: str | None, topic_prefix: str | None, **flags: Any) -> KafkaSettings:
    """The Kafka settings of ``command`` from its Kafka flags (:func:`_settings`)."""
    from schemas.settings import KafkaSettings

    return _settings(command, KafkaSettings, bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix, **flags)


def _serve(command: str, entry: Callable[[threading.Event], None]) -> NoReturn:
    """Run ``entry`` until SIGTERM/SIGINT and exit with its code; a failure is one line on stderr."""
    from streams.serve import serve

    def report(_name: str, error: Exception) -> None:
        typer.echo(f"reloadtrace {command}: {error}", err=True)

    raise typer.Exit(serve(command, entry, on_failure=report))


@app.command()
def version() -> None:
    """Print the installed reloadtrace version."""
    from importlib.metadata import version as installed_version

    typer.echo(installed_version("reloadtrace"))


@app.command()
def worker(
    bootstrap_servers: BootstrapServers = None,
    topic_prefix: TopicPrefix = None,
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
    from sinks.settings import SinkSettings
    from streams.app import run_worker
    from streams.settings import WorkerSettings

    kafka = _kafka("worker", bootstrap_servers, topic_prefix, partitions=partitions)
    settings = _settings(
        "worker",
        WorkerSettings,
        grace_period_ms=grace_period_ms,
        correction_horizon_ms=correction_horizon_ms,
        sink_url=sink_url,
        group_id=group_id,
    )
    if settings.sink_url_value:
        _settings("worker", SinkSettings, url=settings.sink_url_value)  # a bad sink URL fails here, not in its child
    run_worker(kafka, settings, loglevel=loglevel)


@app.command()
def replay(
    spans: str = typer.Option(
        ..., "--spans", help="Span file (.jsonl, .avro, or OTLP: .otlp.jsonl, .otlp.pb), any order"
    ),
    reloads: str = typer.Option(
        None, "--reloads", help="Reload event file (.jsonl, .avro, or OTLP reload spans); optional with OTLP spans"
    ),
    out: str = typer.Option(..., "--out", help="Output directory: enriched_spans.jsonl and anomalies.jsonl"),
    progress: bool = typer.Option(None, "--progress/--no-progress", help="Progress bar [default: on a terminal]"),
) -> None:
    """Enrich a span file offline with every reload known, and judge every reload.

    The reload spans of OTLP files (reload.* attributes) are reload events too.
    """
    from streams.replay import RecordFileError, ReplayError, print_summary, run_replay

    try:
        summary = run_replay(spans, reloads, out, progress=progress)
    except (RecordFileError, ReplayError) as error:
        typer.echo(f"reloadtrace replay: {error}", err=True)
        raise typer.Exit(2) from None
    print_summary(summary)


def _caller_callee(text: str) -> tuple[str, str]:
    caller, separator, callee = text.partition("=")
    if not separator or not caller or not callee:
        raise ValueError(f"--call takes CALLER=CALLEE, got {text!r}")
    return caller, callee


_SIMULATION_DEFAULTS = SimulationConfig()  # the simulate flags default to the simulator's own defaults


@app.command()
def simulate(
    seed: int = typer.Option(_SIMULATION_DEFAULTS.seed, help="Seed: the same seed gives byte-identical files"),
    services: int = typer.Option(len(_SIMULATION_DEFAULTS.services), help="Number of services"),
    instances: int = typer.Option(_SIMULATION_DEFAULTS.instances_per_service, help="Instances per service"),
    rate: float = typer.Option(
        _SIMULATION_DEFAULTS.requests_per_second_per_service, help="Requests per second per service"
    ),
    duration_s: float = typer.Option(_SIMULATION_DEFAULTS.duration_s, "--duration-s", help="Simulated seconds"),
    reloads_per_service: int = typer.Option(
        _SIMULATION_DEFAULTS.reloads_per_service, help="Random reloads per service"
    ),
    late_fraction: float = typer.Option(_SIMULATION_DEFAULTS.late_fraction, help="Share of reloads published late"),
    max_lateness_s: float = typer.Option(
        _SIMULATION_DEFAULTS.max_lateness_s, "--max-lateness-s", help="Latest publication delay of a late reload"
    ),
    regression: list[str] = typer.Option(
        [], help="INDEX:LATENCY_FACTOR:ERROR_RATE, e.g. 2:2.0:0.15 (repeatable; ERROR_RATE may be empty)"
    ),
    call: list[str] = typer.Option([], help="CALLER=CALLEE: CALLER calls CALLEE instead of the model (repeatable)"),
    out: str = typer.Option(None, "--out", help="Write spans, reloads and ground_truth.json to this directory"),
    file_format: str = typer.Option("jsonl", "--format", help="jsonl or avro"),
    kafka: bool = typer.Option(None, "--kafka/--no-kafka", help="Publish to the topics [default: when no --out]"),
    realtime: bool = typer.Option(False, "--realtime", help="Event time = now, published at real-time pace"),
    speed: float = typer.Option(None, help="Event time = now, published at this multiple of real time (accelerated)"),
    bootstrap_servers: BootstrapServers = None,
    topic_prefix: TopicPrefix = None,
) -> None:
    """Generate multi-service LLM-gateway traffic with reloads (and injected regressions) to Kafka or files."""
    from pathlib import Path

    from gateway.simulation.commands import run_simulate

    try:
        regressions = []
        for text in regression:
            index, factor, error_rate = (text.split(":") + ["", ""])[:3]
            regressions.append(
                Regression(reload_index=int(index), latency_factor=float(factor or 1.0), error_rate=float(error_rate) if error_rate else None)
            )
        config = SimulationConfig(
            seed=seed,
            services=service_names(services),
            instances_per_service=instances,
            requests_per_second_per_service=rate,
            duration_s=duration_s,
            reloads_per_service=reloads_per_service,
            late_fraction=late_fraction,
            max_lateness_s=max_lateness_s,
            regressions=tuple(regressions),
            calls=dict(_caller_callee(text) for text in call),
        )
    except (ValueError, SimulationConfigError) as error:
        typer.echo(f"reloadtrace simulate: {error}", err=True)
        raise typer.Exit(2) from None
    publish = kafka if kafka is not None else out is None
    settings = _kafka("simulate", bootstrap_servers, topic_prefix) if publish else None
    code = run_simulate(
        config, kafka=settings, out=Path(out) if out else None, file_format=file_format, realtime=realtime, speed=speed
    )
    raise typer.Exit(code)


@app.command()
def produce(
    spans: str = typer.Option(..., "--spans", help="Span file (.jsonl or .avro)"),
    reloads: str = typer.Option(..., "--reloads", help="Reload event file (.jsonl or .avro)"),
    order: str = typer.Option(
        "reloads-first", help="reloads-first | spans-first | event-time (spans at end, reloads at effective + delay)"
    ),
    ground_truth: str = typer.Option(None, help="Simulator ground_truth.json: publication delays for event-time"),
    bootstrap_servers: BootstrapServers = None,
    topic_prefix: TopicPrefix = None,
) -> None:
    """Publish span and reload files to the topics (backfills, tests), reporting counts and skipped lines."""
    from pathlib import Path

    from gateway.simulation.commands import run_produce
    from gateway.simulation.produce import Interleaving
    from schemas.files import RecordFileError
    from schemas.text import safe_text

    try:
        interleaving = Interleaving(order)
        code = run_produce(
            _kafka("produce", bootstrap_servers, topic_prefix),
            Path(spans),
            Path(reloads),
            interleaving=interleaving,
            ground_truth=Path(ground_truth) if ground_truth else None,
        )
    except (ValueError, RecordFileError, OSError) as error:
        _fail("produce", safe_text(error, 500))
    raise typer.Exit(code)


@app.command()
def report(
    sink_url: str = typer.Option(None, help="ClickHouse: chdb://PATH or clickhouse[s]://... [env RELOADTRACE_SINK_URL]"),
    html_file: str = typer.Option(None, "--html", help="Also write a self-contained HTML report (charts) to this file"),
    since: str = typer.Option(None, help="Only data from then on: 15m, 6h, 2d, 1w or an ISO 8601 time [default: all]"),
    bucket_seconds: int = typer.Option(None, help="Latency chart bucket width [default: at most 60 buckets]"),
    window_seconds: int = typer.Option(300, help="Before/after window compared around each reload"),
    width: int = typer.Option(None, help="Terminal width for the tables [default: the terminal's]"),
) -> None:
    """Per-service version health, reloads (durations, failures, mid-flight requests) and anomalies, from ClickHouse."""
    from datetime import UTC, datetime
    from pathlib import Path

    from pydantic import ValidationError
    from rich.console import Console

    from schemas.errors import ReloadtraceError
    from schemas.settings import settings_error
    from schemas.text import safe_text
    from sinks.report import build_report, open_report_client, parse_since, render_html, render_terminal

    now = datetime.now(UTC)
    html_path = Path(html_file) if html_file else None
    if html_path is not None and not html_path.parent.is_dir():
        typer.echo(f"reloadtrace report: --html {safe_text(html_file, 300)}: no such directory", err=True)
        raise typer.Exit(2)
    try:
        start = parse_since(since, now=now)
        client, target = open_report_client(sink_url)
        try:
            result = build_report(
                client, since=start, now=now, target=target, bucket_seconds=bucket_seconds, window_seconds=window_seconds
            )
        finally:
            client.close()
    except ValidationError as error:
        typer.echo(f"reloadtrace report: {settings_error(error)}", err=True)
        raise typer.Exit(2) from None
    except (ReloadtraceError, ValueError) as error:
        typer.echo(f"reloadtrace report: {safe_text(error, 1_000)}", err=True)
        raise typer.Exit(2) from None
    render_terminal(result, Console(width=width))
    if html_path is not None:
        try:
            html_path.write_text(render_html(result), encoding="utf-8")
        except OSError as error:
            typer.echo(f"reloadtrace report: cannot write {safe_text(html_file, 300)}: {error.strerror or error}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"HTML report written to {safe_text(html_file, 300)}")


@app.command()
def sink(
    bootstrap_servers: BootstrapServers = None,
    topic_prefix: TopicPrefix = None,
    sink_url: str = typer.Option(None, help="chdb://PATH or clickhouse[s]://user@host:port/db [env RELOADTRACE_SINK_URL]"),
    flush_rows: int = typer.Option(None, help="Flush after this many rows [env RELOADTRACE_SINK_FLUSH_ROWS]"),
    flush_interval_ms: int = typer.Option(None, help="Flush at least this often [env RELOADTRACE_SINK_FLUSH_INTERVAL_MS]"),
    ttl_days: int = typer.Option(None, help="Delete rows older than this, 0 = keep [env RELOADTRACE_SINK_TTL_DAYS]"),
    group_id: str = typer.Option(None, help="Consumer group [env RELOADTRACE_SINK_GROUP_ID]"),
) -> None:
    """Land spans.enriched, reloads, reload.anomalies and dead-letter in ClickHouse (until SIGTERM/Ctrl-C)."""
    from sinks.settings import SinkSettings
    from streams.components import run_sink

    kafka = _kafka("sink", bootstrap_servers, topic_prefix)
    settings = _settings(
        "sink",
        SinkSettings,
        url=sink_url,
        flush_rows=flush_rows,
        flush_interval_ms=flush_interval_ms,
        ttl_days=ttl_days,
        group_id=group_id,
    )
    typer.echo(f"reloadtrace sink: writing to {settings.target().describe()}", err=True)
    _serve("sink", partial(run_sink, kafka, settings))


@app.command()
def alerts(
    webhook: list[str] = typer.Option(
        None, "--webhook", help="Webhook URL to POST anomalies to, repeatable [env RELOADTRACE_ALERTS_WEBHOOK_URLS, comma-separated]"
    ),
    min_severity: str = typer.Option(None, help="Lowest severity posted: INFO, WARNING, CRITICAL [default WARNING]"),
    rollback_command: str = typer.Option(
        None, help="Opt-in: command run with SERVICE COMPONENT OLD_VERSION appended, as argv (no shell) [off]"
    ),
    rollback_min_severity: str = typer.Option(None, help="Lowest severity of a regression that rolls back [default CRITICAL]"),
    max_attempts: int = typer.Option(None, help="Attempts per webhook before giving up (exit 1); 0 = until delivered [0]"),
    body_format: str = typer.Option(
        None, "--format", help="POST body: json (the anomaly), alertmanager (webhook payload v4), template [json]"
    ),
    template: str = typer.Option(None, "--template", help="JSON body template with ${field} placeholders (--format template)"),
    report_url: str = typer.Option(None, help="Alert link: a URL with {reload_id}, {service}, {component}, {new_version}"),
    bootstrap_servers: BootstrapServers = None,
    topic_prefix: TopicPrefix = None,
    group_id: str = typer.Option(None, help="Consumer group [env RELOADTRACE_ALERTS_GROUP_ID]"),
) -> None:
    """Post every anomaly of reload.anomalies to webhooks (retries, commit after delivery); optional rollback."""
    from schemas.text import safe_text
    from streams.alerts import AlertSettings
    from streams.components import run_alerts

    kafka = _kafka("alerts", bootstrap_servers, topic_prefix)
    settings = _settings(
        "alerts",
        AlertSettings,
        webhook_urls=webhook or None,
        min_severity=min_severity,
        rollback_command=rollback_command,
        rollback_min_severity=rollback_min_severity,
        max_attempts=max_attempts,
        group_id=group_id,
        format=body_format,
        template_file=template,
        report_url=report_url,
    )
    try:
        settings.body_template()
    except ValueError as error:
        _fail("alerts", safe_text(error, 500))
    if not settings.webhook_urls and not settings.rollback_command:
        _fail("alerts", "nothing to do: give --webhook URL and/or --rollback-command")
    _serve("alerts", partial(run_alerts, kafka, settings))


@app.command()
def detect(
    bootstrap_servers: BootstrapServers = None,
    topic_prefix: TopicPrefix = None,
    group_id: str = typer.Option(None, help="Consumer group [env RELOADTRACE_DETECTOR_GROUP_ID]"),
) -> None:
    """Run only the regression detector: requests-by-service in, reload.anomalies out (until SIGTERM/Ctrl-C).

    Thresholds come from RELOADTRACE_DETECTION_* variables (see README).
    """
    from streams.components import run_detector
    from streams.detection import DetectionSettings
    from streams.detector import DetectorSettings

    kafka = _kafka("detect", bootstrap_servers, topic_prefix)
    detection = _settings("detect", DetectionSettings)
    settings = _settings("detect", DetectorSettings, group_id=group_id or None)  # an empty --group-id: the default
    _serve("detect", partial(run_detector, kafka, detection, settings))


@app.command()
def gate(
    host: str = typer.Option(None, help="Address to listen on [env RELOADTRACE_GATE_HOST, default 127.0.0.1]"),
    port: int = typer.Option(None, help="TCP port [env RELOADTRACE_GATE_PORT, default 8080]"),
    fail_severity: str = typer.Option(None, help="Lowest severity that fails a reload [env RELOADTRACE_GATE_FAIL_SEVERITY, WARNING]"),
    flagger_pending: str = typer.Option(None, help="Flagger answer while pending: fail or pass [env RELOADTRACE_GATE_FLAGGER_PENDING, fail]"),
    allow_anonymous: bool = typer.Option(None, "--allow-anonymous/--require-token", help="Serve /v1 without a token [require]"),
    bootstrap_servers: BootstrapServers = None,
    topic_prefix: TopicPrefix = None,
) -> None:
    """Serve reload verdicts over HTTP for Argo Rollouts, Flagger and probes (until SIGTERM/Ctrl-C).

    The bearer token comes from RELOADTRACE_GATE_TOKEN or RELOADTRACE_GATE_TOKEN_FILE (never a flag).
    """
    from streams.gate.server import GateServer
    from streams.gate.settings import GateSettings

    kafka = _kafka("gate", bootstrap_servers, topic_prefix)
    settings = _settings(
        "gate",
        GateSettings,
        host=host,
        port=port,
        fail_severity=fail_severity,
        flagger_pending=flagger_pending,
        allow_anonymous=allow_anonymous,
    )
    try:
        server = GateServer(kafka, settings)  # its entry is server.run; building it reads the token file
    except ValueError as error:
        _fail("gate", str(error))
    _serve("gate", server.run)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
