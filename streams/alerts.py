"""Alerting hooks on ``reload.anomalies``: POST each anomaly to webhooks, optionally run a rollback command.

Guarantees: an offset is committed only after every webhook answered its anomaly with a 2xx (or a
final 4xx, logged and counted); failures are retried with exponential backoff. Within a process an
anomaly is posted once per severity rise; every POST carries ``Idempotency-Key: <anomaly_id>:<severity>``.
The rollback command (opt-in) runs as an argv list (``shlex.split`` of the command, ``--``, then
service, component and old version; values holding a control character or starting with ``-`` are
refused), never through a shell, at most once per reload per process; it never stops the consumer.
Formats: ``json`` (the Anomaly record), ``alertmanager`` (:mod:`streams.alertmanager`) and
``template``; the last two also resolve alerts from ``reload.verdicts`` (:mod:`streams.resolutions`).

Non-guarantees: after a crash, anomalies posted since the last commit are posted again (same key)
and a rollback may run again, so the command should be idempotent.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import orjson
from confluent_kafka import Message
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.errors import DecodeError, DecodeErrorKind, InvalidRecordError, ReloadtraceError
from schemas.records import SEVERITIES, Anomaly
from schemas.settings import KafkaSettings
from schemas.text import bounded_repr, bounded_text, safe_text, visible
from schemas.urls import UNPARSEABLE, url_origin
from streams.alertmanager import FIRING, RESOLVED, AlertFacts, BodyTemplate, TemplateError, alert, webhook_payload
from streams.resolutions import Resolution, Supersessions
from streams.stage import Outbox, Position, RuntimeSettings, Stage, StageInterrupted, StageRuntime

logger = logging.getLogger(__name__)

_DEFAULT_GROUP_ID = "reloadtrace-alerts"
_DEFAULT_MIN_SEVERITY = "WARNING"
_DEFAULT_ROLLBACK_MIN_SEVERITY = "CRITICAL"
_DEFAULT_TIMEOUT_MS = 5_000
_DEFAULT_INITIAL_BACKOFF_MS = 200
_DEFAULT_MAX_BACKOFF_MS = 30_000
_DEFAULT_MAX_ATTEMPTS = 0
_DEFAULT_ROLLBACK_TIMEOUT_MS = 60_000
_DEFAULT_BATCH_SIZE = 100
_DEFAULT_POLL_TIMEOUT_MS = 200
_COMMIT_INTERVAL_MS = 500
_DEDUPE_CAPACITY = 100_000
_ROLLBACK_METRICS = frozenset({"latency", "error_rate"})
_RETRYABLE_CLIENT_STATUSES = frozenset({408, 425, 429})
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
_DEFAULT_RESOLVE_REPLAY_MS = 900_000
_NANOS_PER_MS = 1_000_000
FORMATS = ("json", "alertmanager", "template")


class AlertError(ReloadtraceError):
    """An anomaly could not be delivered within ``max_attempts``; its offset is not committed."""


class AlertSettings(BaseSettings):
    """Environment ``RELOADTRACE_ALERTS_<FIELD>``; ``RELOADTRACE_ALERTS_WEBHOOK_URLS`` is comma-separated."""

    model_config = SettingsConfigDict(env_prefix="RELOADTRACE_ALERTS_", extra="ignore")

    webhook_urls: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Webhook URLs to POST to (secrets: they often hold tokens)"
    )
    group_id: str = Field(default=_DEFAULT_GROUP_ID, min_length=1, description="Consumer group of the alert hooks")
    min_severity: str = Field(default=_DEFAULT_MIN_SEVERITY, description="Lowest severity that is posted")
    timeout_ms: int = Field(default=_DEFAULT_TIMEOUT_MS, ge=1, description="Timeout of one POST")
    initial_backoff_ms: int = Field(default=_DEFAULT_INITIAL_BACKOFF_MS, ge=1, description="First retry delay")
    max_backoff_ms: int = Field(default=_DEFAULT_MAX_BACKOFF_MS, ge=1, description="Longest retry delay (doubling)")
    max_attempts: int = Field(default=_DEFAULT_MAX_ATTEMPTS, ge=0, description="Attempts per webhook; 0 = until delivered")
    rollback_command: str | None = Field(default=None, description="Command run on regressions (off when unset)")
    rollback_min_severity: str = Field(
        default=_DEFAULT_ROLLBACK_MIN_SEVERITY, description="Lowest severity of a latency/error regression that rolls back"
    )
    rollback_timeout_ms: int = Field(default=_DEFAULT_ROLLBACK_TIMEOUT_MS, ge=1, description="Time limit of the command")
    batch_size: int = Field(default=_DEFAULT_BATCH_SIZE, ge=1, description="Anomalies consumed per batch")
    poll_timeout_ms: int = Field(default=_DEFAULT_POLL_TIMEOUT_MS, ge=1, description="Longest wait for a batch")
    format: str = Field(default="json", description="Body of each POST: json (the anomaly), alertmanager, or template")
    template_file: Path | None = Field(default=None, description="The JSON body template of the template format")
    report_url: str | None = Field(
        default=None, description="Alert link (generatorURL): a URL with {reload_id}, {service}, {component}, {new_version}"
    )
    external_url: str = Field(default="", description="externalURL of the Alertmanager payloads")
    resolve_replay_ms: int = Field(
        default=_DEFAULT_RESOLVE_REPLAY_MS, ge=0, description="At start, re-post resolutions decided this recently"
    )

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value.lower() not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        return value.lower()

    @model_validator(mode="after")
    def _template_given(self) -> AlertSettings:
        if (self.format == "template") != (self.template_file is not None):
            raise ValueError("the template format needs a template file, and only it takes one")
        return self

    def body_template(self) -> BodyTemplate | None:
        """The template of the template format (None for the others).

        Raises:
            TemplateError: the file cannot be read, is not JSON, or names an unknown field.
        """
        if self.template_file is None:
            return None
        try:
            return BodyTemplate(self.template_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise TemplateError(f"template file cannot be read: {type(error).__name__}") from None

    @field_validator("webhook_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _http_urls(cls, value: list[SecretStr]) -> list[SecretStr]:
        for number, url in enumerate(value, start=1):
            if not url.get_secret_value().startswith(("http://", "https://")) or url_origin(url.get_secret_value()) == UNPARSEABLE:
                raise ValueError(f"webhook URL #{number} must be an http:// or https:// URL with a host")
        return value

    @field_validator("min_severity", "rollback_min_severity")
    @classmethod
    def _severity(cls, value: str) -> str:
        if value.upper() not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {value!r}")
        return value.upper()


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """How a POST of one anomaly to one URL ended."""

    url: str
    delivered: bool
    attempts: int
    status_code: int | None
    error: str | None = None


class _HttpxUrlFilter(logging.Filter):
    """Makes httpx's own request log show ``scheme://host`` instead of the URL (webhook URLs hold tokens)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                url_origin(str(arg)) if isinstance(arg, httpx.URL) or "://" in str(arg) else arg for arg in record.args
            )
        return True


