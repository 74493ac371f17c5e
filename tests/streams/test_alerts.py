"""Alerting hooks against a real local HTTP server (stdlib) and the real broker; rollback as argv."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from confluent_kafka import Producer

from schemas.records import Anomaly
from schemas.settings import KafkaSettings
from streams.alerts import AlertError, AlertSettings, RollbackHook, WebhookSender, alerts_runtime
from streams.detection import anomaly_id
from streams.stage import StageRuntime
from tests.threads import start_stoppable


class Hook:
    """A webhook receiver: answers ``failures`` requests with 500 first, then 200; records every body."""

    def __init__(self, port: int = 0, *, failures: int = 0, status: int = 500) -> None:
        self.bodies: list[dict] = []
        self.keys: list[str] = []
        self.attempts = 0
        self.failures = failures
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = self.rfile.read(length)
                hook.attempts += 1
                if hook.failures > 0:
                    hook.failures -= 1
                    self.send_response(status)
                    self.end_headers()
                    return
                hook.bodies.append(json.loads(body))
                hook.keys.append(self.headers["Idempotency-Key"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def anomaly(reload_id: str = "r1", metric: str = "latency", severity: str = "WARNING", **extra: object) -> dict:
    return {
        "anomaly_id": anomaly_id(reload_id, metric),
        "reload_id": reload_id,
        "service_name": "svc",
        "component": "model",
        "old_version": "v1",
        "new_version": "v2",
        "metric": metric,
        "baseline_value": 40.0,
        "observed_value": 80.0,
        "p_value": 1e-9,
        "baseline_count": 3000,
        "observed_count": 50,
        "detected_time_unix_nano": 1_780_000_302_000_000_000,
        "severity": severity,
    } | extra


def anomaly_record(
    reload_id: str = "r1", metric: str = "latency", severity: str = "WARNING", **extra: object
) -> Anomaly:
    """:func:`anomaly` as the consumer reads it."""
    return Anomaly.from_dict(anomaly(reload_id, metric, severity, **extra))


FAST = {"initial_backoff_ms": 10, "max_backoff_ms": 40, "timeout_ms": 2_000}


# --- webhooks -----------------------------------------------------------------------------------


def test_a_failing_server_is_retried_with_growing_backoff_until_it_accepts() -> None:
    hook = Hook(failures=3)
    waits: list[float] = []
    sender = WebhookSender([hook.url], AlertSettings(**FAST), sleep=lambda s: waits.append(s) is None and False)
    try:
        outcomes = sender.deliver(anomaly_record())
    finally:
        sender.close()
        hook.close()
    assert outcomes is not None and outcomes[0].delivered and outcomes[0].attempts == 4
    assert waits == [0.01, 0.02, 0.04]  # doubling, capped at max_backoff_ms
    assert hook.bodies == [anomaly()] and hook.keys == [f"{anomaly_id('r1', 'latency')}:WARNING"]


def test_connection_refused_is_retried_until_the_server_comes_up() -> None:
    port = free_port()
    started: list[Hook] = []

    def sleep(seconds: float) -> bool:
        if len(started) == 0 and len(waits) == 2:
            started.append(Hook(port))
        waits.append(seconds)
        return False

    waits: list[float] = []
    sender = WebhookSender([f"http://127.0.0.1:{port}/hook"], AlertSettings(**FAST), sleep=sleep)
    try:
        outcomes = sender.deliver(anomaly_record())
        assert outcomes is not None and outcomes[0].delivered and outcomes[0].attempts == 4
        assert started[0].bodies == [anomaly()]
    finally:
        sender.close()
        for hook in started:
            hook.close()


def test_a_permanent_refusal_is_not_retried_and_max_attempts_raises() -> None:
    refusing = Hook(failures=10, status=400)
    sender = WebhookSender([refusing.url], AlertSettings(**FAST), sleep=lambda s: False)
    try:
        outcome = sender.deliver(anomaly_record())
        assert outcome is not None and not outcome[0].delivered and outcome[0].status_code == 400
        assert refusing.attempts == 1
    finally:
        sender.close()
        refusing.close()
    failing = Hook(failures=10)
    limited = WebhookSender([failing.url], AlertSettings(**FAST, max_attempts=3), sleep=lambda s: False)
    try:
        with pytest.raises(AlertError):
            limited.deliver(anomaly_record())
        assert failing.attempts == 3
    finally:
        limited.close()
        failing.close()


def test_settings_read_comma_separated_urls_and_reject_bad_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELOADTRACE_ALERTS_WEBHOOK_URLS", "http://a/x, https://b/y")
    assert [url.get_secret_value() for url in AlertSettings().webhook_urls] == ["http://a/x", "https://b/y"]
    with pytest.raises(ValueError):
        AlertSettings(webhook_urls=["ftp://nope"])
    with pytest.raises(ValueError):
        AlertSettings(min_severity="LOUD")


# --- rollback ------------------------------------------------------------------------------------


def test_rollback_runs_once_per_reload_with_arguments_not_a_shell(tmp_path: Path) -> None:
    script = tmp_path / "rollback.py"
    record = tmp_path / "calls.jsonl"
    script.write_text(
        "import json, sys\n"
        f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    marker = tmp_path / "injected"
    hook = RollbackHook(f"{sys.executable} {script} --dry-run", min_severity="CRITICAL")
    hostile = anomaly_record(severity="CRITICAL", component=f"model; touch {marker}", old_version="$(touch x)")
    assert hook.run(anomaly_record(severity="WARNING")) is None  # below the rollback severity
    outcome = hook.run(hostile)
    assert outcome is not None and outcome.returncode == 0
    assert hook.run(anomaly_record("r1", "error_rate", severity="CRITICAL")) is None  # same reload: once
    assert hook.run(anomaly_record("r2", "reload_failed", severity="CRITICAL")) is None  # not a regression
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls == [["--dry-run", "--", "svc", f"model; touch {marker}", "$(touch x)"]]
    assert not marker.exists()
    failing = RollbackHook(f"{sys.executable} -c 'import sys; sys.exit(3)'")
    assert failing.run(anomaly_record("r3", severity="CRITICAL")).returncode == 3  # logged, never raised


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("old_version", "v1\x00evil"),
        ("old_version", "--no-dry-run"),
        ("service_name", "-rf"),
        ("component", "model\n--force"),
        ("old_version", "v1\x1b]8;;http://x\x1b\\"),
        ("old_version", "v\x85"),
    ],
)
def test_rollback_refuses_values_with_control_characters_or_a_leading_dash(
    tmp_path: Path, field: str, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    record = tmp_path / "calls"
    hook = RollbackHook(f"{sys.executable} -c \"open({str(record)!r}, 'w').write('ran')\" --dry-run")
    outcome = hook.run(anomaly_record(severity="CRITICAL", **{field: value}))
    assert outcome is not None and outcome.returncode is None and outcome.output.startswith("refused")
    assert hook.refused == 1 and not record.exists()
    logged = "\n".join(entry.getMessage() for entry in caplog.records)
    assert "refused" in logged and "\x00" not in logged and "\x1b" not in logged and "\n--force" not in logged
    assert hook.run(anomaly_record(severity="CRITICAL", **{field: value})) is None  # once per reload, refused or not


def test_a_failing_rollback_command_never_raises(tmp_path: Path) -> None:
    missing = RollbackHook(str(tmp_path / "no-such-command"))
    outcome = missing.run(anomaly_record("r9", severity="CRITICAL"))
    assert outcome is not None and outcome.returncode is None and missing.failed == 1
    slow = RollbackHook(f"{sys.executable} -c 'import time; time.sleep(5)'", timeout_ms=100)
    assert slow.run(anomaly_record("r10", severity="CRITICAL")).returncode is None
    assert missing.run({"metric": "latency", "severity": "CRITICAL", "old_version": "v"}) is not None  # no reload_id
    assert missing.failed == 2


def test_the_idempotency_key_is_printable_ascii_whatever_the_anomaly_id() -> None:
    from streams.alerts import idempotency_key

    hostile = anomaly_record(anomaly_id="a\r\nX-Evil: 1\x00\u00e9\u202e")
    key = idempotency_key(hostile)
    assert key.isascii() and key.isprintable() and "\r" not in key and key.endswith(":WARNING")
    assert idempotency_key(anomaly_record()) == f"{anomaly_id('r1', 'latency')}:WARNING"


# --- the consumer on the real broker -------------------------------------------------------------


def produce_anomalies(kafka: KafkaSettings, records: list[dict]) -> None:
    codec = kafka.codec("Anomaly")
    producer = Producer(kafka.confluent_config())
    for record in records:
        producer.produce(kafka.topics.reload_anomalies, key=record["service_name"].encode(), value=codec.encode(record))
    producer.produce(kafka.topics.reload_anomalies, key=b"svc", value=b"not avro")
    assert producer.flush(30) == 0


def run_consumer(consumer: StageRuntime) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    return start_stoppable(consumer.run)


def wait_for(condition, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


@pytest.mark.kafka
@pytest.mark.slow
def test_every_anomaly_reaches_the_webhook_across_failures_and_a_restart(kafka_settings: KafkaSettings) -> None:
    records = [
        anomaly("r1"),
        anomaly("r1"),  # duplicate: posted once
        anomaly("r1", severity="CRITICAL"),  # severity rose: posted again
        anomaly("r1"),  # lower than what was posted: not again
        anomaly("r2", "error_rate"),
        anomaly("r3", "reload_failed", severity="INFO"),  # below min severity
        anomaly("r4", "latency", severity="CRITICAL"),
    ]
    expected = {(r["anomaly_id"], r["severity"]) for r in records if r["severity"] != "INFO"}
    produce_anomalies(kafka_settings, records)
    group = f"alerts-{uuid.uuid4().hex}"
    port = free_port()

    # First run: the webhook is down (connection refused); the consumer retries and is stopped.
    first = alerts_runtime(kafka_settings, AlertSettings(webhook_urls=[f"http://127.0.0.1:{port}/hook"], group_id=group, **FAST))
    thread, stop, errors = run_consumer(first)
    assert wait_for(lambda: first.stage.stats.consumed >= 1)
    time.sleep(0.5)
    stop.set()
    thread.join(30)
    assert errors == [] and first.stage.stats.posted == 0

    # Second run: the server is up but fails its first attempts; nothing was lost.
    hook = Hook(port, failures=2)
    second = alerts_runtime(kafka_settings, AlertSettings(webhook_urls=[hook.url], group_id=group, **FAST))
    thread, stop, errors = run_consumer(second)
    try:
        assert wait_for(lambda: len(hook.bodies) >= len(expected) and second.stage.stats.dead_letters == 1)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(30)
        hook.close()
    assert errors == []
    assert sorted((b["anomaly_id"], b["severity"]) for b in hook.bodies) == sorted(expected)
    assert second.stage.stats.duplicates == 2 and second.stage.stats.below_severity == 1
    assert hook.bodies[0] == records[0]

    # Third run: everything was committed, so nothing is posted again.
    again = Hook(port)
    third = alerts_runtime(kafka_settings, AlertSettings(webhook_urls=[again.url], group_id=group, **FAST))
    thread, stop, errors = run_consumer(third)
    try:
        time.sleep(3)
    finally:
        stop.set()
        thread.join(30)
        again.close()
    assert errors == [] and again.bodies == [] and third.stage.stats.consumed == 0


@pytest.mark.kafka
@pytest.mark.slow
def test_hostile_anomalies_never_stop_the_consumer_and_are_committed(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"
    command = f"{sys.executable} -c \"import json, sys; open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + chr(10))\""
    records = [
        anomaly("nul", severity="CRITICAL", old_version="v1\x00"),  # crashed the hook after the POST
        anomaly("dash", severity="CRITICAL", old_version="--no-dry-run"),  # would have been an option
        anomaly("hdr", severity="CRITICAL", anomaly_id="x\r\nInjected: 1\u00e9"),  # not a valid header value as is
        anomaly("ok", severity="CRITICAL"),
    ]
    produce_anomalies(kafka_settings, records)  # and one message that is not Avro
    hook = Hook()
    group = f"alerts-{uuid.uuid4().hex}"
    settings = AlertSettings(webhook_urls=[hook.url], group_id=group, rollback_command=command, **FAST)
    consumer = alerts_runtime(kafka_settings, settings)
    thread, stop, errors = run_consumer(consumer)
    try:
        assert wait_for(lambda: consumer.stage.stats.consumed >= len(records) + 1 and consumer.stats.commits >= 1 or bool(errors))
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(30)
        hook.close()
    assert errors == [] and thread is not None
    assert consumer.stage.stats.dead_letters == 1 and consumer.stage.stats.posted == 4
    assert [json.loads(line) for line in calls.read_text().splitlines()] == [["--", "svc", "model", "v1"]] * 2
    again = alerts_runtime(kafka_settings, settings)
    thread, stop, errors = run_consumer(again)
    try:
        time.sleep(3)
    finally:
        stop.set()
        thread.join(30)
    assert errors == [] and again.stage.stats.consumed == 0  # everything was committed


# --- the command ---------------------------------------------------------------------------------


def test_alerts_command_refuses_to_run_with_nothing_to_do() -> None:
    from typer.testing import CliRunner

    from streams.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["alerts"]).exit_code == 2
    assert runner.invoke(app, ["alerts", "--webhook", "ftp://x"]).exit_code == 2


@pytest.mark.kafka
@pytest.mark.slow
def test_alerts_command_posts_and_stops_on_sigterm(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    import signal
    import subprocess

    hook = Hook()
    record = anomaly("cmd", severity="CRITICAL")
    produce_anomalies(kafka_settings, [record])
    calls = tmp_path / "calls"
    command = [
        str(Path(sys.executable).with_name("reloadtrace")), "alerts",
        "--webhook", hook.url,
        "--bootstrap-servers", kafka_settings.bootstrap_servers,
        "--topic-prefix", kafka_settings.topic_prefix,
        "--group-id", f"cmd-{uuid.uuid4().hex}",
        "--rollback-command", f"{sys.executable} -c \"import sys; open({str(calls)!r}, 'w').write(' '.join(sys.argv[1:]))\"",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: len(hook.bodies) == 1 and calls.exists(), timeout_s=60)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        hook.close()
    assert process.returncode == 0, output
    assert hook.bodies == [record]
    assert calls.read_text() == "-- svc model v1"


# --- Alertmanager and template formats ------------------------------------------------------------


GO_FINGERPRINT_A_B = "d2b371819297f98a"
GO_FINGERPRINT_ALERT = "9c2cb5f9a984dceb"
"""model.LabelSet{...}.Fingerprint().String() of github.com/prometheus/common v0.74.0 (Alertmanager's label model)."""


def look(reload_id: str, effective_s: int, *, emitted: dict[str, str] | None = None, final: bool = True, **extra: object) -> dict:
    """A ReloadVerdict record of the service 'svc', component 'model'."""
    emitted = emitted or {}
    return {
        "reload_id": reload_id, "service_name": "svc", "service_instance_id": None, "component": "model",
        "old_version": "v1", "new_version": f"v-{reload_id}", "status": "SUCCEEDED", "requested_time_unix_nano": effective_s * 10**9,
        "effective_time_unix_nano": effective_s * 10**9, "look_time_unix_nano": (effective_s + 10) * 10**9, "look_index": 0,
        "looks_total": 1, "final": final, "window_end_unix_nano": (effective_s + 10) * 10**9,
        "metrics": [
            {"metric": name, "severity": emitted.get(name), "emitted_severity": emitted.get(name), "baseline_value": 1.0,
             "observed_value": 2.0, "p_value": 1e-6, "baseline_count": 100, "observed_count": 50}
            for name in ("latency", "error_rate")
        ],
    } | extra


def test_alertmanager_payload_has_the_documented_shape_labels_and_fingerprint() -> None:
    import jsonschema

    from streams.alertmanager import FIRING, AlertFacts, alert, fingerprint, webhook_payload
    from tests.streams.alertmanager_shape import WEBHOOK_V4

    facts = AlertFacts.from_anomaly(anomaly_record("sim0-r003", "latency", "CRITICAL", service_name="llm-gateway", old_version=None))
    shown = alert(facts, status=FIRING, ends_at_unix_nano=None, report_url="https://g.example/d?r={reload_id}&s={service}")
    payload = webhook_payload([shown])
    jsonschema.validate(payload, WEBHOOK_V4)
    assert shown["labels"] == {
        "alertname": "ReloadRegression", "service": "llm-gateway", "component": "model", "old_version": "",
        "new_version": "v2", "metric": "latency", "severity": "critical", "reload_id": "sim0-r003",
    }
    assert shown["endsAt"] == "0001-01-01T00:00:00Z" and shown["generatorURL"] == "https://g.example/d?r=sim0-r003&s=llm-gateway"
    assert "p = " in shown["annotations"]["summary"] and "reload_id = 'sim0-r003'" in shown["annotations"]["report_query"]
    assert payload["status"] == "firing" and payload["groupLabels"] == {"reload_id": "sim0-r003"}
    # Alertmanager's fingerprint (prometheus/common model.LabelSet.Fingerprint), values from its Go implementation.
    assert fingerprint({"a": "b"}) == GO_FINGERPRINT_A_B
    assert fingerprint({"alertname": "ReloadRegression", "service": "llm-gateway", "severity": "critical",
                        "reload_id": "sim0-r003", "old_version": ""}) == GO_FINGERPRINT_ALERT


def test_a_template_renders_valid_json_whatever_the_values_hold(tmp_path: Path) -> None:
    from streams.alertmanager import FIRING, AlertFacts, BodyTemplate, TemplateError, alert

    template = BodyTemplate('{"text": "[${status}] ${summary}", "k": ["${service}", 3], "cost": "$$5"}')
    hostile = AlertFacts.from_anomaly(anomaly_record(service_name='a"b\\c\n${status}\x00'))
    body = json.loads(template.render(alert(hostile, status=FIRING, ends_at_unix_nano=None, report_url=None)))
    assert body["k"] == ['a"b\\c\n${status}\x00', 3] and body["text"].startswith("[firing] latency") and body["cost"] == "$5"
    for bad in ('{"a": "${nope}"}', "not json", '{"a": "$ 5"}'):
        with pytest.raises(TemplateError):
            BodyTemplate(bad)


def test_a_later_clean_reload_of_the_component_supersedes_in_any_order() -> None:
    from streams.resolutions import Supersessions

    bad = look("bad", 100, emitted={"latency": "CRITICAL"}, final=True)
    clean = look("clean", 200)
    other_component = look("cfg", 150, component="config")
    canary_elsewhere = look("canary", 160, service_instance_id="i-2")
    failed_reload = look("failed", 170, status="FAILED")
    for order in ([bad, other_component, canary_elsewhere, failed_reload, clean], [clean, failed_reload, canary_elsewhere, bad]):
        supersessions = Supersessions("WARNING")
        decided = [r for record in order for r in supersessions.add_look(record, 5)]
        assert [(r.reload_id, r.by_reload_id) for r in decided] == [("bad", "clean")]
        (resolution,) = decided
        assert resolution.ends_at_unix_nano == 200 * 10**9
        assert [(a.metric, a.severity) for a in resolution.alerts] == [("latency", "WARNING"), ("latency", "CRITICAL")]
        assert supersessions.add_look(clean, 6) == []  # once
    # An earlier reload is never superseded by one before it, nor by an unclean or unfinished one.
    supersessions = Supersessions("WARNING")
    for record in (look("early", 50), bad, look("regressed", 300, emitted={"error_rate": "WARNING"}), look("open", 400, final=False)):
        assert supersessions.add_look(record, 1) == []


def test_alertmanager_format_resolves_when_a_clean_reload_supersedes(kafka_settings: KafkaSettings) -> None:
    hook = Hook()
    verdicts = kafka_settings.codec("ReloadVerdict")
    producer = Producer(kafka_settings.confluent_config())
    bad = anomaly("bad", "latency", "WARNING") | {"new_version": "v-bad", "detected_time_unix_nano": 102 * 10**9}
    produce_anomalies(kafka_settings, [bad])
    producer.produce(kafka_settings.topics.reload_verdicts, key=b"bad", value=verdicts.encode(look("bad", 100, emitted={"latency": "WARNING"})))
    producer.flush(10)
    settings = AlertSettings(webhook_urls=[hook.url], format="alertmanager", group_id=f"al-{uuid.uuid4().hex}", poll_timeout_ms=50)
    consumer = alerts_runtime(kafka_settings, settings)
    thread, stop, errors = run_consumer(consumer)
    try:
        assert wait_for(lambda: len(hook.bodies) == 1)
        producer.produce(kafka_settings.topics.reload_verdicts, key=b"clean", value=verdicts.encode(look("clean", 200)))
        producer.flush(10)
        assert wait_for(lambda: len(hook.bodies) == 2)
    finally:
        stop.set()
        thread.join(30)
        hook.close()
    assert errors == []
    firing, resolved = hook.bodies
    assert firing["status"] == "firing" and resolved["status"] == "resolved"
    assert firing["alerts"][0]["fingerprint"] == resolved["alerts"][0]["fingerprint"]
    assert resolved["alerts"][0]["endsAt"].startswith("1970-01-01T00:03:20")
    assert hook.keys[1] == "bad:resolved-by:clean" and consumer.stage.stats.resolved == 1
