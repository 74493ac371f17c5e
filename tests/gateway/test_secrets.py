"""No password or token reaches a log line or an error text (issue 14, item 5).

Every test here runs with all logging captured (root logger at DEBUG, httpx included) and its
stdout/stderr captured; ``no_secret_anywhere`` asserts that none of :data:`SECRETS` appears in any
of it, nor in the errors raised.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.redaction import Redactor
from gateway.settings import GatewaySettings

SECRETS = ("S3cr3t", "hunter2", "sk-live-123", "tok-9f8e7d", "pw-db-777", "eyJhbGciOiJIUzI1NiJ9.payload.sig")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_secret_anywhere(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("httpx").setLevel(logging.DEBUG)
    seen: list[str] = []
    yield seen
    out, err = capfd.readouterr()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    everything = "\n".join([out, err, logged, *seen])
    leaked = [secret for secret in SECRETS if secret in everything]
    assert not leaked, f"{leaked} leaked into:\n{everything[-3000:]}"


def _error_text(call) -> str:
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the text of whatever was raised
        from schemas.settings import settings_error

        return settings_error(error) if isinstance(error, ValidationError) else f"{type(error).__name__}: {error}"
    return ""


@pytest.mark.parametrize(
    "url",
    [
        "clickhouse://u:S3cr3t@[::1/db",
        "clickhouse://u:S3cr3t@host:port/db",
        "clickhouse://u:S3cr3t@host/bad-name",
        "postgres://u:S3cr3t@host/db",
        "clickhouse://u:S3cr3t@:8123/db",
    ],
)
def test_bad_sink_urls_are_refused_without_their_password(url: str, no_secret_anywhere: list[str]) -> None:
    from sinks.settings import SinkSettings
    from streams.settings import WorkerSettings

    text = _error_text(lambda: SinkSettings(url=url))
    assert text and "S3cr3t" not in text
    no_secret_anywhere.append(text)
    no_secret_anywhere.append(repr(WorkerSettings(sink_url=url)))
    no_secret_anywhere.append(WorkerSettings(sink_url=url).model_dump_json())


def test_settings_show_urls_masked(no_secret_anywhere: list[str]) -> None:
    from sinks.settings import SinkSettings
    from streams.alerts import AlertSettings
    from streams.settings import WorkerSettings

    worker = WorkerSettings(sink_url="clickhouse://u:S3cr3t@ch:8123/db")
    assert worker.sink_url_value == "clickhouse://u:S3cr3t@ch:8123/db"
    sink = SinkSettings(url="clickhouse://u:S3cr3t@ch:8123/db")
    alerts = AlertSettings(webhook_urls=["https://hooks.example/T0/tok-9f8e7d?token=tok-9f8e7d"])
    for settings in (worker, sink, alerts):
        no_secret_anywhere.extend([repr(settings), str(settings), settings.model_dump_json()])
        logging.getLogger("test").info("settings: %s %r", settings, settings)
    no_secret_anywhere.append(sink.target().describe())


def test_commands_print_validation_errors_without_their_input(no_secret_anywhere: list[str], tmp_path: Path) -> None:
    runs = [
        (["worker"], {"RELOADTRACE_SINK_URL": "clickhouse://u:S3cr3t@[::1/db"}),
        (["worker"], {"RELOADTRACE_SINK_URL": "clickhouse://u:S3cr3t@host:99999999/db"}),
        (["sink"], {"RELOADTRACE_SINK_URL": "clickhouse://u:S3cr3t@host:abc/db"}),
        (["report"], {"RELOADTRACE_SINK_URL": "clickhouse://u:S3cr3t@[::1/db"}),
        (["alerts", "--webhook", "ftp://hooks.example/tok-9f8e7d"], {}),
        (["worker"], {"RELOADTRACE_KAFKA_SASL_USERNAME": "u", "RELOADTRACE_GRACE_PERIOD_MS": "hunter2"}),
    ]
    for args, env in runs:
        result = subprocess.run(
            [sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=120,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        )
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        no_secret_anywhere.extend([result.stdout, result.stderr])


class _Hook:
    def __init__(self, statuses: list[int]) -> None:
        statuses = list(statuses)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(statuses.pop(0) if statuses else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/tok-9f8e7d?token=tok-9f8e7d"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_posts_retries_and_failures_log_the_origin_only(no_secret_anywhere: list[str]) -> None:
    from streams.alerts import AlertError, AlertSettings, WebhookSender
    from tests.streams.test_alerts import anomaly_record

    hook = _Hook([500, 503])
    settings = AlertSettings(webhook_urls=[hook.url], initial_backoff_ms=1, max_backoff_ms=2)
    sender = WebhookSender(settings.webhook_urls, settings)
    try:
        outcomes = sender.deliver(anomaly_record())
        assert outcomes and outcomes[0].delivered and outcomes[0].attempts == 3
        no_secret_anywhere.append(repr(outcomes))
    finally:
        sender.close()
        hook.close()
    dead = AlertSettings(webhook_urls=[hook.url], initial_backoff_ms=1, max_backoff_ms=2, max_attempts=2)
    failing = WebhookSender(dead.webhook_urls, dead)
    try:
        with pytest.raises(AlertError) as caught:
            failing.deliver(anomaly_record())
        no_secret_anywhere.append(str(caught.value))
        assert "127.0.0.1" in str(caught.value)
    finally:
        failing.close()


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("attribute", "https://api.example/v1/chat?api_key=sk-live-123&stream=true"),
        ("attribute", "https://user:hunter2@api.example/v1"),
        ("resource", "postgresql://app:pw-db-777@db.internal:5432/app"),
        ("status", "login failed for bob: password=hunter2"),
        ("name", "GET /v1/chat?access_token=tok-9f8e7d"),
        ("attribute", "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig"),
    ],
)
def test_secrets_inside_values_are_redacted(where: str, value: str, no_secret_anywhere: list[str]) -> None:
    from opentelemetry.trace import Status, StatusCode

    from gateway.convert import span_record
    from tests.gateway.helpers import instrumented

    provider, _registry, exporter, _ = instrumented()
    if where == "resource":
        provider._resource = provider.resource.merge(type(provider.resource)({"db.connection": value}))
    name = value if where == "name" else "request"
    with provider.get_tracer("app").start_as_current_span(name, attributes={"url.full": value} if where == "attribute" else {}) as span:
        if where == "status":
            span.set_status(Status(StatusCode.ERROR, value))
    (finished,) = exporter.get_finished_spans()
    for mode in ("drop", "hash"):
        record = span_record(finished, Redactor(mode=mode, salt="s"))
        no_secret_anywhere.append(json.dumps(record))


@pytest.mark.parametrize("key", ["apiToken", "AccessKeyId", "aws.secretAccessKey", "jwt", "credentials", "db.credentials", "sentry.dsn"])
def test_keys_missed_before_are_denied(key: str) -> None:
    assert Redactor().is_denied(key)


@pytest.mark.parametrize("key", ["service.credentials.version", "gen_ai.usage.inputTokens", "maxTokens", "tokenizer"])
def test_camel_case_keeps_ordinary_keys(key: str) -> None:
    assert not Redactor().is_denied(key)


def test_an_empty_salt_is_refused() -> None:
    with pytest.raises(ValueError):
        Redactor(mode="hash", salt="")
    with pytest.raises(ValueError):
        Redactor(mode="hash", salt=b"")
    with pytest.raises(ValidationError):
        GatewaySettings(redaction_salt="")
