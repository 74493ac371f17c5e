"""Alertmanager-shaped alerts of anomalies (pure): labels, annotations, fingerprints, webhook payloads, templates.

An alert's labels are ``alertname``, ``service``, ``component``, ``old_version``, ``new_version``,
``metric``, ``severity`` (lower case, as Prometheus rules spell it) and ``reload_id``; its
fingerprint is Alertmanager's (FNV-1a 64 over the sorted labels), so a receiver matches the
resolved notification to the firing one. The webhook payload is Alertmanager's ``version: "4"``
message (``receiver``, ``status``, ``alerts``, ``groupLabels``, ``commonLabels``,
``commonAnnotations``, ``externalURL``, ``groupKey``, ``truncatedAlerts``). A generic template is a
JSON document whose strings may hold ``${field}`` placeholders, filled per alert and re-encoded, so
the body stays valid JSON whatever the values hold.
"""

from __future__ import annotations

import datetime as dt
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import orjson

from schemas.records import Anomaly

FIRING = "firing"
RESOLVED = "resolved"
ZERO_TIME = "0001-01-01T00:00:00Z"
"""``endsAt`` of a firing alert in Alertmanager's webhook payloads."""
ALERT_NAMES = {"latency": "ReloadRegression", "error_rate": "ReloadRegression"}
_DEFAULT_ALERT_NAME = "ReloadHealth"
_RECEIVER = "reloadtrace"
_FNV_OFFSET = 14_695_981_039_346_656_037
_FNV_PRIME = 1_099_511_628_211
_SEPARATOR = 0xFF
_NANOS = 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
TEMPLATE_FIELDS = (
    "status",
    "alertname",
    "service",
    "component",
    "old_version",
    "new_version",
    "metric",
    "severity",
    "reload_id",
    "summary",
    "p_value",
    "baseline_value",
    "observed_value",
    "starts_at",
    "ends_at",
    "report_url",
    "report_query",
    "fingerprint",
)


class TemplateError(ValueError):
    """A template that is not a JSON document, or names a placeholder that is not an alert field."""


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set: FNV-1a 64 of ``name 0xff value 0xff`` over sorted names, hex."""
    digest = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                digest = ((digest ^ byte) * _FNV_PRIME) & 0xFFFF_FFFF_FFFF_FFFF
            digest = ((digest ^ _SEPARATOR) * _FNV_PRIME) & 0xFFFF_FFFF_FFFF_FFFF
    return f"{digest:016x}"


def rfc3339(unix_nano: int) -> str:
    seconds, nanos = divmod(unix_nano, _NANOS)
    return f"{_EPOCH + dt.timedelta(seconds=seconds):%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def report_query(reload_id: str) -> str:
    """The ClickHouse query of the reload's anomalies (``docs/queries.md``), the id as a quoted literal."""
    literal = reload_id.replace("\\", "\\\\").replace("'", "\\'")
    return f"SELECT * FROM anomalies FINAL WHERE reload_id = '{literal}' ORDER BY detected_time"


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What an alert says of one anomaly at one severity (from an Anomaly record or a reload's looks)."""

    reload_id: str
    service_name: str
    component: str
    old_version: str | None
    new_version: str
    metric: str
    severity: str
    baseline_value: float
    observed_value: float
    p_value: float
    detected_time_unix_nano: int

    @classmethod
    def from_anomaly(cls, anomaly: Anomaly) -> AlertFacts:
        return cls(
            anomaly.reload_id,
            anomaly.service_name,
            anomaly.component,
            anomaly.old_version,
            anomaly.new_version,
            anomaly.metric,
            anomaly.severity,
            anomaly.baseline_value,
            anomaly.observed_value,
            anomaly.p_value,
            anomaly.detected_time_unix_nano,
        )

    def at_severity(self, severity: str) -> AlertFacts:
        return replace(self, severity=severity)

    def labels(self) -> dict[str, str]:
        labels = {
            "alertname": ALERT_NAMES.get(self.metric, _DEFAULT_ALERT_NAME),
            "service": self.service_name,
            "component": self.component,
            "old_version": self.old_version or "",
            "new_version": self.new_version,
            "metric": self.metric,
            "severity": self.severity.lower(),
            "reload_id": self.reload_id,
        }
        return labels

    def summary(self) -> str:
        return (
            f"{self.metric} regression after {self.service_name} {self.component} "
            f"{self.old_version or '(none)'} -> {self.new_version}: "
            f"{self.baseline_value:.4g} -> {self.observed_value:.4g} (p = {self.p_value:.3g})"
        )


def report_link(template: str | None, facts: AlertFacts) -> str:
    """``template`` with ``{reload_id}``, ``{service}``, ``{component}``, ``{new_version}`` filled in, URL-encoded."""
    if not template:
        return ""
    values = {
        "reload_id": facts.reload_id,
        "service": facts.service_name,
        "component": facts.component,
        "new_version": facts.new_version,
    }
    for name, value in values.items():
        template = template.replace("{" + name + "}", quote(value, safe=""))
    return template


def alert(facts: AlertFacts, *, status: str, ends_at_unix_nano: int | None, report_url: str | None) -> dict[str, Any]:
    """One alert of the webhook payload (``endsAt`` is the zero time while firing)."""
    labels = facts.labels()
    return {
        "status": status,
        "labels": labels,
        "annotations": {
            "summary": facts.summary(),
            "p_value": f"{facts.p_value:.6g}",
            "baseline_value": f"{facts.baseline_value:.6g}",
            "observed_value": f"{facts.observed_value:.6g}",
            "report_query": report_query(facts.reload_id),
        },
        "startsAt": rfc3339(facts.detected_time_unix_nano),
        "endsAt": rfc3339(ends_at_unix_nano) if status == RESOLVED and ends_at_unix_nano is not None else ZERO_TIME,
        "generatorURL": report_link(report_url, facts),
        "fingerprint": fingerprint(labels),
    }


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {key: value for key, value in first.items() if all(other.get(key) == value for other in maps[1:])}


def webhook_payload(alerts: Sequence[Mapping[str, Any]], *, external_url: str = "") -> dict[str, Any]:
    """Alertmanager's webhook message (version 4) for alerts of one reload (grouped by reload_id)."""
    labels = [a["labels"] for a in alerts]
    group_labels = {"reload_id": labels[0]["reload_id"]} if labels else {}
    group_key = "{}:{" + ", ".join(f"{k}={orjson.dumps(v).decode()}" for k, v in sorted(group_labels.items())) + "}"
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": FIRING if any(a["status"] == FIRING for a in alerts) else RESOLVED,
        "receiver": _RECEIVER,
        "groupLabels": group_labels,
        "commonLabels": _common(labels),
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": external_url,
        "alerts": list(alerts),
    }


