"""OTLP in and out (schemas/otlp.py): the SDK's own OTLP encoding decodes to what gateway.convert makes of
the same spans; OTLP/JSON deviations; every value type; per-span errors with their index; hostile bytes."""

from __future__ import annotations

import base64
import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.sdk.trace import SpanLimits

from gateway.convert import span_record
from gateway.redaction import NO_REDACTION
from schemas.codec import codec_for
from schemas.errors import DecodeError, DecodeErrorKind
from schemas.otlp import (
    ENRICHMENT_REVISION,
    INVALID_RELOAD_SPAN,
    INVALID_SPAN,
    MID_FLIGHT,
    MID_FLIGHT_RELOAD_IDS,
    OTLP_JSON,
    OTLP_PROTO,
    decode_otlp,
    decode_otlp_json,
    decode_otlp_proto,
    enriched_otlp_messages,
    enriched_otlp_request,
    otlp_json_bytes,
)
from schemas.records import ENRICHMENT_FIELDS, LOSSLESS_FIELDS, validate_span
from tests.interop.python_sdk import INSTANCE, SERVICE, record_traffic
from tests.strategies import enriched_spans

TRACE = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"


def both(request: ExportTraceServiceRequest):
    """The request decoded from otlp_proto and from otlp_json (each as the Collector writes it)."""
    return decode_otlp_proto(request.SerializeToString()), decode_otlp_json(otlp_json_bytes(request))


def one_span_request(**span_fields) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    span = resource_spans.scope_spans.add().spans.add(
        trace_id=bytes.fromhex(TRACE), span_id=bytes.fromhex(SPAN_ID), name="op", kind=2,
        start_time_unix_nano=1_700_000_000_000_000_000, end_time_unix_nano=1_700_000_000_500_000_000,
    )
    for name, value in span_fields.items():
        if name == "attributes":
            span.attributes.extend(value)
        else:
            setattr(span, name, value)
    return request


# --- the same spans through gateway.convert and through OTLP ----------------------------------------


@pytest.mark.parametrize("limits", [None, SpanLimits(max_span_attributes=3, max_events=1, max_links=1,
                                                     max_event_attributes=1, max_link_attributes=0)])
def test_sdk_otlp_decodes_to_what_gateway_convert_makes_of_the_same_spans(limits) -> None:
    traffic = record_traffic(span_limits=limits)
    expected = [span_record(span, NO_REDACTION) for span in traffic.spans]
    assert any(link["trace_state"] for span in expected for link in span["links"])
    for decoded in both(encode_spans(traffic.spans)):
        # The Python SDK's OTLP encoder (1.45) does not send a link's trace_state; gateway.convert keeps it.
        for span in expected:
            span["links"] = [dict(link, trace_state="") for link in span["links"]]
        assert decoded.span_count == len(traffic.spans)
        assert decoded.spans == expected
        if limits is None:
            assert decoded.errors == []
            assert decoded.reloads == [event for event in traffic.reloads if event.trace_id is not None]
        else:  # the SDK evicts the oldest attributes past the limit: reload spans lose reload.id
            assert all(error.error_kind == INVALID_RELOAD_SPAN for error in decoded.errors)
            assert all(reload in traffic.reloads for reload in decoded.reloads)  # never a wrong event
    server = next(span for span in expected if span["kind"] == "SERVER")
    assert server["service_name"] == SERVICE and server["service_instance_id"] == INSTANCE
    assert server["trace_state"] == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    assert server["scope_name"] == "checkout.http" and server["scope_version"] == "2.3.4"
    assert server["resource_attributes"]["deployment.environment.name"] == "test"
    if limits is None:
        assert server["attributes"]["tags"] == '["a","b"]' and server["attributes"]["ports"] == "[80,443]"
        assert server["events"][0]["attributes"] == {"bytes": 812, "route": "/v1/chat"}
        client = next(span for span in expected if span["kind"] == "CLIENT")
        assert [event["name"] for event in client["events"]] == ["exception"]
        assert client["links"][0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert client["links"][0]["attributes"] == {"link.reason": "retry-of"}
        assert client["status_code"] == "ERROR" and client["status_message"] == "upstream timeout"
    else:
        assert server["dropped_attributes_count"] == 9 - 3 and server["dropped_events_count"] == 0
        client = next(span for span in expected if span["kind"] == "CLIENT")
        assert client["dropped_links_count"] == 1 and len(client["links"]) == 1
        assert client["events"][0]["dropped_attributes_count"] >= 2


def test_every_decoded_span_fits_the_contract_and_the_avro_schema() -> None:
    codec = codec_for("Span")
    for decoded in both(encode_spans(record_traffic().spans)):
        for span in decoded.spans:
            validate_span(span)
            assert codec.decode(codec.encode(span)) == span


# --- values ---------------------------------------------------------------------------------------


def kv(key: str, **value) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def test_every_attribute_value_type() -> None:
    nested = KeyValueList(values=[kv("inner", bytes_value=b"\x00\xff"), kv("n", int_value=-3),
                                  KeyValue(key="empty", value=AnyValue())])
    attributes = [
        kv("s", string_value="text"), kv("i", int_value=2**63 - 1), kv("neg", int_value=-(2**63)),
        kv("d", double_value=0.1), kv("b", bool_value=False), kv("raw", bytes_value=b"\x01\x02\xfe"),
        kv("arr", array_value=ArrayValue(values=[AnyValue(string_value="x"), AnyValue(int_value=1),
                                                 AnyValue(double_value=1.5), AnyValue(bool_value=True),
                                                 AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=2)])),
                                                 AnyValue()])),
        kv("kv", kvlist_value=nested), kv("empty_array", array_value=ArrayValue()),
        KeyValue(key="no_value", value=AnyValue()), kv("s", string_value="last one wins"),
    ]
    for decoded in both(one_span_request(attributes=attributes)):
        assert decoded.errors == []
        assert decoded.spans[0]["attributes"] == {
            "s": "last one wins",
            "i": 2**63 - 1,
            "neg": -(2**63),
            "d": 0.1,
            "b": False,
            "raw": base64.b64encode(b"\x01\x02\xfe").decode(),
            "arr": '["x",1,1.5,true,[2],null]',
            "kv": json.dumps({"inner": "AP8=", "n": -3, "empty": None}, separators=(",", ":")),
            "empty_array": "[]",
        }


