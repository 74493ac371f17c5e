"""OTel SDK spans to contract ``Span`` records (``Span.v2``).

Mapping: ids as lowercase hex (32/16 digits), the parent's span id or null, ``SpanKind`` and
``StatusCode`` by name, ``service.name`` / ``service.instance.id`` from the resource (the other
resource attributes go to ``resource_attributes``, null when none). Attribute values keep
str/bool/int/float; integers outside the Avro long range become strings; **sequences become
compact JSON arrays as strings** (``["a","b"]``), so no element is lost and the value stays one
map entry — the same text ``schemas.otlp`` makes of an OTLP array, so a span reads the same
through the Collector. Events, links (ids as hex), ``trace_state`` (``k=v,k2=v2`` as OTLP writes
it), the instrumentation scope and the SDK's dropped counts are kept; an error status description
is ``status_message``. Redaction is applied to every attribute map (span, resource, events, links),
and by value to the span name and status message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from gateway.redaction import Redactor
from schemas.records import UNKNOWN_SERVICE, Span, SpanEvent, SpanLink

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_KINDS = {
    SpanKind.INTERNAL: "INTERNAL",
    SpanKind.SERVER: "SERVER",
    SpanKind.CLIENT: "CLIENT",
    SpanKind.PRODUCER: "PRODUCER",
    SpanKind.CONSUMER: "CONSUMER",
}
_STATUSES = {StatusCode.UNSET: "UNSET", StatusCode.OK: "OK", StatusCode.ERROR: "ERROR"}
_RESOURCE_IDENTITY = ("service.name", "service.instance.id")


def attribute_value(value: Any) -> str | bool | int | float | None:
    """One OTel attribute value as a contract value (None: nothing to keep)."""
    if isinstance(value, (bool, float, str)):
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _INT64_MAX else str(value)
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), separators=(",", ":"), default=str, ensure_ascii=False)
    if value is None:
        return None
    return str(value)


def attribute_map(
    attributes: Mapping[str, Any] | None, redactor: Redactor, *, skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    converted: dict[str, Any] = {}
    for key, value in redactor.apply(attributes).items():
        if key in skip:
            continue
        item = attribute_value(value)
        if item is not None:
            converted[str(key)] = item
    return converted


def trace_state_text(trace_state: Any) -> str:
    """A W3C ``TraceState`` as OTLP carries it (``k=v,k2=v2``; '' when none)."""
    if not trace_state:
        return ""
    return ",".join(f"{key}={value}" for key, value in trace_state.items())


def _events(span: ReadableSpan, redactor: Redactor) -> list[SpanEvent]:
    return [
        {
            "time_unix_nano": event.timestamp or 0,
            "name": event.name,
            "attributes": attribute_map(event.attributes, redactor),
            "dropped_attributes_count": event.dropped_attributes,
        }
        for event in span.events
    ]


def _links(span: ReadableSpan, redactor: Redactor) -> list[SpanLink]:
    return [
        {
            "trace_id": format(link.context.trace_id, "032x"),
            "span_id": format(link.context.span_id, "016x"),
            "trace_state": trace_state_text(link.context.trace_state),
            "attributes": attribute_map(link.attributes, redactor),
            "dropped_attributes_count": link.dropped_attributes,
        }
        for link in span.links
    ]


def span_record(span: ReadableSpan, redactor: Redactor) -> Span:
    """The contract record of an ended SDK span (not validated: see ``schemas.records.validate_span``)."""
    context = span.context
    resource = dict(span.resource.attributes) if span.resource is not None else {}
    resource_attributes = attribute_map(resource, redactor, skip=_RESOURCE_IDENTITY)
    start = span.start_time or 0
    scope = span.instrumentation_scope
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent is not None else None,
        "name": redactor.text(span.name),
        "kind": _KINDS.get(span.kind, "INTERNAL"),
        "service_name": str(resource.get("service.name") or UNKNOWN_SERVICE),
        "service_instance_id": str(resource.get("service.instance.id") or ""),
        "start_time_unix_nano": start,
        "end_time_unix_nano": span.end_time if span.end_time is not None else start,
        "status_code": _STATUSES.get(span.status.status_code, "UNSET"),
        "status_message": redactor.text(span.status.description) if span.status.description else None,
        "attributes": attribute_map(span.attributes, redactor),
        "resource_attributes": resource_attributes or None,
        "trace_state": trace_state_text(context.trace_state),
        "scope_name": scope.name if scope is not None else "",
        "scope_version": (scope.version or "") if scope is not None else "",
        "events": _events(span, redactor),
        "links": _links(span, redactor),
        "dropped_attributes_count": span.dropped_attributes,
        "dropped_events_count": span.dropped_events,
        "dropped_links_count": span.dropped_links,
    }