def template_fields(payload_alert: Mapping[str, Any]) -> dict[str, str]:
    """The ``${field}`` values of one alert (every value a string)."""
    labels, annotations = payload_alert["labels"], payload_alert["annotations"]
    return {
        "status": payload_alert["status"],
        "alertname": labels["alertname"],
        "service": labels["service"],
        "component": labels["component"],
        "old_version": labels["old_version"],
        "new_version": labels["new_version"],
        "metric": labels["metric"],
        "severity": labels["severity"],
        "reload_id": labels["reload_id"],
        "summary": annotations["summary"],
        "p_value": annotations["p_value"],
        "baseline_value": annotations["baseline_value"],
        "observed_value": annotations["observed_value"],
        "starts_at": payload_alert["startsAt"],
        "ends_at": payload_alert["endsAt"],
        "report_url": payload_alert["generatorURL"],
        "report_query": annotations["report_query"],
        "fingerprint": payload_alert["fingerprint"],
    }


class BodyTemplate:
    """A JSON document whose strings hold ``${field}`` placeholders (``$$`` is a literal ``$``).

    Raises:
        TemplateError: from the constructor, when the text is not JSON or names an unknown field.
    """

    def __init__(self, text: str) -> None:
        try:
            self._document = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            raise TemplateError(f"the template is not a JSON document: {error}") from None
        unknown = sorted(self._placeholders(self._document) - set(TEMPLATE_FIELDS))
        if unknown:
            raise TemplateError(f"unknown placeholders {unknown}; known: {', '.join(TEMPLATE_FIELDS)}")

    @classmethod
    def _placeholders(cls, node: Any) -> set[str]:
        if isinstance(node, str):
            names = set()
            for match in string.Template.pattern.finditer(node):
                if match.group("invalid") is not None:
                    raise TemplateError("a '$' in the template is neither '$$' nor a ${field} placeholder")
                name = match.group("named") or match.group("braced")
                if name:
                    names.add(name)
            return names
        if isinstance(node, dict):
            return set().union(*(cls._placeholders(k) | cls._placeholders(v) for k, v in node.items()))
        if isinstance(node, list):
            return set().union(*(cls._placeholders(item) for item in node))
        return set()

    def render(self, payload_alert: Mapping[str, Any]) -> bytes:
        fields = template_fields(payload_alert)

        def fill(node: Any) -> Any:
            if isinstance(node, str):
                return string.Template(node).substitute(fields)
            if isinstance(node, dict):
                return {fill(key): fill(value) for key, value in node.items()}
            if isinstance(node, list):
                return [fill(item) for item in node]
            return node

        return orjson.dumps(fill(self._document))