def test_kind_status_and_resource_mapping() -> None:
    for number, name in enumerate(["INTERNAL", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]):
        request = one_span_request(kind=number)
        request.resource_spans[0].scope_spans[0].spans[0].status.code = number % 3
        for decoded in both(request):
            assert decoded.spans[0]["kind"] == name
            assert decoded.spans[0]["status_code"] == ("UNSET", "OK", "ERROR")[number % 3]
    request = one_span_request()
    del request.resource_spans[0].resource.attributes[:]
    for decoded in both(request):
        span = decoded.spans[0]
        assert (span["service_name"], span["service_instance_id"], span["resource_attributes"]) == (
            "unknown_service", "", None)
        assert span["parent_span_id"] is None and span["status_message"] is None


def test_unknown_enum_numbers_are_span_errors() -> None:
    bad_kind = one_span_request(kind=9)
    bad_status = one_span_request()
    bad_status.resource_spans[0].scope_spans[0].spans[0].status.code = 7
    for request, field in ((bad_kind, "kind"), (bad_status, "status")):
        for decoded in both(request):
            assert decoded.spans == [] and decoded.errors[0].index == 0 and field in decoded.errors[0].error


# --- OTLP/JSON is not plain proto3 JSON ------------------------------------------------------------------


def json_span(**fields) -> bytes:
    span = {"traceId": TRACE.upper(), "spanId": SPAN_ID, "name": "op", "kind": 2,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": 1700000000500000000} | fields
    return orjson.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeSpans": [{"scope": {"name": "lib"}, "spans": [span]}],
    }]})


def test_otlp_json_hex_ids_any_case_ints_as_strings_or_numbers_enum_names_and_unknown_fields() -> None:
    decoded = decode_otlp_json(json_span(kind="SPAN_KIND_CLIENT", status={"code": "STATUS_CODE_ERROR"},
                                         futureField={"x": 1}, parentSpanId="",
                                         links=[{"traceId": TRACE, "spanId": SPAN_ID.upper(), "traceState": "a=b"}]))
    assert decoded.errors == []
    span = decoded.spans[0]
    assert span["trace_id"] == TRACE and span["span_id"] == SPAN_ID and span["parent_span_id"] is None
    assert span["kind"] == "CLIENT" and span["status_code"] == "ERROR"
    assert span["start_time_unix_nano"] == 1_700_000_000_000_000_000
    assert span["end_time_unix_nano"] == 1_700_000_000_500_000_000
    assert span["links"] == [{"trace_id": TRACE, "span_id": SPAN_ID, "trace_state": "a=b", "attributes": {},
                              "dropped_attributes_count": 0}]
    assert span["scope_name"] == "lib"


