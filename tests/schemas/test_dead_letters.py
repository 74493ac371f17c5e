"""Dead letters always fit the dead-letter topic: bounded error text, raw bytes whole or prefix + length + SHA-256."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import codec_for
from schemas.dead_letters import KAFKA_MESSAGE_LIMIT_BYTES, RECORD_OVERHEAD_BYTES, DeadLetterBuilder
from schemas.errors import DecodeError, InvalidRecordError
from schemas.records import validate_span
from schemas.text import bounded_repr, bounded_text, safe_text, visible

CODEC = codec_for("DeadLetter")
BUILDER = DeadLetterBuilder(CODEC)


def _fields(**overrides):
    return {
        "source_topic": "spans", "source_partition": 3, "source_offset": 42, "raw_key": b"k", "raw_value": b"v",
        "error_kind": "wrong_magic", "error": "bad", "stage": "decode", "now_unix_nano": 1,
    } | overrides


def _fits(letter, limit=KAFKA_MESSAGE_LIMIT_BYTES) -> bool:
    return len(letter.key or b"") + len(letter.value) + RECORD_OVERHEAD_BYTES <= limit


def test_a_small_message_is_kept_byte_for_byte_with_its_length_and_hash() -> None:
    letter = BUILDER.message(**_fields(raw_value=b"\xff\x00abc"))
    record = CODEC.decode(letter.value)
    assert record["raw_value"] == b"\xff\x00abc" and record["raw_key"] == b"k" and letter.key == b"k"
    assert record["raw_value_length"] == 5 and record["raw_key_length"] == 1
    assert record["raw_value_sha256"] == hashlib.sha256(b"\xff\x00abc").hexdigest()
    assert record["truncated"] is False
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == ("spans", 3, 42)


def test_a_value_near_the_broker_limit_with_an_error_quoting_it_keeps_a_prefix_and_fits() -> None:
    value = b"\x00" + b"X" * 999_899  # wrong magic, ~1 MB
    error = f"wrong_magic: expected c301, got {value!r}"  # what an unbounded error text would quote
    letter = BUILDER.message(**_fields(raw_value=value, error=error, raw_key=b"K" * 600_000))
    assert _fits(letter)
    record = CODEC.decode(letter.value)
    assert record["truncated"] is True
    assert record["raw_value_length"] == len(value) and record["raw_key_length"] == 600_000
    assert record["raw_value_sha256"] == hashlib.sha256(value).hexdigest()
    assert value.startswith(record["raw_value"]) and len(record["raw_value"]) > 900_000
    assert len(record["raw_key"]) == 1_024 and letter.key == record["raw_key"]
    assert len(record["error"]) < 2_100 and record["error"].endswith(f"({len(error)} chars)")


def test_a_tombstone_has_no_length_and_no_hash() -> None:
    record = CODEC.decode(BUILDER.message(**_fields(raw_value=None, raw_key=None)).value)
    assert record["raw_value"] is None and record["raw_value_length"] is None and record["raw_value_sha256"] is None
    assert record["raw_key"] is None and record["raw_key_length"] is None and record["truncated"] is False


@settings(max_examples=40, deadline=None)
@given(
    limit=st.integers(min_value=16_384, max_value=1_000_000),
    value=st.none() | st.integers(min_value=0, max_value=1_100_000),
    key=st.none() | st.integers(min_value=0, max_value=5_000),
    error=st.integers(min_value=0, max_value=100_000),
)
def test_every_letter_fits_its_limit_whatever_the_sizes(limit: int, value, key, error: int) -> None:
    builder = DeadLetterBuilder(CODEC, max_message_bytes=limit)
    raw_value = None if value is None else bytes(range(256)) * (value // 256) + b"z" * (value % 256)
    letter = builder.message(**_fields(raw_value=raw_value, raw_key=None if key is None else b"k" * key, error="e" * error))
    assert _fits(letter, limit)
    record = CODEC.decode(letter.value)
    if raw_value is not None:
        assert raw_value.startswith(record["raw_value"])
        assert record["truncated"] == (len(record["raw_value"]) < len(raw_value) or (key or 0) > 1_024)


def test_a_v1_dead_letter_still_decodes_into_v2_with_defaults() -> None:
    import io

    from fastavro import schemaless_writer

    from schemas.codec import SINGLE_OBJECT_MAGIC, default_store

    v1 = default_store().versions("DeadLetter")[0]
    assert v1.version == 1
    buffer = io.BytesIO()
    schemaless_writer(buffer, v1.parsed, {k: v for k, v in _fields(raw_value=b"x").items() if k != "now_unix_nano"} | {
        "dead_lettered_time_unix_nano": 5, "raw_key": None,
    })
    record = CODEC.decode(SINGLE_OBJECT_MAGIC + v1.fingerprint + buffer.getvalue())
    assert record["raw_value"] == b"x" and record["raw_value_length"] is None and record["truncated"] is False


def test_a_limit_too_small_for_any_record_is_refused() -> None:
    with pytest.raises(ValueError):
        DeadLetterBuilder(CODEC, max_message_bytes=1_000)


def test_validation_errors_quote_a_bounded_value() -> None:
    span = {"trace_id": "X" * 520_000}
    with pytest.raises(InvalidRecordError) as caught:
        validate_span(span)
    assert len(str(caught.value)) < 400 and "520000" in str(caught.value)


def test_decode_errors_quote_a_bounded_value() -> None:
    span_codec = codec_for("Span")
    good = span_codec.encode({
        "trace_id": "1" * 32, "span_id": "2" * 16, "parent_span_id": None, "name": "n" * 300_000, "kind": "SERVER",
        "service_name": "s", "service_instance_id": "i", "start_time_unix_nano": 1, "end_time_unix_nano": 2,
        "status_code": "OK", "status_message": None, "attributes": {}, "resource_attributes": None,
    })
    bad = good.replace(b"n" * 10, b"\xff" * 10, 1)  # invalid UTF-8 inside the 300 kB name
    with pytest.raises(DecodeError) as caught:
        span_codec.decode(bad)
    assert len(str(caught.value)) < 600


def test_text_helpers() -> None:
    assert bounded_repr("a" * 1_000, 10) == "'aaaaaaaaaa'... (1000 chars)"
    assert bounded_repr(b"\x00" * 5) == repr(b"\x00" * 5)
    assert bounded_text("abc", 2) == "ab... (3 chars)"
    assert visible("a\x1b[31mb\x00\x9b\u202e\n") == "a\\x1b[31mb\\x00\\x9b\\u202e\\x0a"
    assert safe_text(ValueError("x\x07")) == "x\\x07"
