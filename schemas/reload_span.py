"""The reload span convention: a span carrying ``reload.*`` attributes is a ReloadEvent, from any SDK.

A span is a reload span when it has the attribute ``reload.id``. Its other ``reload.*``
attributes, its own ids and times and its resource give every ReloadEvent field (README: "Reload
spans"); :func:`reload_span_attributes` writes them for an event and :func:`reload_event_from_span`
reads them back, so the gateway's reload spans and its published events cannot drift apart.

Guarantees: :func:`reload_event_from_span` returns a ReloadEvent that passes
``ReloadEvent.from_dict``, or raises :class:`~schemas.errors.InvalidRecordError` naming the
attribute at fault; it never guesses a status (``reload.status``, else the span's OK/ERROR status).
The service, and for ``reload.scope = instance`` the instance, are those of the span's resource.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from schemas.errors import InvalidRecordError
from schemas.records import FAILED, SUCCEEDED, ReloadEvent

RELOAD_ID = "reload.id"
RELOAD_COMPONENT = "reload.component"
RELOAD_OLD_VERSION = "reload.old_version"
RELOAD_NEW_VERSION = "reload.new_version"
RELOAD_STATUS = "reload.status"
RELOAD_SOURCE = "reload.source"
RELOAD_SCOPE = "reload.scope"
RELOAD_CHANGED_KEYS = "reload.changed_keys"
RELOAD_MODEL_CONTEXT_PREFIX = "reload.model_context."
RELOAD_REQUESTED_TIME = "reload.requested_time_unix_nano"
RELOAD_EFFECTIVE_TIME = "reload.effective_time_unix_nano"
SCOPE_SERVICE = "service"
SCOPE_INSTANCE = "instance"

_DECIMAL = re.compile(r"[0-9]{1,19}").fullmatch
_INT64_MAX = 2**63 - 1


def is_reload_span(span: Mapping[str, Any]) -> bool:
    """True when ``span`` (a contract Span) follows the convention, i.e. carries ``reload.id``."""
    attributes = span.get("attributes")
    return isinstance(attributes, Mapping) and RELOAD_ID in attributes


def reload_span_attributes(
    event: ReloadEvent, *, start_time_unix_nano: int | None = None, end_time_unix_nano: int | None = None
) -> dict[str, str | int | tuple[str, ...]]:
    """The span attributes that say ``event`` (an OTel SDK accepts them as they are).

    A time equal to the span's start (requested) or end (effective) is left to that default, so a
    span moved in time as a whole (a backfill) still says the right times.
    """
    attributes: dict[str, str | int | tuple[str, ...]] = {
        RELOAD_ID: event.reload_id,
        RELOAD_COMPONENT: event.component,
        RELOAD_NEW_VERSION: event.new_version,
        RELOAD_STATUS: event.status,
        RELOAD_SOURCE: event.source,
        RELOAD_SCOPE: SCOPE_SERVICE if event.service_instance_id is None else SCOPE_INSTANCE,
        RELOAD_CHANGED_KEYS: tuple(event.changed_keys),
    }
    if event.requested_time_unix_nano != start_time_unix_nano:
        attributes[RELOAD_REQUESTED_TIME] = event.requested_time_unix_nano
    if event.effective_time_unix_nano != end_time_unix_nano:
        attributes[RELOAD_EFFECTIVE_TIME] = event.effective_time_unix_nano
    if event.old_version is not None:
        attributes[RELOAD_OLD_VERSION] = event.old_version
    for key, value in event.model_context.items():
        attributes[RELOAD_MODEL_CONTEXT_PREFIX + key] = value
    return attributes


def _text(attributes: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = attributes.get(name)
    if value is None:
        if required:
            raise InvalidRecordError(f"a reload span needs the string attribute {name}", name)
        return None
    if not isinstance(value, str) or (required and not value):
        raise InvalidRecordError(f"{name} must be a non-empty string, got {value!r}", name)
    return value


def _time(attributes: Mapping[str, Any], name: str, default: Any) -> int:
    value = attributes.get(name, default)
    if isinstance(value, str) and _DECIMAL(value):
        value = int(value)  # SDKs without 64-bit integers (JavaScript) send decimal strings
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _INT64_MAX:
        raise InvalidRecordError(f"{name} must be nanoseconds as an integer or a decimal string, got {value!r}", name)
    return value


def _changed_keys(attributes: Mapping[str, Any]) -> tuple[str, ...]:
    value = attributes.get(RELOAD_CHANGED_KEYS)
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        keys = value
    else:
        # A contract span holds an OTLP string array as its JSON text (schemas.otlp, gateway.convert).
        try:
            keys = json.loads(value) if isinstance(value, str) else None
        except ValueError:
            keys = None
    if not isinstance(keys, (list, tuple)) or not all(isinstance(key, str) for key in keys):
        raise InvalidRecordError(f"{RELOAD_CHANGED_KEYS} must be a string array, got {value!r}", RELOAD_CHANGED_KEYS)
    return tuple(keys)


def _context_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def reload_event_from_span(span: Mapping[str, Any]) -> ReloadEvent:
    """The ReloadEvent a reload span (a contract Span with ``reload.id``) stands for.

    Raises:
        InvalidRecordError: a required attribute is missing or malformed, the status is unknown,
            or an instance-scoped reload's resource names no instance.
    """
    attributes = span.get("attributes")
    if not isinstance(attributes, Mapping):
        raise InvalidRecordError("a reload span needs attributes", "attributes")
    status = attributes.get(RELOAD_STATUS)
    if status is None:
        status = {"OK": SUCCEEDED, "ERROR": FAILED}.get(span.get("status_code"))
        if status is None:
            raise InvalidRecordError(
                f"a reload span needs {RELOAD_STATUS} (SUCCEEDED or FAILED) or an OK/ERROR span status", RELOAD_STATUS
            )
    elif status not in (SUCCEEDED, FAILED):
        raise InvalidRecordError(f"{RELOAD_STATUS} must be SUCCEEDED or FAILED, got {status!r}", RELOAD_STATUS)
    scope = attributes.get(RELOAD_SCOPE, SCOPE_SERVICE)
    if scope == SCOPE_SERVICE:
        instance = None
    elif scope == SCOPE_INSTANCE:
        instance = span.get("service_instance_id")
        if not isinstance(instance, str) or not instance:
            raise InvalidRecordError(
                f"{RELOAD_SCOPE}={SCOPE_INSTANCE} needs a service.instance.id on the span's resource", RELOAD_SCOPE
            )
    else:
        raise InvalidRecordError(
            f"{RELOAD_SCOPE} must be {SCOPE_SERVICE} or {SCOPE_INSTANCE}, got {scope!r}", RELOAD_SCOPE
        )
    model_context = {
        key[len(RELOAD_MODEL_CONTEXT_PREFIX) :]: _context_value(value)
        for key, value in attributes.items()
        if key.startswith(RELOAD_MODEL_CONTEXT_PREFIX) and len(key) > len(RELOAD_MODEL_CONTEXT_PREFIX)
    }
    return ReloadEvent.from_dict(
        {
            "reload_id": _text(attributes, RELOAD_ID, required=True),
            "service_name": span.get("service_name"),
            "service_instance_id": instance,
            "component": _text(attributes, RELOAD_COMPONENT, required=True),
            "old_version": _text(attributes, RELOAD_OLD_VERSION, required=False),
            "new_version": _text(attributes, RELOAD_NEW_VERSION, required=True),
            "requested_time_unix_nano": _time(attributes, RELOAD_REQUESTED_TIME, span.get("start_time_unix_nano")),
            "effective_time_unix_nano": _time(attributes, RELOAD_EFFECTIVE_TIME, span.get("end_time_unix_nano")),
            "status": status,
            "source": _text(attributes, RELOAD_SOURCE, required=False) or "",
            "trace_id": span.get("trace_id"),
            "span_id": span.get("span_id"),
            "model_context": model_context,
            "changed_keys": _changed_keys(attributes),
        }
    )