@pytest.mark.parametrize(("fields", "says"), [
    ({"traceId": base64.b64encode(bytes.fromhex(TRACE)).decode()}, "not base64"),
    ({"spanId": "eee19b7ec3c1b17"}, "hex"),
    ({"spanId": "eee19b7ec3c1b1"}, "16 hex digits"),
    ({"traceId": 12}, "hex"),
    ({"kind": "SPAN_KIND_SIDEWAYS"}, "SpanKind"),
    ({"status": {"code": "STATUS_CODE_MAYBE"}}, "StatusCode"),
    ({"startTimeUnixNano": 1.5}, "startTimeUnixNano"),
    ({"name": {"no": "string"}}, "name"),
    ({"links": [{"traceId": "zz", "spanId": SPAN_ID}]}, "hex"),
    ({"endTimeUnixNano": "1"}, "end_time_unix_nano"),  # ends before it starts
])
def test_bad_otlp_json_spans_are_errors_with_their_index(fields: dict, says: str) -> None:
    good = orjson.loads(json_span())["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    bad = orjson.loads(json_span(**fields))["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    document = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": [good, bad, good]}]}]}
    decoded = decode_otlp_json(orjson.dumps(document))
    assert len(decoded.spans) == 2 and decoded.span_count == 3
    assert [error.index for error in decoded.errors] == [1] and decoded.errors[0].error_kind == INVALID_SPAN
    assert says in decoded.errors[0].error


def test_a_bad_json_resource_or_scope_makes_each_of_its_spans_an_error() -> None:
    span = orjson.loads(json_span())["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    document = {"resourceSpans": [
        {"resource": {"attributes": "not a list"}, "scopeSpans": [{"spans": [span, span]}]},
        {"resource": {}, "scopeSpans": [{"scope": {"name": 5}, "spans": [span]}, {"spans": [span]}]},
    ]}
    decoded = decode_otlp_json(orjson.dumps(document))
    assert [error.index for error in decoded.errors] == [0, 1, 2] and len(decoded.spans) == 1
    assert "resource" in decoded.errors[0].error and "scope" in decoded.errors[2].error


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", b'"text"', b'{"resourceSpans": {}}',
                                  b'{"resourceSpans": [1]}', b'{"resourceSpans": [{"scopeSpans": 3}]}',
                                  b'{"resourceSpans": [{"scopeSpans": [{"spans": {}}]}]}', b"\xff\xfe{}",
                                  b"[" * 5000 + b"]" * 5000])
def test_json_messages_that_do_not_parse_are_one_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_otlp_json(data)
    assert caught.value.kind is DecodeErrorKind.MALFORMED


def test_a_deep_json_kvlist_is_a_span_error_not_a_crash() -> None:
    value: dict = {"stringValue": "leaf"}
    for _ in range(100):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    span = orjson.loads(json_span())["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["attributes"] = [{"key": "deep", "value": value}]
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span, orjson.loads(json_span())["resourceSpans"][0][
        "scopeSpans"][0]["spans"][0]]}]}]}
    decoded = decode_otlp_json(json.dumps(document).encode())
    assert len(decoded.spans) == 1 and decoded.errors[0].index == 0 and "too deep" in decoded.errors[0].error


# --- per-span errors in binary messages ---------------------------------------------------------------------


