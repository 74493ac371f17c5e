"""Small holes hostile records found (issue 14, item 6): each refused with a typed error, never a crash."""

from __future__ import annotations

import pytest

from schemas.codec import ConfluentCodec
from schemas.errors import DecodeError, DecodeErrorKind, InvalidRecordError
from schemas.records import ReloadEvent, is_span_id, is_trace_id, validate_span
from tests.schemas.test_codec import SPAN

RELOAD = {
    "reload_id": "r1", "service_name": "svc", "service_instance_id": None, "component": "model",
    "old_version": "v1", "new_version": "v2", "requested_time_unix_nano": 10, "effective_time_unix_nano": 20,
    "status": "SUCCEEDED", "source": "op", "trace_id": None, "span_id": None, "model_context": {}, "changed_keys": [],
}  # fmt: skip


@pytest.mark.parametrize("changed_keys", [5, 1.5, True, {"a": 1}, "abc", [1], ["a", None]])
def test_changed_keys_of_the_wrong_type_are_an_invalid_record(changed_keys: object) -> None:
    with pytest.raises(InvalidRecordError) as caught:
        ReloadEvent.from_dict({**RELOAD, "changed_keys": changed_keys})
    assert caught.value.field == "changed_keys"


def test_changed_keys_absent_or_null_mean_none() -> None:
    assert ReloadEvent.from_dict({**RELOAD, "changed_keys": None}).changed_keys == ()
    assert ReloadEvent.from_dict({k: v for k, v in RELOAD.items() if k != "changed_keys"}).changed_keys == ()


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\x00"])
def test_ids_with_a_trailing_newline_or_more_are_refused(suffix: str) -> None:
    assert not is_trace_id("1" * 32 + suffix) and not is_span_id("2" * 16 + suffix)
    with pytest.raises(InvalidRecordError):
        validate_span({**SPAN, "trace_id": "1" * 32 + suffix})
    with pytest.raises(InvalidRecordError):
        validate_span({**SPAN, "parent_span_id": "3" * 16 + suffix})
    with pytest.raises(InvalidRecordError):
        ReloadEvent.from_dict({**RELOAD, "trace_id": "1" * 32 + suffix})


def test_a_reload_effective_before_it_was_requested_is_refused() -> None:
    with pytest.raises(InvalidRecordError) as caught:
        ReloadEvent.from_dict({**RELOAD, "requested_time_unix_nano": 21})
    assert caught.value.field == "effective_time_unix_nano"
    assert ReloadEvent.from_dict({**RELOAD, "requested_time_unix_nano": 20}).effective_time_unix_nano == 20


def test_the_detector_feed_parser_refuses_bad_changed_keys_without_crashing() -> None:
    import orjson

    from streams.request_feed import parse

    with pytest.raises(InvalidRecordError):
        parse(orjson.dumps({"service_name": "svc", "reload": {**RELOAD, "changed_keys": 5}}))


class CountingRegistry:
    """A registry that knows no schema id and counts the look-ups."""

    def __init__(self) -> None:
        self.lookups = 0

    def get_schema(self, schema_id: int) -> object:
        self.lookups += 1
        raise LookupError(f"schema {schema_id} not found")


def test_an_unknown_schema_id_is_asked_once_per_retry_period_not_once_per_message() -> None:
    registry = CountingRegistry()
    now = [0.0]
    codec = ConfluentCodec("Span", registry, unknown_id_retry_s=60.0, clock=lambda: now[0])
    junk = b"\x00\x00\x00\x30\x39" + b"body"
    for _ in range(1_000):
        with pytest.raises(DecodeError) as caught:
            codec.decode(junk)
        assert caught.value.kind is DecodeErrorKind.UNKNOWN_SCHEMA_ID
    assert registry.lookups == 1
    now[0] = 61.0
    with pytest.raises(DecodeError):
        codec.decode(junk)
    assert registry.lookups == 2