def _mask_httpx_log() -> None:
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(existing, _HttpxUrlFilter) for existing in httpx_logger.filters):
        httpx_logger.addFilter(_HttpxUrlFilter())


class WebhookSender:
    """POSTs anomalies as JSON to each URL, retrying 5xx, 408/425/429 and connection errors with backoff.

    URLs are secrets (tokens in their path or query): logs and errors name them by origin only
    (``scheme://host[:port]``), httpx's own request log included.

    Args:
        urls: the webhooks (plain strings or ``SecretStr``).
        client: the HTTP client (its timeout applies to each attempt).
        sleep: waits between attempts; returns early (True) when the caller should stop.
    """

    def __init__(
        self,
        urls: Sequence[str | SecretStr],
        settings: AlertSettings,
        *,
        client: httpx.Client | None = None,
        sleep: Callable[[float], bool] | None = None,
    ) -> None:
        self._urls = [url.get_secret_value() if isinstance(url, SecretStr) else str(url) for url in urls]
        self._settings = settings
        self._client = client or httpx.Client(timeout=settings.timeout_ms / 1000)
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        _mask_httpx_log()

    def close(self) -> None:
        self._client.close()

    def stop(self) -> None:
        """Make a retry loop in progress give up at its next wait (the anomaly stays uncommitted)."""
        self._stop.set()

    def deliver(self, anomaly: Anomaly) -> list[DeliveryOutcome] | None:
        """Post the anomaly as JSON to every URL; None when stopped before all were answered."""
        return self.post(orjson.dumps(anomaly.to_dict()), idempotency_key(anomaly))

    def post(self, body: bytes, key: str) -> list[DeliveryOutcome] | None:
        """Post a JSON body with ``Idempotency-Key: key`` to every URL; None when stopped before all were answered."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        outcomes = []
        for url in self._urls:
            outcome = self._post(url, body, headers)
            if outcome is None:
                return None
            outcomes.append(outcome)
        return outcomes

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> DeliveryOutcome | None:
        backoff_s = self._settings.initial_backoff_ms / 1000
        attempt = 0
        shown = url_origin(url)
        while True:
            attempt += 1
            status, error = None, None
            try:
                response = self._client.post(url, content=body, headers=headers)
                status = response.status_code
                if 200 <= status < 300:
                    return DeliveryOutcome(shown, True, attempt, status)
                if 400 <= status < 500 and status not in _RETRYABLE_CLIENT_STATUSES:
                    logger.error(
                        "webhook %s refused an anomaly for good: HTTP %d %s", shown, status, safe_text(response.text, 200)
                    )
                    return DeliveryOutcome(shown, False, attempt, status, f"HTTP {status}")
                error = f"HTTP {status}"
            except httpx.HTTPError as failure:
                error = type(failure).__name__  # its text may quote the URL
            if self._settings.max_attempts and attempt >= self._settings.max_attempts:
                raise AlertError(f"webhook {shown} failed {attempt} times, last: {error}")
            logger.warning("webhook %s attempt %d failed (%s); retrying in %.2fs", shown, attempt, error, backoff_s)
            if self._sleep(backoff_s):
                return None
            backoff_s = min(backoff_s * 2, self._settings.max_backoff_ms / 1000)


def idempotency_key(anomaly: Anomaly) -> str:
    """``<anomaly_id>:<severity>``, percent-encoded to printable ASCII (a header value cannot hold more)."""
    return quote(f"{anomaly.anomaly_id}:{anomaly.severity}", safe=":-._~")


@dataclass(frozen=True, slots=True)
class RollbackOutcome:
    argv: tuple[str, ...]
    returncode: int | None
    output: str


class RollbackHook:
    """Runs ``command -- service component old_version`` for regressions of a high enough severity.

    The three values come from Kafka, so they are checked first: one holding a control character
    (NUL included) or starting with ``-`` is refused (logged with the value made visible, counted in
    ``refused``) and the command is not run. Whatever happens — refused, failed to start, timed
    out, non-zero exit — :meth:`run` returns an outcome and never raises.
    """

    def __init__(
        self, command: str, *, min_severity: str = _DEFAULT_ROLLBACK_MIN_SEVERITY, timeout_ms: int = _DEFAULT_ROLLBACK_TIMEOUT_MS
    ) -> None:
        self._argv = tuple(shlex.split(command))
        if not self._argv:
            raise ValueError("rollback command is empty")
        self._min_rank = _RANK[min_severity]
        self._timeout_s = timeout_ms / 1000
        self._done: set[str] = set()
        self.refused = 0
        self.failed = 0

    def wants(self, anomaly: Anomaly) -> bool:
        return (
            anomaly.metric in _ROLLBACK_METRICS
            and _RANK.get(anomaly.severity, -1) >= self._min_rank
            and anomaly.old_version is not None
            and anomaly.reload_id not in self._done
        )

    def run(self, anomaly: Anomaly) -> RollbackOutcome | None:
        """Roll back if wanted (once per reload); the outcome is logged, failures never raise."""
        try:
            if not self.wants(anomaly):
                return None
            self._done.add(anomaly.reload_id)
            return self._run(anomaly)
        except Exception as error:  # noqa: BLE001 - one anomaly's hook must never stop the consumer
            self.failed += 1
            shown = bounded_repr(getattr(anomaly, "anomaly_id", None))
            logger.error("rollback for anomaly %s failed: %s", shown, bounded_repr(error))
            return RollbackOutcome(self._argv, None, bounded_text(str(error), 2_000))

    def _run(self, anomaly: Anomaly) -> RollbackOutcome:
        values = (anomaly.service_name, anomaly.component, anomaly.old_version)
        problem = next((why for value in values if (why := _argument_problem(value)) is not None), None)
        reload_id = bounded_repr(anomaly.reload_id)
        if problem is not None:
            self.refused += 1
            logger.error(
                "rollback for reload %s refused: %s (service %s, component %s, old version %s); not run",
                reload_id, problem, *(bounded_repr(value) for value in values),
            )
            return RollbackOutcome(self._argv, None, f"refused: {problem}")
        argv = (*self._argv, "--", *values)
        shown = " ".join(bounded_repr(part) for part in argv)
        try:
            completed = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=self._timeout_s, check=False)
        except (OSError, ValueError, subprocess.SubprocessError) as error:
            self.failed += 1
            logger.error("rollback %s for reload %s failed to run: %s", shown, reload_id, bounded_repr(error))
            return RollbackOutcome(argv, None, str(error))
        output = (completed.stdout + completed.stderr)[-2_000:]
        log = logger.info if completed.returncode == 0 else logger.error
        log("rollback %s for reload %s exited %d: %s", shown, reload_id, completed.returncode, visible(output.strip()))
        return RollbackOutcome(argv, completed.returncode, output)


def _argument_problem(value: Any) -> str | None:
    """Why ``value`` may not be a rollback argument, or None when it may."""
    if not isinstance(value, str) or not value:
        return "an empty or non-text value"
    if value.startswith("-"):
        return "a value starting with '-' (an option, not an argument)"
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        return "a value holding a control character"
    return None


@dataclass
class AlertStats:
    consumed: int = 0
    posted: int = 0
    duplicates: int = 0
    below_severity: int = 0
    rejected: int = 0
    dead_letters: int = 0
    rollbacks: int = 0
    resolved: int = 0


class AlertConsumer(Stage):
    """Hands each anomaly of ``reload.anomalies`` to the webhooks and the rollback hook (a stage on the runtime)."""

    name = "alerts"

    def __init__(self, kafka: KafkaSettings, settings: AlertSettings, *, sender: WebhookSender | None = None) -> None:
        self._kafka = kafka
        self._settings = settings
        self._codec = kafka.codec("Anomaly")
        self._sender = sender or WebhookSender(settings.webhook_urls, settings)
        self._rollback = (
            RollbackHook(settings.rollback_command, min_severity=settings.rollback_min_severity, timeout_ms=settings.rollback_timeout_ms)
            if settings.rollback_command
            else None
        )
        self._posted_rank: OrderedDict[str, int] = OrderedDict()
        self._min_rank = _RANK[settings.min_severity]
        self._positions: dict[tuple[str, int], int] = {}
        self._template = settings.body_template()
        self._alerting = settings.format != "json"
        self._verdict_codec = kafka.codec("ReloadVerdict") if self._alerting else None
        self._supersessions = Supersessions(settings.min_severity)
        self._fired: OrderedDict[str, AlertFacts] = OrderedDict()
        self._due: list[Resolution] = []
        self._started = False
        self._wall_clock_ns = time.time_ns
        self.stats = AlertStats()

    def topics(self) -> Sequence[str]:
        return (self._kafka.topics.reload_anomalies,)

    def table_topics(self) -> Sequence[str]:
        return (self._kafka.topics.reload_verdicts,) if self._alerting else ()

    def start(self, runtime: StageRuntime) -> None:
        # A retry loop in progress gives up at its next wait once the runtime stops.
        threading.Thread(target=lambda: (runtime.stopping.wait(), self._sender.stop()), daemon=True).start()
        self._started = True
        if self._alerting and self._settings.resolve_replay_ms:
            since = self._wall_clock_ns() - self._settings.resolve_replay_ms * _NANOS_PER_MS
            self._due += self._supersessions.decided_since(since)

    def ingest_table(self, messages: Sequence[Message], arrivals: Sequence[int] | None, outbox: Outbox) -> None:
        assert self._verdict_codec is not None
        for index, message in enumerate(messages):
            value = message.value()
            if value is None:
                continue
            try:
                verdict = self._verdict_codec.decode(value)
            except DecodeError as error:
                logger.warning("unreadable verdict at %s[%d]@%d skipped: %s",
                               message.topic(), message.partition(), message.offset(), safe_text(error, 300))
                continue
            published_ms = arrivals[index] if arrivals is not None else message.timestamp()[1]
            decided = self._supersessions.add_look(verdict, published_ms * _NANOS_PER_MS)
            if self._started:
                self._due += decided

    def advance(self, outbox: Outbox) -> None:
        while self._due:
            resolution = self._due[0]
            if not self._post_resolution(resolution):
                return  # stopped mid-delivery: nothing of it is committed, and nothing needs to be
            self._due.pop(0)

    def ingest(self, messages: Sequence[Message], arrivals: Sequence[int] | None, outbox: Outbox) -> None:
        for message in messages:
            if not self._handle(message, outbox):
                raise StageInterrupted("stopped mid-delivery: this anomaly and the rest stay uncommitted")
            self._positions[(message.topic(), message.partition())] = message.offset() + 1

    def _handle(self, message: Message, outbox: Outbox) -> bool:
        self.stats.consumed += 1
        value = message.value()
        try:
            if value is None:
                raise DecodeError(DecodeErrorKind.TRUNCATED, "empty message (tombstone)", "Anomaly")
            anomaly = Anomaly.from_dict(self._codec.decode(value))
        except (DecodeError, InvalidRecordError) as error:
            logger.error(
                "undecodable anomaly at %s[%d]@%d: %s", message.topic(), message.partition(), message.offset(), safe_text(error, 300)
            )
            outbox.reject(message, error, stage="alerts")
            self.stats.dead_letters += 1
            return True
        identity, rank = anomaly.anomaly_id, _RANK[anomaly.severity]
        if rank <= self._posted_rank.get(identity, -1):
            self.stats.duplicates += 1  # the same or a lower severity of an anomaly already handled
            return True
        if rank < self._min_rank:
            self.stats.below_severity += 1
            self._remember(identity, rank)
            return True
        outcomes = self._sender.deliver(anomaly) if not self._alerting else self._post_alerts(anomaly, rank)
        if outcomes is None:
            return False
        self.stats.posted += sum(outcome.delivered for outcome in outcomes)
        self.stats.rejected += sum(not outcome.delivered for outcome in outcomes)
        if self._rollback is not None and self._rollback.run(anomaly) is not None:
            self.stats.rollbacks += 1
        self._remember(identity, rank)
        return True

    # --- Alertmanager and template formats -----------------------------------------------------

    def _post_alerts(self, anomaly: Anomaly, rank: int) -> list[DeliveryOutcome] | None:
        """The anomaly's alert (resolved at once when already superseded) and the lower severities' resolutions."""
        facts = AlertFacts.from_anomaly(anomaly)
        superseded = self._supersessions.superseded(facts.reload_id)
        ends = superseded.ends_at_unix_nano if superseded is not None else facts.detected_time_unix_nano
        alerts = [
            alert(facts.at_severity(SEVERITIES[lower]), status=RESOLVED, ends_at_unix_nano=ends, report_url=self._settings.report_url)
            for lower in range(self._min_rank, rank)
        ]
        status = RESOLVED if superseded is not None else FIRING
        alerts.append(alert(facts, status=status, ends_at_unix_nano=ends, report_url=self._settings.report_url))
        self._fired[f"{facts.reload_id}\x00{facts.metric}"] = facts
        if len(self._fired) > _DEDUPE_CAPACITY:
            self._fired.popitem(last=False)
        return self._post_payload(alerts, idempotency_key(anomaly) + (":resolved" if superseded is not None else ""))

    def _post_resolution(self, resolution: Resolution) -> bool:
        alerts = []
        for facts in resolution.alerts:
            seen = self._fired.get(f"{facts.reload_id}\x00{facts.metric}")
            shown = seen.at_severity(facts.severity) if seen is not None else facts
            alerts.append(alert(shown, status=RESOLVED, ends_at_unix_nano=resolution.ends_at_unix_nano, report_url=self._settings.report_url))
        if not alerts:
            return True
        key = quote(f"{resolution.reload_id}:resolved-by:{resolution.by_reload_id}", safe=":-._~")
        outcomes = self._post_payload(alerts, key)
        if outcomes is None:
            return False
        self.stats.resolved += 1
        self.stats.posted += sum(outcome.delivered for outcome in outcomes)
        self.stats.rejected += sum(not outcome.delivered for outcome in outcomes)
        return True

    def _post_payload(self, alerts: list[dict[str, Any]], key: str) -> list[DeliveryOutcome] | None:
        if self._template is None:
            return self._sender.post(orjson.dumps(webhook_payload(alerts, external_url=self._settings.external_url)), key)
        outcomes: list[DeliveryOutcome] = []
        for number, payload_alert in enumerate(alerts):
            posted = self._sender.post(self._template.render(payload_alert), f"{key}:{number}")
            if posted is None:
                return None
            outcomes += posted
        return outcomes

    def _remember(self, identity: str, rank: int) -> None:
        self._posted_rank[identity] = rank
        self._posted_rank.move_to_end(identity)
        if len(self._posted_rank) > _DEDUPE_CAPACITY:
            self._posted_rank.popitem(last=False)

    def snapshot(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Position]:
        return {key: Position(self._positions[key]) for key in partitions if key in self._positions}

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        for key in partitions:
            self._positions.pop(key, None)

    def close(self) -> None:
        self._sender.close()


def alerts_runtime(kafka: KafkaSettings, settings: AlertSettings, *, sender: WebhookSender | None = None) -> StageRuntime:
    """The alerting hooks on their runtime (one anomaly at a time: a POST may be retried for long)."""
    stage = AlertConsumer(kafka, settings, sender=sender)
    return StageRuntime(
        kafka,
        stage,
        RuntimeSettings(
            group_id=settings.group_id,
            batch_size=settings.batch_size,
            poll_timeout_ms=settings.poll_timeout_ms,
            commit_interval_ms=_COMMIT_INTERVAL_MS,
            max_poll_interval_ms=3_600_000,
        ),
    )