def test_bad_spans_are_errors_with_their_index_across_resources_and_scopes_good_ones_are_kept() -> None:
    request = ExportTraceServiceRequest()
    good = one_span_request().resource_spans[0].scope_spans[0].spans[0]
    backwards = type(good)()
    backwards.CopyFrom(good)
    backwards.end_time_unix_nano = good.start_time_unix_nano - 1
    zero_trace = type(good)()
    zero_trace.CopyFrom(good)
    zero_trace.trace_id = bytes(16)
    short_id = type(good)()
    short_id.CopyFrom(good)
    short_id.span_id = b"\x01\x02"
    bad_link = type(good)()
    bad_link.CopyFrom(good)
    bad_link.links.add(trace_id=bytes.fromhex(TRACE), span_id=b"")
    too_late = type(good)()
    too_late.CopyFrom(good)
    too_late.end_time_unix_nano = 2**64 - 1
    first = request.resource_spans.add()
    first.scope_spans.add().spans.extend([good, backwards])
    first.scope_spans.add().spans.extend([zero_trace, good])
    second = request.resource_spans.add()
    second.scope_spans.add().spans.extend([short_id, bad_link, too_late, good])
    for decoded in both(request):
        assert decoded.span_count == 8 and len(decoded.spans) == 3
        assert [error.index for error in decoded.errors] == [1, 2, 4, 5, 6]
        assert all(error.error_kind == INVALID_SPAN for error in decoded.errors)
        assert "end_time_unix_nano" in decoded.errors[0].error and "trace_id" in decoded.errors[1].error
        assert "links[0].span_id" in decoded.errors[3].error


@pytest.mark.parametrize("data", [b"\x0a", b"\x0a\xff\xff\xff\xff\x0f", b"\xff" * 20, b"\x0a\x05\x12\x03\x0a\x01"])
def test_binary_messages_that_do_not_parse_are_one_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_otlp_proto(data)
    assert caught.value.kind is DecodeErrorKind.MALFORMED


def _length_delimited(tag: int, payload: bytes) -> bytes:
    out, length = bytearray([tag]), len(payload)
    while length > 0x7F:
        out.append((length & 0x7F) | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out) + payload


def test_a_deep_binary_kvlist_and_an_oversized_message_are_decode_errors() -> None:
    value = b"\x0a\x01x"  # AnyValue{string_value: "x"}
    for _ in range(500):  # AnyValue{kvlist_value: {values: [{key: "k", value: ...}]}}
        key_value = _length_delimited(0x0A, b"k") + _length_delimited(0x12, value)
        value = _length_delimited(0x32, _length_delimited(0x0A, key_value))
    attribute = _length_delimited(0x0A, b"a") + _length_delimited(0x12, value)
    span = _length_delimited(0x0A, bytes(16)) + _length_delimited(0x4A, attribute)
    message = _length_delimited(0x0A, _length_delimited(0x12, _length_delimited(0x12, span)))
    with pytest.raises(DecodeError, match="Depth|depth"):
        decode_otlp_proto(message)
    with pytest.raises(DecodeError, match="limit"):
        decode_otlp_proto(b"\x00" * 1001, max_message_bytes=1000)
    with pytest.raises(DecodeError, match="limit"):
        decode_otlp_json(b" " * 1001, max_message_bytes=1000)
    with pytest.raises(DecodeError, match="expected bytes"):
        decode_otlp_proto("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown OTLP encoding"):
        decode_otlp(b"", "avro")  # type: ignore[arg-type]


def test_an_empty_message_has_no_spans() -> None:
    assert decode_otlp(b"", OTLP_PROTO).span_count == 0
    assert decode_otlp(b"{}", OTLP_JSON).span_count == 0


@settings(max_examples=300)
@given(data=st.binary(max_size=400))
def test_random_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    for decode in (decode_otlp_proto, decode_otlp_json):
        try:
            decoded = decode(data)
        except DecodeError:
            continue
        for span in decoded.spans:
            validate_span(span)


REAL = encode_spans(record_traffic().spans).SerializeToString()
REAL_JSON = otlp_json_bytes(ExportTraceServiceRequest.FromString(REAL))


@settings(max_examples=300)
@given(data=st.data())
def test_mutated_real_messages_give_valid_spans_or_errors_never_anything_else(data: st.DataObject) -> None:
    for original, decode in ((REAL, decode_otlp_proto), (REAL_JSON, decode_otlp_json)):
        mutated = bytearray(original)
        for _ in range(data.draw(st.integers(1, 6))):
            position = data.draw(st.integers(0, len(mutated) - 1))
            mutated[position] = data.draw(st.integers(0, 255))
        try:
            decoded = decode(bytes(mutated))
        except DecodeError:
            continue
        assert len(decoded.spans) + sum(e.error_kind == INVALID_SPAN for e in decoded.errors) == decoded.span_count
        for span in decoded.spans:
            validate_span(span)


