"""OTLP traces in and out: ``ExportTraceServiceRequest`` messages <-> contract Span records (pure).

In: ``otlp_proto`` and ``otlp_json`` (hex ids, enums as numbers or names, 64-bit integers as strings
or numbers, unknown fields ignored) as the Collector's kafkaexporter writes them; one message, many
spans. Resource ``service.name`` (default ``unknown_service``) and ``service.instance.id`` (default
'') become the contract fields, the rest ``resource_attributes``; ids lowercase hex; kind and status
the contract enums (UNSPECIFIED kind is INTERNAL). Values: string, bool, int, double as they are;
bytes as base64; arrays and kvlists as compact JSON text; a value-less attribute is left out.
Events, links, trace_state, scope and dropped counts are kept (``Span.v2``); a reload span
(:mod:`schemas.reload_span`) also gives a ReloadEvent. Out: enriched spans as ``otlp_proto``, one
message per trace keyed by its hex id, the answer as ``reload.*`` attributes.

Guarantees: a message that does not parse (or exceeds ``max_message_bytes``) raises
:class:`~schemas.errors.DecodeError` and nothing else; otherwise each span is returned valid by
``validate_span`` or reported as an :class:`OtlpSpanError` with its index, the good spans kept.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage

from schemas.errors import DecodeError, DecodeErrorKind, InvalidRecordError
from schemas.records import UNKNOWN_SERVICE, EnrichedSpan, ReloadEvent, Span, validate_span
from schemas.reload_span import is_reload_span, reload_event_from_span

OTLP_PROTO = "otlp_proto"
OTLP_JSON = "otlp_json"
OtlpEncoding = Literal["otlp_proto", "otlp_json"]
ENCODINGS = (OTLP_PROTO, OTLP_JSON)
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
INVALID_SPAN = "invalid_record"
INVALID_RELOAD_SPAN = "invalid_reload_span"
_RECORD_NAME = "ExportTraceServiceRequest"
_JSON_MAX_DEPTH = 64  # protobuf messages deep; each kvlist level is three

# Enrichment attributes of OTLP out (the keys agreed with the store views).
VERSION_PREFIX = "reload.version."
VERSION_AT_END_PREFIX = "reload.version_at_end."
RELOAD_ID_PREFIX = "reload.reload_id."
MID_FLIGHT = "reload.mid_flight"
MID_FLIGHT_RELOAD_IDS = "reload.mid_flight.reload_ids"
ENRICHMENT_REVISION = "reload.enrichment_revision"

_KINDS = ("INTERNAL", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")  # by SpanKind number
_KIND_NUMBERS = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
_STATUSES = ("UNSET", "OK", "ERROR")  # by Status.StatusCode number
_STATUS_NUMBERS = {"UNSET": 0, "OK": 1, "ERROR": 2}
_KIND_NAMES = frozenset(SpanMessage.SpanKind.keys())
_STATUS_NAMES = frozenset(Status.StatusCode.keys())
_IDENTITY = ("service.name", "service.instance.id")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*").fullmatch
_NO_VALUE = object()


@dataclass(frozen=True, slots=True)
class OtlpSpanError:
    """A span of a message that is not a valid contract span (or not a valid reload span).

    ``index`` is the span's position in the message, 0-based, counting every span of every
    resource and scope in message order; ``error_kind`` is ``invalid_record`` or
    ``invalid_reload_span`` (the span itself is then kept; only its ReloadEvent is missing).
    """

    index: int
    error_kind: str
    error: str


@dataclass(slots=True)
class OtlpSpans:
    """What one message held: the valid spans in message order, their reload events, the errors."""

    spans: list[Span] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    """The index in the message of each of ``spans`` (counted as :attr:`OtlpSpanError.index` is)."""
    reloads: list[ReloadEvent] = field(default_factory=list)
    errors: list[OtlpSpanError] = field(default_factory=list)
    span_count: int = 0
    """Spans in the message, valid or not."""


@dataclass(frozen=True, slots=True)
class OtlpMessage:
    """One Kafka message of OTLP out: the hex trace id as key, an ``otlp_proto`` request as value."""

    key: bytes
    value: bytes


# --- values ------------------------------------------------------------------------------------


def _plain(value: AnyValue) -> Any:
    """An AnyValue as a JSON-ready Python value (inside arrays and kvlists)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        return value.double_value
    if which == "array_value":
        return [_plain(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {item.key: _plain(item.value) for item in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None


def _json_text(value: Any) -> str:
    # The same text gateway.convert makes of an SDK sequence, so both paths agree.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def attribute_value(value: AnyValue) -> Any:
    """One OTLP attribute value as a contract value (``_NO_VALUE`` for an empty AnyValue)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        return value.double_value
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if which == "array_value":
        return _json_text([_plain(item) for item in value.array_value.values])
    if which == "kvlist_value":
        return _json_text({item.key: _plain(item.value) for item in value.kvlist_value.values})
    return _NO_VALUE


def _attributes(key_values: Iterable[KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in key_values:
        value = attribute_value(item.value)
        if value is not _NO_VALUE:
            out[item.key] = value
    return out


# --- proto -> contract ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ResourceView:
    service_name: str
    service_instance_id: str
    resource_attributes: dict[str, Any] | None


def _resource_view(resource: Resource) -> _ResourceView:
    attributes = _attributes(resource.attributes)
    service = attributes.pop("service.name", None)
    instance = attributes.pop("service.instance.id", None)
    return _ResourceView(str(service or UNKNOWN_SERVICE), str(instance or ""), attributes or None)


def _span_record(resource: _ResourceView, scope: InstrumentationScope, span: SpanMessage) -> Span:
    """The contract record of one OTLP span (validated by the caller)."""
    kind = span.kind
    if not 0 <= kind < len(_KINDS):
        raise InvalidRecordError(f"kind {kind} is not an OTLP SpanKind", "kind")
    code = span.status.code
    if not 0 <= code < len(_STATUSES):
        raise InvalidRecordError(f"status code {code} is not an OTLP StatusCode", "status_code")
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex() if span.parent_span_id else None,
        "name": span.name,
        "kind": _KINDS[kind],  # type: ignore[typeddict-item]
        "service_name": resource.service_name,
        "service_instance_id": resource.service_instance_id,
        "start_time_unix_nano": span.start_time_unix_nano,
        "end_time_unix_nano": span.end_time_unix_nano,
        "status_code": _STATUSES[code],  # type: ignore[typeddict-item]
        "status_message": span.status.message or None,
        "attributes": _attributes(span.attributes),
        "resource_attributes": dict(resource.resource_attributes) if resource.resource_attributes else None,
        "trace_state": span.trace_state,
        "scope_name": scope.name,
        "scope_version": scope.version,
        "events": [
            {
                "time_unix_nano": event.time_unix_nano,
                "name": event.name,
                "attributes": _attributes(event.attributes),
                "dropped_attributes_count": event.dropped_attributes_count,
            }
            for event in span.events
        ],
        "links": [
            {
                "trace_id": link.trace_id.hex(),
                "span_id": link.span_id.hex(),
                "trace_state": link.trace_state,
                "attributes": _attributes(link.attributes),
                "dropped_attributes_count": link.dropped_attributes_count,
            }
            for link in span.links
        ],
        "dropped_attributes_count": span.dropped_attributes_count,
        "dropped_events_count": span.dropped_events_count,
        "dropped_links_count": span.dropped_links_count,
    }


def _add_span(result: OtlpSpans, index: int, resource: _ResourceView, scope: InstrumentationScope,
              span: SpanMessage) -> None:
    try:
        record = _span_record(resource, scope, span)
    except InvalidRecordError as error:
        result.errors.append(OtlpSpanError(index, INVALID_SPAN, f"span {index}: {error}"))
        return
    _keep(result, index, record)


def _keep(result: OtlpSpans, index: int, record: Span) -> None:
    """Validate a mapped span; keep it (and its reload event) or report it."""
    try:
        # Attribute maps are built from typed values (protobuf, or JSON checked value by value).
        validate_span(record, check_attributes=False)
    except InvalidRecordError as error:
        result.errors.append(OtlpSpanError(index, INVALID_SPAN, f"span {index}: {error}"))
        return
    result.spans.append(record)
    result.indices.append(index)
    if is_reload_span(record):
        try:
            result.reloads.append(reload_event_from_span(record))
        except InvalidRecordError as error:
            result.errors.append(OtlpSpanError(index, INVALID_RELOAD_SPAN, f"span {index}: reload span: {error}"))


def _check_size(data: Any, max_message_bytes: int) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(DecodeErrorKind.MALFORMED, f"expected bytes, got {type(data).__name__}", _RECORD_NAME)
    if len(data) > max_message_bytes:
        raise DecodeError(
            DecodeErrorKind.MALFORMED,
            f"{len(data)} bytes is more than the {max_message_bytes}-byte limit of an OTLP message",
            _RECORD_NAME,
        )
    return bytes(data)


def decode_otlp_proto(data: bytes, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> OtlpSpans:
    """The spans (and reload events) of one binary ``ExportTraceServiceRequest``.

    Raises:
        DecodeError: the bytes are not such a message (kind ``malformed``), or too many.
    """
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(_check_size(data, max_message_bytes))
    except ProtobufDecodeError as error:
        raise DecodeError(DecodeErrorKind.MALFORMED, f"not an OTLP {_RECORD_NAME}: {error}", _RECORD_NAME) from None
    except Exception as error:  # noqa: BLE001 - any parser failure on hostile bytes is malformed input
        raise DecodeError(DecodeErrorKind.MALFORMED, f"not an OTLP {_RECORD_NAME}: {error!r}", _RECORD_NAME) from None
    result = OtlpSpans()
    index = 0
    for resource_spans in request.resource_spans:
        resource = _resource_view(resource_spans.resource)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                _add_span(result, index, resource, scope, span)
                index += 1
    result.span_count = index
    return result


# --- OTLP/JSON ------------------------------------------------------------------------------------


def _field(obj: Mapping[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _json_id(value: Any, name: str, size: int) -> str:
    """An OTLP/JSON id (hex, any case) as the base64 protobuf's own JSON mapping expects."""
    if not isinstance(value, str) or not _HEX(value):
        hint = " (OTLP/JSON ids are hex, not base64)" if isinstance(value, str) and value.endswith("=") else ""
        raise InvalidRecordError(f"{name} must be hex, got {value!r:.80}{hint}", name)
    if value and len(value) != 2 * size:
        raise InvalidRecordError(f"{name} must be {2 * size} hex digits, got {len(value)}", name)
    return base64.b64encode(binascii.unhexlify(value)).decode("ascii")


_SPAN_IDS = (("traceId", "trace_id", 16), ("spanId", "span_id", 8), ("parentSpanId", "parent_span_id", 8))
_LINK_IDS = (("traceId", "trace_id", 16), ("spanId", "span_id", 8))


def _with_json_ids(obj: Mapping[str, Any], ids: Sequence[tuple[str, str, int]]) -> dict[str, Any]:
    copy = dict(obj)
    for camel, snake, size in ids:
        for name in (camel, snake):
            if name in copy and copy[name] is not None:
                copy[name] = _json_id(copy[name], camel, size)
    return copy


def _json_span(obj: Any) -> SpanMessage:
    """One OTLP/JSON span as a protobuf Span.

    Raises:
        InvalidRecordError: not a span object, a bad id, an unknown enum name, a field of a wrong type.
    """
    if not isinstance(obj, dict):
        raise InvalidRecordError(f"a span must be a JSON object, got {type(obj).__name__}")
    span = _with_json_ids(obj, _SPAN_IDS)
    kind = _field(span, "kind", "kind")
    if isinstance(kind, str) and kind not in _KIND_NAMES:
        raise InvalidRecordError(f"kind {kind!r:.40} is not an OTLP SpanKind", "kind")
    status = span.get("status")
    if isinstance(status, dict):
        code = status.get("code")
        if isinstance(code, str) and code not in _STATUS_NAMES:
            raise InvalidRecordError(f"status code {code!r:.40} is not an OTLP StatusCode", "status_code")
    links = span.get("links")
    if isinstance(links, list):
        span["links"] = [_with_json_ids(link, _LINK_IDS) if isinstance(link, dict) else link for link in links]
    return _parse_json(span, SpanMessage())


def _short(text: str, limit: int = 400) -> str:
    """``text`` cut in its middle: the mapper's messages name the path first and the cause last."""
    return text if len(text) <= limit else f"{text[: limit // 3]} ... {text[-(2 * limit) // 3 :]}"


def _parse_json(obj: Any, message: Any) -> Any:
    try:
        return json_format.ParseDict(obj, message, ignore_unknown_fields=True, max_recursion_depth=_JSON_MAX_DEPTH)
    except json_format.ParseError as error:
        raise InvalidRecordError(_short(str(error))) from None
    except Exception as error:  # noqa: BLE001 - the JSON mapper raises many types on hostile values
        raise InvalidRecordError(_short(f"{type(error).__name__}: {error}")) from None


# The fast path of OTLP/JSON: a whole message in the shape the Collector writes (camelCase keys, hex
# ids, integer enums, 64-bit integers as strings, canonical base64, no unknown field), decoded by
# msgspec into the typed structs below (C speed, no cyclic-GC load) and mapped straight to contract
# values. Any other shape raises _Unusual (or fails msgspec's typing) and the message is read span by
# span with the protobuf JSON mapper instead, which decides what is valid and says why; a test holds
# the two paths to the same answers.


class _Unusual(Exception):
    """A JSON shape the fast path leaves to the protobuf JSON mapper."""


class _JAnyValue(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    stringValue: str | None = None
    boolValue: bool | None = None
    intValue: int | str | None = None
    doubleValue: float | None = None
    bytesValue: str | None = None
    arrayValue: _JArrayValue | None = None
    kvlistValue: _JKeyValueList | None = None


class _JKeyValue(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    key: str = ""
    value: _JAnyValue | None = None


class _JArrayValue(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    values: list[_JAnyValue] = []


class _JKeyValueList(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    values: list[_JKeyValue] = []


class _JEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    timeUnixNano: int | str = 0
    name: str = ""
    attributes: list[_JKeyValue] = []
    droppedAttributesCount: int = 0


class _JLink(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    traceId: str = ""
    spanId: str = ""
    traceState: str = ""
    attributes: list[_JKeyValue] = []
    droppedAttributesCount: int = 0
    flags: int = 0


class _JStatus(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    code: int = 0
    message: str = ""


class _JSpan(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    traceId: str = ""
    spanId: str = ""
    traceState: str = ""
    parentSpanId: str = ""
    flags: int = 0
    name: str = ""
    kind: int = 0
    startTimeUnixNano: int | str = 0
    endTimeUnixNano: int | str = 0
    attributes: list[_JKeyValue] = []
    droppedAttributesCount: int = 0
    events: list[_JEvent] = []
    droppedEventsCount: int = 0
    links: list[_JLink] = []
    droppedLinksCount: int = 0
    status: _JStatus | None = None


class _JScope(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    name: str = ""
    version: str = ""
    attributes: list[_JKeyValue] = []
    droppedAttributesCount: int = 0


class _JResource(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    attributes: list[_JKeyValue] = []
    droppedAttributesCount: int = 0


class _JScopeSpans(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    scope: _JScope | None = None
    spans: list[_JSpan] = []
    schemaUrl: str = ""


class _JResourceSpans(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    resource: _JResource | None = None
    scopeSpans: list[_JScopeSpans] = []
    schemaUrl: str = ""


class _JRequest(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    resourceSpans: list[_JResourceSpans] = []


_JSON_DECODER = msgspec.json.Decoder(_JRequest)
_UINT64_TEXT = re.compile(r"[0-9]{1,20}").fullmatch
_INT64_TEXT = re.compile(r"-?[0-9]{1,19}").fullmatch
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?").fullmatch
_FAST_MAX_DEPTH = 16
_UINT32_MAX, _UINT64_MAX, _INT64_MIN, _INT64_MAX = 2**32 - 1, 2**64 - 1, -(2**63), 2**63 - 1


def _fast_uint(value: int | str, maximum: int) -> int:
    if type(value) is str and _UINT64_TEXT(value):
        value = int(value)
    if type(value) is not int or not 0 <= value <= maximum:
        raise _Unusual
    return value


def _fast_id(value: str, size: int) -> str:
    if (value and len(value) != 2 * size) or not _HEX(value):
        raise _Unusual
    return value.lower()


def _fast_plain(value: _JAnyValue | None, depth: int) -> Any:
    """A JSON AnyValue as a JSON-ready Python value (as ``_plain`` does for a protobuf one); _NO_VALUE if empty."""
    if value is None:
        return _NO_VALUE
    if depth > _FAST_MAX_DEPTH:
        raise _Unusual
    found = _NO_VALUE
    for kind, item in (("s", value.stringValue), ("b", value.boolValue), ("i", value.intValue),
                       ("d", value.doubleValue), ("y", value.bytesValue), ("a", value.arrayValue),
                       ("k", value.kvlistValue)):
        if item is None:
            continue
        if found is not _NO_VALUE:
            raise _Unusual  # two members of the oneof: the mapper says so
        if kind == "i":
            if type(item) is str:
                if not _INT64_TEXT(item):
                    raise _Unusual
                item = int(item)
            if not _INT64_MIN <= item <= _INT64_MAX:
                raise _Unusual
        elif kind == "d":
            item = float(item)
        elif kind == "y":
            if not _BASE64(item):
                raise _Unusual
            item = base64.b64encode(base64.b64decode(item)).decode("ascii")
        elif kind == "a":
            item = [_none_if_empty(_fast_plain(element, depth + 1)) for element in item.values]
        elif kind == "k":
            item = {pair.key: _none_if_empty(_fast_plain(pair.value, depth + 1)) for pair in item.values}
        found = item
    return found


def _none_if_empty(value: Any) -> Any:
    return None if value is _NO_VALUE else value


def _fast_attributes(pairs: list[_JKeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        value = pair.value
        if value is not None:
            text = value.stringValue  # the common case, in line
            if (text is not None and value.intValue is None and value.boolValue is None
                    and value.doubleValue is None and value.bytesValue is None and value.arrayValue is None
                    and value.kvlistValue is None):
                out[pair.key] = text
                continue
        plain = _fast_plain(value, 1)
        if plain is _NO_VALUE:
            continue
        out[pair.key] = _json_text(plain) if isinstance(plain, (list, dict)) else plain
    return out


def _fast_resource(resource: _JResource | None) -> _ResourceView:
    if resource is None:
        return _ResourceView(UNKNOWN_SERVICE, "", None)
    attributes = _fast_attributes(resource.attributes)
    _fast_uint(resource.droppedAttributesCount, _UINT32_MAX)
    service = attributes.pop("service.name", None)
    instance = attributes.pop("service.instance.id", None)
    return _ResourceView(str(service or UNKNOWN_SERVICE), str(instance or ""), attributes or None)


def _fast_scope(scope: _JScope | None) -> InstrumentationScope:
    if scope is None:
        return InstrumentationScope()
    _fast_attributes(scope.attributes)  # not kept, but checked as the mapper would
    _fast_uint(scope.droppedAttributesCount, _UINT32_MAX)
    return InstrumentationScope(name=scope.name, version=scope.version)


def _fast_span_record(resource: _ResourceView, scope: InstrumentationScope, span: _JSpan) -> Span:
    """The contract record of one span of the fast path (``_span_record``'s twin)."""
    status = span.status or _JStatus()
    kind, code = span.kind, status.code
    if not 0 <= kind < len(_KINDS):
        raise InvalidRecordError(f"kind {kind} is not an OTLP SpanKind", "kind")
    if not 0 <= code < len(_STATUSES):
        raise InvalidRecordError(f"status code {code} is not an OTLP StatusCode", "status_code")
    _fast_uint(span.flags, _UINT32_MAX)
    parent = _fast_id(span.parentSpanId, 8)
    links = []
    for link in span.links:
        _fast_uint(link.flags, _UINT32_MAX)
        links.append({
            "trace_id": _fast_id(link.traceId, 16),
            "span_id": _fast_id(link.spanId, 8),
            "trace_state": link.traceState,
            "attributes": _fast_attributes(link.attributes),
            "dropped_attributes_count": _fast_uint(link.droppedAttributesCount, _UINT32_MAX),
        })
    return {
        "trace_id": _fast_id(span.traceId, 16),
        "span_id": _fast_id(span.spanId, 8),
        "parent_span_id": parent or None,
        "name": span.name,
        "kind": _KINDS[kind],  # type: ignore[typeddict-item]
        "service_name": resource.service_name,
        "service_instance_id": resource.service_instance_id,
        "start_time_unix_nano": _fast_uint(span.startTimeUnixNano, _UINT64_MAX),
        "end_time_unix_nano": _fast_uint(span.endTimeUnixNano, _UINT64_MAX),
        "status_code": _STATUSES[code],  # type: ignore[typeddict-item]
        "status_message": status.message or None,
        "attributes": _fast_attributes(span.attributes),
        "resource_attributes": dict(resource.resource_attributes) if resource.resource_attributes else None,
        "trace_state": span.traceState,
        "scope_name": scope.name,
        "scope_version": scope.version,
        "events": [
            {
                "time_unix_nano": _fast_uint(event.timeUnixNano, _UINT64_MAX),
                "name": event.name,
                "attributes": _fast_attributes(event.attributes),
                "dropped_attributes_count": _fast_uint(event.droppedAttributesCount, _UINT32_MAX),
            }
            for event in span.events
        ],
        "links": links,
        "dropped_attributes_count": _fast_uint(span.droppedAttributesCount, _UINT32_MAX),
        "dropped_events_count": _fast_uint(span.droppedEventsCount, _UINT32_MAX),
        "dropped_links_count": _fast_uint(span.droppedLinksCount, _UINT32_MAX),
    }


def _fast_request(request: _JRequest) -> OtlpSpans:
    """A message of the fast path's shape, mapped (raises _Unusual at the first shape it leaves to the mapper)."""
    result = OtlpSpans()
    index = 0
    for resource_spans in request.resourceSpans:
        resource = _fast_resource(resource_spans.resource)
        for scope_spans in resource_spans.scopeSpans:
            scope = _fast_scope(scope_spans.scope)
            for span in scope_spans.spans:
                try:
                    record = _fast_span_record(resource, scope, span)
                except InvalidRecordError as error:
                    result.errors.append(OtlpSpanError(index, INVALID_SPAN, f"span {index}: {error}"))
                else:
                    _keep(result, index, record)
                index += 1
    result.span_count = index
    return result


def _json_list(obj: Mapping[str, Any], camel: str, snake: str, where: str) -> list[Any]:
    value = _field(obj, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DecodeError(DecodeErrorKind.MALFORMED, f"{where}{camel} must be a JSON array", _RECORD_NAME)
    return value


def decode_otlp_json(data: bytes | str, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> OtlpSpans:
    """The spans (and reload events) of one OTLP/JSON ``ExportTraceServiceRequest``.

    A bad resource or scope makes each of its spans an error; a bad span is its own error.

    Raises:
        DecodeError: not UTF-8 JSON, not an object, a structural array that is not an array, or too large.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    data = _check_size(data, max_message_bytes)
    try:
        return _fast_request(_JSON_DECODER.decode(data))
    except Exception:  # noqa: BLE001 - _Unusual, msgspec's typing, bad UTF-8: the per-span path says what is wrong
        pass
    return _mapped_json(data)


def _mapped_json(data: bytes) -> OtlpSpans:
    """The per-span path: orjson, then the protobuf JSON mapper on each resource, scope and span."""
    try:
        request = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise DecodeError(DecodeErrorKind.MALFORMED, f"not OTLP/JSON: {error}", _RECORD_NAME) from None
    if not isinstance(request, dict):
        raise DecodeError(
            DecodeErrorKind.MALFORMED, f"OTLP/JSON must be an object, got {type(request).__name__}", _RECORD_NAME
        )
    result = OtlpSpans()
    index = 0
    for position, resource_spans in enumerate(_json_list(request, "resourceSpans", "resource_spans", "")):
        where = f"resourceSpans[{position}]."
        if not isinstance(resource_spans, dict):
            raise DecodeError(DecodeErrorKind.MALFORMED, f"{where[:-1]} must be an object", _RECORD_NAME)
        resource_error: str | None = None
        try:
            resource = _resource_view(_parse_json(resource_spans.get("resource") or {}, Resource()))
        except InvalidRecordError as error:
            resource_error, resource = f"{where}resource: {error}", _ResourceView("", "", None)
        for scope_position, scope_spans in enumerate(_json_list(resource_spans, "scopeSpans", "scope_spans", where)):
            scope_where = f"{where}scopeSpans[{scope_position}]."
            if not isinstance(scope_spans, dict):
                raise DecodeError(DecodeErrorKind.MALFORMED, f"{scope_where[:-1]} must be an object", _RECORD_NAME)
            scope_error = resource_error
            scope = InstrumentationScope()
            if scope_error is None:
                try:
                    scope = _parse_json(scope_spans.get("scope") or {}, InstrumentationScope())
                except InvalidRecordError as error:
                    scope_error = f"{scope_where}scope: {error}"
            for span_object in _json_list(scope_spans, "spans", "spans", scope_where):
                if scope_error is not None:
                    result.errors.append(OtlpSpanError(index, INVALID_SPAN, f"span {index}: {scope_error}"))
                else:
                    try:
                        span = _json_span(span_object)
                    except InvalidRecordError as error:
                        result.errors.append(OtlpSpanError(index, INVALID_SPAN, f"span {index}: {error}"))
                    else:
                        _add_span(result, index, resource, scope, span)
                index += 1
    result.span_count = index
    return result


def decode_otlp(
    data: bytes, encoding: OtlpEncoding, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> OtlpSpans:
    """:func:`decode_otlp_proto` or :func:`decode_otlp_json`, by the kafkaexporter's encoding name.

    Raises:
        DecodeError: the message does not parse.
        ValueError: ``encoding`` is neither ``otlp_proto`` nor ``otlp_json``.
    """
    if encoding == OTLP_PROTO:
        return decode_otlp_proto(data, max_message_bytes=max_message_bytes)
    if encoding == OTLP_JSON:
        return decode_otlp_json(data, max_message_bytes=max_message_bytes)
    raise ValueError(f"unknown OTLP encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")


# --- contract -> proto (OTLP out) -------------------------------------------------------------------


def _any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value={"values": [_any_value(item) for item in value]})
    raise TypeError(f"cannot send {type(value).__name__} as an OTLP attribute value")


def _key_values(attributes: Mapping[str, Any] | None) -> list[KeyValue]:
    return [KeyValue(key=key, value=_any_value(value)) for key, value in (attributes or {}).items()]


def enrichment_attributes(span: Mapping[str, Any]) -> dict[str, Any]:
    """The ``reload.*`` attributes that say an EnrichedSpan's answer (keys agreed with the store views)."""
    attributes: dict[str, Any] = {}
    for prefix, name in ((VERSION_PREFIX, "versions"), (VERSION_AT_END_PREFIX, "versions_at_end"),
                         (RELOAD_ID_PREFIX, "reload_ids")):
        for component, value in (span.get(name) or {}).items():
            attributes[prefix + component] = value
    attributes[MID_FLIGHT] = bool(span.get("mid_flight"))
    attributes[MID_FLIGHT_RELOAD_IDS] = sorted(span.get("mid_flight_reload_ids") or ())
    attributes[ENRICHMENT_REVISION] = int(span.get("enrichment_revision") or 0)
    return attributes


def _span_message(span: Mapping[str, Any], enriched: bool) -> SpanMessage:
    parent = span.get("parent_span_id")
    attributes = span.get("attributes") or {}
    message = SpanMessage(
        trace_id=bytes.fromhex(span["trace_id"]),
        span_id=bytes.fromhex(span["span_id"]),
        trace_state=span.get("trace_state") or "",
        parent_span_id=bytes.fromhex(parent) if parent else b"",
        name=span["name"],
        kind=_KIND_NUMBERS[span["kind"]],
        start_time_unix_nano=span["start_time_unix_nano"],
        end_time_unix_nano=span["end_time_unix_nano"],
        attributes=_key_values({**attributes, **enrichment_attributes(span)} if enriched else attributes),
        dropped_attributes_count=span.get("dropped_attributes_count") or 0,
        dropped_events_count=span.get("dropped_events_count") or 0,
        dropped_links_count=span.get("dropped_links_count") or 0,
        status=Status(code=_STATUS_NUMBERS[span["status_code"]], message=span.get("status_message") or ""),
    )
    for event in span.get("events") or ():
        message.events.add(
            time_unix_nano=event["time_unix_nano"],
            name=event["name"],
            attributes=_key_values(event.get("attributes")),
            dropped_attributes_count=event.get("dropped_attributes_count") or 0,
        )
    for link in span.get("links") or ():
        message.links.add(
            trace_id=bytes.fromhex(link["trace_id"]),
            span_id=bytes.fromhex(link["span_id"]),
            trace_state=link.get("trace_state") or "",
            attributes=_key_values(link.get("attributes")),
            dropped_attributes_count=link.get("dropped_attributes_count") or 0,
        )
    return message


def _resource_key(span: Mapping[str, Any]) -> tuple[Any, ...]:
    resource = span.get("resource_attributes") or {}
    return (span["service_name"], span["service_instance_id"], tuple(sorted(resource.items(), key=lambda kv: kv[0])))


def enriched_otlp_request(spans: Iterable[EnrichedSpan | Mapping[str, Any]]) -> ExportTraceServiceRequest:
    """One request holding enriched ``spans`` (the answer as ``reload.*`` attributes), by resource and scope.

    Raises:
        KeyError, ValueError, TypeError: a span is not a valid EnrichedSpan record.
    """
    return _request(spans, enriched=True)


def span_otlp_request(spans: Iterable[Span | Mapping[str, Any]]) -> ExportTraceServiceRequest:
    """One request holding contract ``spans`` as they are (to write OTLP files, or as a test's producer).

    Raises:
        KeyError, ValueError, TypeError: a span is not a valid Span record.
    """
    return _request(spans, enriched=False)


def _request(spans: Iterable[Mapping[str, Any]], *, enriched: bool) -> ExportTraceServiceRequest:
    """``spans`` grouped by resource and then scope, each group in first-seen order."""
    request = ExportTraceServiceRequest()
    resources: dict[tuple[Any, ...], tuple[ResourceSpans, dict[tuple[str, str], ScopeSpans]]] = {}
    for span in spans:
        key = _resource_key(span)
        entry = resources.get(key)
        if entry is None:
            resource_spans = request.resource_spans.add()
            identity = {"service.name": span["service_name"]}
            if span["service_instance_id"]:
                identity["service.instance.id"] = span["service_instance_id"]
            resource_attributes = {**dict(key[2]), **identity}
            resource_spans.resource.attributes.extend(_key_values(resource_attributes))
            entry = resources[key] = (resource_spans, {})
        resource_spans, scopes = entry
        scope_key = (span.get("scope_name") or "", span.get("scope_version") or "")
        scope_spans = scopes.get(scope_key)
        if scope_spans is None:
            scope_spans = scopes[scope_key] = resource_spans.scope_spans.add()
            scope_spans.scope.name, scope_spans.scope.version = scope_key
        scope_spans.spans.append(_span_message(span, enriched))
    return request


def _hex_ids(obj: dict[str, Any], names: Sequence[str]) -> None:
    for name in names:
        if name in obj:
            obj[name] = base64.b64decode(obj[name]).hex()


def otlp_json_bytes(request: ExportTraceServiceRequest) -> bytes:
    """A request as OTLP/JSON (hex ids, integer enums, 64-bit integers as strings), as the Collector writes it."""
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                _hex_ids(span, ("traceId", "spanId", "parentSpanId"))
                for link in span.get("links", ()):
                    _hex_ids(link, ("traceId", "spanId"))
    return orjson.dumps(document)


def enriched_otlp_messages(spans: Iterable[EnrichedSpan | Mapping[str, Any]]) -> list[OtlpMessage]:
    """``otlp_proto`` messages of enriched spans: one per trace, keyed by its hex trace id.

    The key is what the Collector's kafkaexporter uses with ``partition_traces_by_id``, so a trace
    stays on one partition whichever writer sent it.

    Raises:
        KeyError, ValueError, TypeError: a span is not a valid EnrichedSpan record.
    """
    by_trace: dict[str, list[Mapping[str, Any]]] = {}
    for span in spans:
        by_trace.setdefault(span["trace_id"], []).append(span)
    return [
        OtlpMessage(trace_id.encode("ascii"), enriched_otlp_request(trace_spans).SerializeToString())
        for trace_id, trace_spans in by_trace.items()
    ]
