"""ProjectedDecoder: the kept fields exactly as a full decode gives them, and the same refusals of bad bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import ProjectedDecoder, codec_for
from schemas.errors import DecodeError
from streams.enricher import SPAN_FIELDS_ENRICHMENT_READS
from tests.strategies import spans, spans_v1

CODEC = codec_for("Span")
DECODER = ProjectedDecoder(CODEC, SPAN_FIELDS_ENRICHMENT_READS)


@given(span=spans())
def test_kept_fields_equal_the_full_decode_and_the_maps_are_skipped(span: dict) -> None:
    message = CODEC.encode(span)
    full = CODEC.decode(message)
    projected = DECODER.decode(message)
    assert projected == {name: full[name] for name in SPAN_FIELDS_ENRICHMENT_READS}
    assert "attributes" not in projected and "resource_attributes" not in projected


def _outcome(decode, data: bytes) -> str:
    try:
        decode(data)
    except DecodeError as error:
        return f"error:{error.kind}"
    return "ok"


@given(span=spans(), cut=st.integers(min_value=1, max_value=200), noise=st.binary(min_size=1, max_size=8))
def test_truncated_or_padded_messages_are_refused_like_the_full_decode(span: dict, cut: int, noise: bytes) -> None:
    message = CODEC.encode(span)
    for bad in (message[: max(len(message) - cut, 0)], message + noise):
        full = _outcome(CODEC.decode, bad)
        assert full != "ok"
        assert _outcome(DECODER.decode, bad) != "ok"


@given(body=st.binary(max_size=300))
def test_random_bodies_raise_only_the_typed_error(body: bytes) -> None:
    data = CODEC.encode({**_minimal(), "attributes": {}})[:10] + body
    try:
        DECODER.decode(data)
    except DecodeError:
        pass


def _minimal() -> dict:
    return {
        "trace_id": "1" * 32, "span_id": "2" * 16, "parent_span_id": None, "name": "n", "kind": "SERVER",
        "service_name": "s", "service_instance_id": "i", "start_time_unix_nano": 1, "end_time_unix_nano": 2,
        "status_code": "OK", "status_message": None, "attributes": {}, "resource_attributes": None,
    }


@given(span=spans_v1())
def test_v1_writers_project_like_v2_writers(span: dict) -> None:
    import shutil
    import tempfile
    from pathlib import Path

    from schemas.codec import AVRO_DIR, SchemaStore, SingleObjectCodec

    with tempfile.TemporaryDirectory() as directory:
        shutil.copy(AVRO_DIR / "Span.v1.avsc", directory)
        old = SingleObjectCodec("Span", SchemaStore.from_directory(Path(directory)))
    v1_message, v2_message = old.encode(span), CODEC.encode(span)
    assert DECODER.decode(v1_message) == DECODER.decode(v2_message) == {
        name: span[name] for name in SPAN_FIELDS_ENRICHMENT_READS
    }