# --- reload spans -------------------------------------------------------------------------------------------


def test_a_span_breaking_the_reload_convention_is_kept_and_its_reload_is_an_error() -> None:
    request = one_span_request(attributes=[kv("reload.id", string_value="r1"),
                                           kv("reload.component", string_value="config")])
    for decoded in both(request):
        assert len(decoded.spans) == 1 and decoded.reloads == []
        assert [error.error_kind for error in decoded.errors] == [INVALID_RELOAD_SPAN]
        assert "reload.status" in decoded.errors[0].error


# --- OTLP out --------------------------------------------------------------------------------------------------


@settings(max_examples=100)
@given(spans=st.lists(enriched_spans(), min_size=1, max_size=6))
def test_enriched_spans_out_and_back_in_keep_every_field_and_say_the_answer(spans: list[dict]) -> None:
    spans = [dict(span, span_id=f"{index + 1:016x}", trace_id=spans[index % 2]["trace_id"])
             for index, span in enumerate(spans)]
    messages = enriched_otlp_messages(spans)
    assert [m.key.decode() for m in messages] == list(dict.fromkeys(span["trace_id"] for span in spans))
    decoded_spans = []
    for message in messages:
        decoded = decode_otlp_proto(message.value)
        assert decoded.errors == []
        assert {span["trace_id"] for span in decoded.spans} == {message.key.decode()}
        decoded_spans += decoded.spans
    by_id = {(span["trace_id"], span["span_id"]): span for span in decoded_spans}
    assert len(decoded_spans) == len(spans)
    for span in spans:
        back = by_id[(span["trace_id"], span["span_id"])]
        for name in ("parent_span_id", "name", "kind", "service_name", "service_instance_id", "start_time_unix_nano",
                     "end_time_unix_nano", "status_code", *LOSSLESS_FIELDS):
            assert back[name] == span[name], name
        assert back["status_message"] == (span["status_message"] or None)
        assert back["resource_attributes"] == (span["resource_attributes"] or None)
        expected = dict(span["attributes"])
        expected.update({f"reload.version.{c}": v for c, v in span["versions"].items()})
        expected.update({f"reload.version_at_end.{c}": v for c, v in span["versions_at_end"].items()})
        expected.update({f"reload.reload_id.{c}": v for c, v in span["reload_ids"].items()})
        expected[MID_FLIGHT] = span["mid_flight"]
        expected[MID_FLIGHT_RELOAD_IDS] = json.dumps(sorted(span["mid_flight_reload_ids"]), separators=(",", ":"),
                                                     ensure_ascii=False)
        expected[ENRICHMENT_REVISION] = span["enrichment_revision"]
        assert back["attributes"] == expected
        assert not set(ENRICHMENT_FIELDS) & set(back)


ENRICHED = {
    "trace_id": TRACE, "span_id": SPAN_ID, "parent_span_id": None, "name": "op", "kind": "SERVER",
    "service_name": "svc", "service_instance_id": "svc-1", "start_time_unix_nano": 1, "end_time_unix_nano": 2,
    "status_code": "OK", "status_message": None, "resource_attributes": None,
}


def test_otlp_out_types_and_the_derived_answer_wins() -> None:
    span = ENRICHED | {
        "attributes": {"reload.mid_flight": True, "reload.mid_flight.reload_ids": "stale", "x": 1},
        "versions": {"model": "m2"}, "versions_at_end": {"model": "m3"}, "reload_ids": {"model": "r2"},
        "mid_flight": False, "mid_flight_reload_ids": [], "enrichment_revision": 4,
    }
    message = enriched_otlp_request([span]).resource_spans[0].scope_spans[0].spans[0]
    attributes = {item.key: item.value for item in message.attributes}
    assert attributes[MID_FLIGHT] == AnyValue(bool_value=False)
    assert attributes[MID_FLIGHT_RELOAD_IDS] == AnyValue(array_value=ArrayValue())
    assert attributes[ENRICHMENT_REVISION] == AnyValue(int_value=4)
    assert attributes["reload.version.model"] == AnyValue(string_value="m2")
    assert attributes["reload.version_at_end.model"] == AnyValue(string_value="m3")
    assert attributes["reload.reload_id.model"] == AnyValue(string_value="r2")
    assert attributes["x"] == AnyValue(int_value=1)


