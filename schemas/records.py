"""Typed views of the contract records and the rules a decodable record must also follow.

Spans travel as plain dicts (:class:`Span`, :class:`EnrichedSpan` TypedDicts): that is what
fastavro reads and writes, and the hot path stays free of conversions. Reload events and anomalies
are few, so they are frozen dataclasses (:class:`ReloadEvent`, :class:`Anomaly`) built with
``from_dict`` (which checks the contract's rules) where a record is read and turned back into the
Avro/JSON record with ``to_dict`` where one is written. The field names are exactly those of
``schemas/avro/*.avsc`` and DESIGN.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

from schemas.errors import InvalidRecordError
from schemas.text import bounded_repr

SPAN_KINDS = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_CODES = ("UNSET", "OK", "ERROR")
RELOAD_STATUSES = ("SUCCEEDED", "FAILED")
SEVERITIES = ("INFO", "WARNING", "CRITICAL")
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
UNKNOWN_SERVICE = "unknown_service"
"""``service_name`` of a span whose resource has no ``service.name`` (the OpenTelemetry SDK default)."""

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_INT64_MAX = 2**63 - 1

AttributeValue = str | bool | int | float


class SpanEvent(TypedDict):
    """A time-stamped annotation of a span (``Span.v2``: ``events``)."""

    time_unix_nano: int
    name: str
    attributes: dict[str, AttributeValue]
    dropped_attributes_count: int


class SpanLink(TypedDict):
    """A link from a span to another span (``Span.v2``: ``links``)."""

    trace_id: str
    span_id: str
    trace_state: str
    attributes: dict[str, AttributeValue]
    dropped_attributes_count: int


class Span(TypedDict):
    """A finished span (see ``schemas/avro/Span.v2.avsc``; the v2 fields may be absent: their defaults)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: Literal["INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]
    service_name: str
    service_instance_id: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: Literal["UNSET", "OK", "ERROR"]
    status_message: str | None
    attributes: dict[str, AttributeValue]
    resource_attributes: NotRequired[dict[str, AttributeValue] | None]
    trace_state: NotRequired[str]
    scope_name: NotRequired[str]
    scope_version: NotRequired[str]
    events: NotRequired[list[SpanEvent]]
    links: NotRequired[list[SpanLink]]
    dropped_attributes_count: NotRequired[int]
    dropped_events_count: NotRequired[int]
    dropped_links_count: NotRequired[int]


class EnrichedSpan(Span):
    """A span with the versions active when it ran (see ``EnrichedSpan.v2.avsc``)."""

    versions: dict[str, str]
    versions_at_end: dict[str, str]
    reload_ids: dict[str, str]
    mid_flight: bool
    mid_flight_reload_ids: list[str]
    enrichment_revision: int


ENRICHMENT_FIELDS = (
    "versions",
    "versions_at_end",
    "reload_ids",
    "mid_flight",
    "mid_flight_reload_ids",
    "enrichment_revision",
)


LOSSLESS_FIELDS = (
    "trace_state",
    "scope_name",
    "scope_version",
    "events",
    "links",
    "dropped_attributes_count",
    "dropped_events_count",
    "dropped_links_count",
)
"""The fields ``Span.v2`` added (all with defaults: see :func:`lossless_defaults`)."""
_LOSSLESS = frozenset(LOSSLESS_FIELDS)


def lossless_defaults() -> dict[str, Any]:
    """The ``Span.v2`` fields at their schema defaults (fresh lists each call)."""
    return {
        "trace_state": "",
        "scope_name": "",
        "scope_version": "",
        "events": [],
        "links": [],
        "dropped_attributes_count": 0,
        "dropped_events_count": 0,
        "dropped_links_count": 0,
    }


def is_trace_id(value: object) -> bool:
    return isinstance(value, str) and _TRACE_ID.fullmatch(value) is not None and value != "0" * 32


def is_span_id(value: object) -> bool:
    return isinstance(value, str) and _SPAN_ID.fullmatch(value) is not None and value != "0" * 16


def _require_int(record: Mapping[str, Any], name: str) -> int:
    value = record.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRecordError(f"{name} must be an integer of nanoseconds, got {bounded_repr(value)}", name)
    if not 0 <= value <= _INT64_MAX:
        raise InvalidRecordError(f"{name} out of range: {value}", name)
    return value


def _require_text(record: Mapping[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = record.get(name)
    if not isinstance(value, str) or (not allow_empty and not value):
        raise InvalidRecordError(f"{name} must be a non-empty string, got {bounded_repr(value)}", name)
    return value


def _check_attributes(record: Mapping[str, Any], name: str, *, optional: bool) -> None:
    value = record.get(name)
    if value is None and optional:
        return
    if not isinstance(value, Mapping):
        raise InvalidRecordError(f"{name} must be a map, got {type(value).__name__}", name)
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, (str, bool, int, float)):
            raise InvalidRecordError(f"{name}[{bounded_repr(key)}] must map a string to string/int/float/bool", name)


def _check_count(record: Mapping[str, Any], name: str, where: str = "", field: str = "") -> None:
    value = record.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _INT64_MAX:
        raise InvalidRecordError(f"{where}{name} must be a count (integer >= 0), got {value!r}", field or name)


def _check_text(record: Mapping[str, Any], name: str, where: str = "", field: str = "") -> None:
    value = record.get(name, "")
    if not isinstance(value, str):
        raise InvalidRecordError(f"{where}{name} must be a string, got {type(value).__name__}", field or name)


def _check_lossless(span: Mapping[str, Any], check_attributes: bool) -> None:
    """The ``Span.v2`` fields, when present: texts, counts, and well-formed events and links."""
    for name in ("trace_state", "scope_name", "scope_version"):
        _check_text(span, name)
    for name in ("dropped_attributes_count", "dropped_events_count", "dropped_links_count"):
        _check_count(span, name)
    for list_name in ("events", "links"):
        items = span.get(list_name, ())
        if not isinstance(items, (list, tuple)):
            raise InvalidRecordError(f"{list_name} must be a list, got {type(items).__name__}", list_name)
        for index, item in enumerate(items):
            where = f"{list_name}[{index}]."
            if not isinstance(item, Mapping):
                raise InvalidRecordError(f"{list_name}[{index}] must be a record, got {type(item).__name__}", list_name)
            if list_name == "events":
                try:
                    _require_int(item, "time_unix_nano")
                    _require_text(item, "name", allow_empty=True)
                except InvalidRecordError as error:
                    raise InvalidRecordError(f"{where}{error}", list_name) from None
            else:
                trace_id, span_id = item.get("trace_id"), item.get("span_id")
                if not is_trace_id(trace_id):
                    message = f"{where}trace_id must be 32 lowercase hex, not all zero: {trace_id!r}"
                    raise InvalidRecordError(message, list_name)
                if not is_span_id(span_id):
                    message = f"{where}span_id must be 16 lowercase hex, not all zero: {span_id!r}"
                    raise InvalidRecordError(message, list_name)
                _check_text(item, "trace_state", where, list_name)
            _check_count(item, "dropped_attributes_count", where, list_name)
            if check_attributes and "attributes" in item:
                try:
                    _check_attributes(item, "attributes", optional=False)
                except InvalidRecordError as error:
                    raise InvalidRecordError(f"{where}{error}", list_name) from None


def validate_span(span: Mapping[str, Any], *, check_attributes: bool = True) -> None:
    """Check the contract rules a span must follow beyond its Avro types.

    The ``Span.v2`` fields are checked when present (absent ones mean their defaults): link ids
    follow the span id rules, event times the timestamp rules, counts are >= 0.

    Args:
        check_attributes: False for a span whose attribute maps were parsed (and skipped) by an
            Avro decoder, which already guarantees their key and value types.

    Raises:
        InvalidRecordError: the first rule broken, naming the field.
    """
    if not is_trace_id(span.get("trace_id")):
        raise InvalidRecordError(f"trace_id must be 32 lowercase hex, not all zero: {bounded_repr(span.get('trace_id'))}", "trace_id")
    if not is_span_id(span.get("span_id")):
        raise InvalidRecordError(f"span_id must be 16 lowercase hex, not all zero: {bounded_repr(span.get('span_id'))}", "span_id")
    parent = span.get("parent_span_id")
    if parent is not None and not is_span_id(parent):
        raise InvalidRecordError(f"parent_span_id must be 16 lowercase hex or null: {bounded_repr(parent)}", "parent_span_id")
    _require_text(span, "name", allow_empty=True)
    if span.get("kind") not in SPAN_KINDS:
        raise InvalidRecordError(f"kind must be one of {SPAN_KINDS}: {bounded_repr(span.get('kind'))}", "kind")
    _require_text(span, "service_name")
    _require_text(span, "service_instance_id", allow_empty=True)
    start = _require_int(span, "start_time_unix_nano")
    end = _require_int(span, "end_time_unix_nano")
    if end < start:
        raise InvalidRecordError(f"end_time_unix_nano {end} is before start_time_unix_nano {start}", "end_time_unix_nano")
    if span.get("status_code") not in STATUS_CODES:
        raise InvalidRecordError(f"status_code must be one of {STATUS_CODES}: {bounded_repr(span.get('status_code'))}", "status_code")
    message = span.get("status_message")
    if message is not None and not isinstance(message, str):
        raise InvalidRecordError("status_message must be a string or null", "status_message")
    if check_attributes:
        _check_attributes(span, "attributes", optional=False)
        _check_attributes(span, "resource_attributes", optional=True)
    if not _LOSSLESS.isdisjoint(span.keys()):
        _check_lossless(span, check_attributes)


def check_time_plausible(
    time_unix_nano: int, *, now_unix_nano: int, max_past_nanos: int, max_future_nanos: int, field_name: str
) -> None:
    """Reject timestamps absurdly far from ``now`` (clock bugs, seconds sent as nanoseconds).

    Raises:
        InvalidRecordError: the timestamp is more than ``max_past_nanos`` before or
            ``max_future_nanos`` after ``now_unix_nano``.
    """
    if time_unix_nano < now_unix_nano - max_past_nanos or time_unix_nano > now_unix_nano + max_future_nanos:
        raise InvalidRecordError(
            f"{field_name} {time_unix_nano} is implausibly far from now ({now_unix_nano})", field_name
        )


@dataclass(frozen=True, slots=True)
class ReloadEvent:
    """One reload attempt (see ``schemas/avro/ReloadEvent.v1.avsc``).

    ``service_instance_id`` None means the reload applies to every instance of the service.
    A FAILED reload never changes a version; it is kept for display and reload-health checks.
    """

    reload_id: str
    service_name: str
    component: str
    new_version: str
    requested_time_unix_nano: int
    effective_time_unix_nano: int
    status: Literal["SUCCEEDED", "FAILED"]
    source: str
    service_instance_id: str | None = None
    old_version: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    model_context: Mapping[str, str] = field(default_factory=dict)
    changed_keys: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED

    @property
    def is_service_wide(self) -> bool:
        return self.service_instance_id is None

    def applies_to(self, service_name: str, service_instance_id: str) -> bool:
        """True when this reload governs the given instance of the given service."""
        return self.service_name == service_name and (
            self.service_instance_id is None or self.service_instance_id == service_instance_id
        )

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> ReloadEvent:
        """Build from a decoded Avro or JSON record, checking the contract rules.

        Raises:
            InvalidRecordError: a required field is missing or a rule is broken.
        """
        reload_id = _require_text(record, "reload_id")
        service_name = _require_text(record, "service_name")
        component = _require_text(record, "component")
        new_version = _require_text(record, "new_version")
        source = _require_text(record, "source", allow_empty=True)
        requested = _require_int(record, "requested_time_unix_nano")
        effective = _require_int(record, "effective_time_unix_nano")
        if effective < requested:
            raise InvalidRecordError(
                f"effective_time_unix_nano {effective} is before requested_time_unix_nano {requested}",
                "effective_time_unix_nano",
            )
        status = record.get("status")
        if status not in RELOAD_STATUSES:
            raise InvalidRecordError(f"status must be one of {RELOAD_STATUSES}: {bounded_repr(status)}", "status")
        instance = record.get("service_instance_id")
        if instance is not None and (not isinstance(instance, str) or not instance):
            raise InvalidRecordError(f"service_instance_id must be a non-empty string or null: {bounded_repr(instance)}", "service_instance_id")
        old_version = record.get("old_version")
        if old_version is not None and not isinstance(old_version, str):
            raise InvalidRecordError("old_version must be a string or null", "old_version")
        trace_id, span_id = record.get("trace_id"), record.get("span_id")
        if trace_id is not None and not is_trace_id(trace_id):
            raise InvalidRecordError(f"trace_id must be 32 lowercase hex or null: {bounded_repr(trace_id)}", "trace_id")
        if span_id is not None and not is_span_id(span_id):
            raise InvalidRecordError(f"span_id must be 16 lowercase hex or null: {bounded_repr(span_id)}", "span_id")
        model_context = record.get("model_context") or {}
        if not isinstance(model_context, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in model_context.items()
        ):
            raise InvalidRecordError("model_context must map strings to strings", "model_context")
        changed_keys = record.get("changed_keys")
        if changed_keys is None:
            changed_keys = ()
        if not isinstance(changed_keys, (list, tuple)) or not all(isinstance(k, str) for k in changed_keys):
            raise InvalidRecordError(f"changed_keys must be a list of strings: {bounded_repr(changed_keys)}", "changed_keys")
        return cls(
            reload_id=reload_id,
            service_name=service_name,
            component=component,
            new_version=new_version,
            requested_time_unix_nano=requested,
            effective_time_unix_nano=effective,
            status=status,
            source=source,
            service_instance_id=instance,
            old_version=old_version,
            trace_id=trace_id,
            span_id=span_id,
            model_context=dict(model_context),
            changed_keys=tuple(changed_keys),
        )

    def to_dict(self) -> dict[str, Any]:
        """The Avro/JSON record, field for field."""
        record = asdict(self)
        record["model_context"] = dict(self.model_context)
        record["changed_keys"] = list(self.changed_keys)
        return record



def _require_count(record: Mapping[str, Any], name: str) -> int:
    value = record.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _INT64_MAX:
        raise InvalidRecordError(f"{name} must be a count (integer >= 0), got {bounded_repr(value)}", name)
    return value


def _require_number(record: Mapping[str, Any], name: str) -> float:
    value = record.get(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InvalidRecordError(f"{name} must be a number, got {bounded_repr(value)}", name)
    return float(value)


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A regression judged after a reload, or an unhealthy reload (see ``schemas/avro/Anomaly.v1.avsc``).

    One ``anomaly_id`` per (reload, metric); a later, stronger verdict re-sends the same id with a
    higher ``severity``. Fields are in the schema's order, so :meth:`to_dict` writes them in it.
    """

    anomaly_id: str
    reload_id: str
    service_name: str
    component: str
    old_version: str | None
    new_version: str
    metric: str
    baseline_value: float
    observed_value: float
    p_value: float
    baseline_count: int
    observed_count: int
    detected_time_unix_nano: int
    severity: Literal["INFO", "WARNING", "CRITICAL"]

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Anomaly:
        """Build from a decoded Avro or JSON record, checking the contract rules.

        Raises:
            InvalidRecordError: a required field is missing or a rule is broken.
        """
        old_version = record.get("old_version")
        if old_version is not None and not isinstance(old_version, str):
            raise InvalidRecordError("old_version must be a string or null", "old_version")
        p_value = _require_number(record, "p_value")
        if not 0.0 <= p_value <= 1.0:
            raise InvalidRecordError(f"p_value must be in [0, 1], got {bounded_repr(p_value)}", "p_value")
        severity = record.get("severity")
        if severity not in SEVERITIES:
            raise InvalidRecordError(f"severity must be one of {SEVERITIES}: {bounded_repr(severity)}", "severity")
        return cls(
            anomaly_id=_require_text(record, "anomaly_id"),
            reload_id=_require_text(record, "reload_id"),
            service_name=_require_text(record, "service_name"),
            component=_require_text(record, "component"),
            old_version=old_version,
            new_version=_require_text(record, "new_version"),
            metric=_require_text(record, "metric"),
            baseline_value=_require_number(record, "baseline_value"),
            observed_value=_require_number(record, "observed_value"),
            p_value=p_value,
            baseline_count=_require_count(record, "baseline_count"),
            observed_count=_require_count(record, "observed_count"),
            detected_time_unix_nano=_require_int(record, "detected_time_unix_nano"),
            severity=severity,
        )

    def to_dict(self) -> dict[str, Any]:
        """The Avro/JSON record, field for field, in the schema's order."""
        return {
            "anomaly_id": self.anomaly_id,
            "reload_id": self.reload_id,
            "service_name": self.service_name,
            "component": self.component,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "metric": self.metric,
            "baseline_value": self.baseline_value,
            "observed_value": self.observed_value,
            "p_value": self.p_value,
            "baseline_count": self.baseline_count,
            "observed_count": self.observed_count,
            "detected_time_unix_nano": self.detected_time_unix_nano,
            "severity": self.severity,
        }