# --- the fast OTLP/JSON path gives exactly the protobuf mapper's answers -------------------------------------

scalars = st.one_of(
    st.builds(lambda v: AnyValue(string_value=v), st.text(max_size=8)),
    st.builds(lambda v: AnyValue(int_value=v), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: AnyValue(double_value=v), st.floats(allow_nan=False, allow_infinity=False)),
    st.builds(lambda v: AnyValue(bool_value=v), st.booleans()),
    st.builds(lambda v: AnyValue(bytes_value=v), st.binary(max_size=8)),
    st.just(AnyValue()),
)
any_values = st.recursive(scalars, lambda inner: st.one_of(
    st.builds(lambda vs: AnyValue(array_value=ArrayValue(values=vs)), st.lists(inner, max_size=3)),
    st.builds(lambda kvs: AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs])),
              st.lists(st.tuples(st.text(max_size=4), inner), max_size=3)),
), max_leaves=6)
attribute_keys = st.sampled_from(["a", "b", "service.name", "x.y"])
key_values = st.lists(st.builds(lambda k, v: KeyValue(key=k, value=v), attribute_keys, any_values), max_size=4)
ids16, ids8 = st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8)


@st.composite
def requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(draw(key_values))
        resource_spans.resource.dropped_attributes_count = draw(st.integers(0, 3))
        for _ in range(draw(st.integers(1, 2))):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name, scope_spans.scope.version = draw(st.text(max_size=5)), draw(st.text(max_size=3))
            for _ in range(draw(st.integers(0, 3))):
                start = draw(st.integers(0, 2**64 - 1))
                span = scope_spans.spans.add(
                    trace_id=draw(ids16 | st.just(b"")), span_id=draw(ids8), parent_span_id=draw(ids8 | st.just(b"")),
                    name=draw(st.text(max_size=6)), kind=draw(st.integers(0, 7)), trace_state=draw(st.text(max_size=5)),
                    start_time_unix_nano=start, end_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
                    dropped_attributes_count=draw(st.integers(0, 2**32 - 1)), flags=draw(st.integers(0, 2**32 - 1)),
                )
                span.attributes.extend(draw(key_values))
                span.status.code, span.status.message = draw(st.integers(0, 3)), draw(st.text(max_size=5))
                for _ in range(draw(st.integers(0, 2))):
                    span.events.add(time_unix_nano=draw(st.integers(0, 2**64 - 1)), name=draw(st.text(max_size=4)),
                                    attributes=draw(key_values))
                for _ in range(draw(st.integers(0, 2))):
                    span.links.add(trace_id=draw(ids16), span_id=draw(ids8), trace_state=draw(st.text(max_size=4)),
                                   attributes=draw(key_values), dropped_attributes_count=draw(st.integers(0, 9)))
    return request


def _slow_json(monkeypatch: pytest.MonkeyPatch):
    import schemas.otlp as otlp

    def unusual(*_args):
        raise otlp._Unusual

    for name in ("_fast_span_record", "_fast_resource", "_fast_scope"):
        monkeypatch.setattr(otlp, name, unusual)


def _answers(decoded) -> tuple:
    return decoded.spans, decoded.reloads, [(error.index, error.error_kind) for error in decoded.errors]


@settings(max_examples=300)
@given(request=requests())
def test_fast_json_equals_the_protobuf_mapper_and_the_binary_decode(request: ExportTraceServiceRequest) -> None:
    data = otlp_json_bytes(request)
    fast = decode_otlp_json(data)
    assert _answers(fast) == _answers(decode_otlp_proto(request.SerializeToString()))
    with pytest.MonkeyPatch.context() as monkeypatch:
        _slow_json(monkeypatch)
        assert _answers(decode_otlp_json(data)) == _answers(fast)


def test_the_collector_json_shape_never_needs_the_protobuf_mapper(monkeypatch: pytest.MonkeyPatch) -> None:
    import schemas.otlp as otlp

    def refuse(*_args):
        raise AssertionError("the fast path fell back")

    monkeypatch.setattr(otlp, "_parse_json", refuse)
    decoded = decode_otlp_json(REAL_JSON)
    assert decoded.errors == [] and len(decoded.spans) == len(record_traffic().spans)
