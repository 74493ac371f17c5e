"""Avro codec: round trips, framing, schema evolution, typed errors on any bad bytes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import (
    AVRO_DIR,
    RECORD_NAMES,
    ConfluentCodec,
    SchemaStore,
    SingleObjectCodec,
    codec_for,
    crc64_avro_fingerprint,
    default_store,
)
from schemas.errors import DecodeError, DecodeErrorKind, EncodeError, SchemaStoreError
from schemas.records import LOSSLESS_FIELDS, lossless_defaults
from tests.strategies import RECORDS, enriched_spans_v1, spans, spans_v1

SPAN = {
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "span_id": "00f067aa0ba902b7",
    "parent_span_id": None,
    "name": "POST /v1/chat/completions",
    "kind": "SERVER",
    "service_name": "llm-gateway",
    "service_instance_id": "llm-gateway-1",
    "start_time_unix_nano": 1_763_900_000_000_000_000,
    "end_time_unix_nano": 1_763_900_000_250_000_000,
    "status_code": "OK",
    "status_message": None,
    "attributes": {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 812, "temperature": 0.2, "stream": True},
    "resource_attributes": {"service.version": "1.4.2"},
}


def test_crc64_avro_fingerprint_matches_the_avro_spec_vector() -> None:
    # The Avro reference implementations give 7195948357588979594 for the schema "null".
    assert int.from_bytes(crc64_avro_fingerprint("null"), "little") == 7195948357588979594


def test_single_object_frame_layout() -> None:
    codec = SingleObjectCodec("Span")
    data = codec.encode(SPAN)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == crc64_avro_fingerprint(json.loads((AVRO_DIR / "Span.v2.avsc").read_text()))
    assert codec.decode(data) == {**SPAN, **lossless_defaults()}


def test_every_contract_schema_is_shipped_and_documented() -> None:
    store = default_store()
    assert set(store.names()) == set(RECORD_NAMES)
    for name in RECORD_NAMES:
        raw = store.latest(name).raw
        assert raw["namespace"] == "dev.reloadtrace"
        assert raw.get("doc")
        assert all(field.get("doc") for field in raw["fields"]), name


def test_enriched_span_carries_every_span_field_with_the_same_type() -> None:
    store = default_store()
    span_fields = {f["name"]: f["type"] for f in store.latest("Span").raw["fields"]}
    enriched_fields = {f["name"]: f["type"] for f in store.latest("EnrichedSpan").raw["fields"]}
    for name, avro_type in span_fields.items():
        assert json.dumps(enriched_fields[name], sort_keys=True) == json.dumps(avro_type, sort_keys=True), name
    assert set(enriched_fields) - set(span_fields) == {
        "versions", "versions_at_end", "reload_ids", "mid_flight", "mid_flight_reload_ids", "enrichment_revision"
    }


@pytest.mark.parametrize("record_name", RECORD_NAMES)
@settings(max_examples=60)
@given(data=st.data())
def test_round_trip_of_random_valid_records(record_name: str, data: st.DataObject) -> None:
    record = data.draw(RECORDS[record_name]())
    codec = SingleObjectCodec(record_name)
    assert codec.decode(codec.encode(record)) == record


def test_decoder_rejects_a_record_of_another_type() -> None:
    reload_bytes = SingleObjectCodec("ReloadEvent").encode(
        {
            "reload_id": "r1", "service_name": "s", "component": "model", "new_version": "v2",
            "requested_time_unix_nano": 1, "effective_time_unix_nano": 2, "status": "SUCCEEDED", "source": "ops",
        }
    )
    with pytest.raises(DecodeError) as caught:
        SingleObjectCodec("Span").decode(reload_bytes)
    assert caught.value.kind is DecodeErrorKind.WRONG_RECORD_TYPE


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", DecodeErrorKind.WRONG_MAGIC),
        (b"\x00\x01\x02", DecodeErrorKind.WRONG_MAGIC),
        (b'{"trace_id": "x"}', DecodeErrorKind.WRONG_MAGIC),
        (b"\xc3", DecodeErrorKind.TRUNCATED),
        (b"\xc3\x01\x00\x01", DecodeErrorKind.TRUNCATED),
        (b"\xc3\x01" + b"\xff" * 8 + b"\x00", DecodeErrorKind.UNKNOWN_FINGERPRINT),
    ],
)
def test_bad_frames_raise_the_typed_error(data: bytes, kind: DecodeErrorKind) -> None:
    with pytest.raises(DecodeError) as caught:
        SingleObjectCodec("Span").decode(data)
    assert caught.value.kind is kind
    assert kind.value in str(caught.value)


def test_truncated_body_and_trailing_bytes() -> None:
    codec = SingleObjectCodec("Span")
    data = codec.encode(SPAN)
    with pytest.raises(DecodeError) as caught:
        codec.decode(data[:-5])
    assert caught.value.kind is DecodeErrorKind.TRUNCATED
    with pytest.raises(DecodeError) as caught:
        codec.decode(data + b"\x00")
    assert caught.value.kind is DecodeErrorKind.MALFORMED


@settings(max_examples=3000, deadline=None)
@given(body=st.binary(max_size=300), header=st.sampled_from(["span", "random", "magic-only"]))
def test_fuzzed_bytes_raise_only_the_typed_error(body: bytes, header: str) -> None:
    codec = SingleObjectCodec("Span")
    prefix = {"span": codec.encode(SPAN)[:10], "random": b"", "magic-only": b"\xc3\x01"}[header]
    try:
        record = codec.decode(prefix + body)
    except DecodeError as error:
        assert isinstance(error.kind, DecodeErrorKind)
    else:
        # A random body that happens to be a valid Span must re-encode to exactly the same bytes.
        assert codec.encode(record) == prefix + body


@settings(max_examples=300, deadline=None)
@given(span=spans(), data=st.data())
def test_mutated_real_messages_raise_only_the_typed_error(span: dict, data: st.DataObject) -> None:
    codec = SingleObjectCodec("Span")
    encoded = bytearray(codec.encode(span))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        position = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
        encoded[position] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded)))
    try:
        codec.decode(bytes(encoded[:cut]))
    except DecodeError:
        pass


def test_encode_rejects_records_that_do_not_fit() -> None:
    codec = SingleObjectCodec("Span")
    with pytest.raises(EncodeError):
        codec.encode({**SPAN, "start_time_unix_nano": "yesterday"})
    with pytest.raises(EncodeError):
        codec.encode({key: value for key, value in SPAN.items() if key != "trace_id"})
    with pytest.raises(EncodeError):
        codec.encode({**SPAN, "not_in_the_contract": 1})


# --- schema evolution -------------------------------------------------------------------------

def _evolved_store(tmp_path: Path) -> tuple[SchemaStore, SchemaStore]:
    """(old store: Span v1 only, new store: v1 and a v2 that adds a field with a default)."""
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    shutil.copy(AVRO_DIR / "Span.v1.avsc", old_dir)
    shutil.copy(AVRO_DIR / "Span.v1.avsc", new_dir)
    v2 = json.loads((AVRO_DIR / "Span.v1.avsc").read_text())
    v2["fields"].append(
        {"name": "sampling_priority", "type": "int", "default": 1, "doc": "Added in v2 for the evolution test."}
    )
    (new_dir / "Span.v2.avsc").write_text(json.dumps(v2))
    return SchemaStore.from_directory(old_dir), SchemaStore.from_directory(new_dir)


def test_old_writer_new_reader_fills_the_default(tmp_path: Path) -> None:
    old_store, new_store = _evolved_store(tmp_path)
    old_bytes = SingleObjectCodec("Span", old_store).encode(SPAN)
    decoded = SingleObjectCodec("Span", new_store).decode(old_bytes)
    assert decoded == {**SPAN, "sampling_priority": 1}


def test_new_writer_old_reader_drops_the_new_field(tmp_path: Path) -> None:
    old_store, new_store = _evolved_store(tmp_path)
    new_bytes = SingleObjectCodec("Span", new_store).encode({**SPAN, "sampling_priority": 7})
    # A reader that has never seen v2 cannot resolve the writer: it says so.
    with pytest.raises(DecodeError) as caught:
        SingleObjectCodec("Span", old_store).decode(new_bytes)
    assert caught.value.kind is DecodeErrorKind.UNKNOWN_FINGERPRINT
    # A reader whose newest schema is v1 but which knows the v2 file reads v2 into v1.
    v1_reader_dir = tmp_path / "v1-reader-knows-v2"
    v1_reader_dir.mkdir()
    v2 = json.loads((tmp_path / "new" / "Span.v2.avsc").read_text())
    shutil.copy(AVRO_DIR / "Span.v1.avsc", v1_reader_dir / "Span.v2.avsc")  # reader schema = v1 content, newest
    (v1_reader_dir / "Span.v1.avsc").write_text(json.dumps(v2))  # v2 content known as an older version
    decoded = SingleObjectCodec("Span", SchemaStore.from_directory(v1_reader_dir)).decode(new_bytes)
    assert decoded == SPAN


def test_schema_store_errors(tmp_path: Path) -> None:
    with pytest.raises(SchemaStoreError):
        SchemaStore.from_directory(tmp_path)
    (tmp_path / "Span.avsc").write_text("{}")
    with pytest.raises(SchemaStoreError, match="named"):
        SchemaStore.from_directory(tmp_path)
    (tmp_path / "Span.avsc").unlink()
    (tmp_path / "Span.v1.avsc").write_text('{"type": "record", "name": "Other", "fields": []}')
    with pytest.raises(SchemaStoreError, match="file name says"):
        SchemaStore.from_directory(tmp_path)
    with pytest.raises(SchemaStoreError, match="no schema named"):
        default_store().latest("Nope")


# --- Confluent framing ------------------------------------------------------------------------

def test_confluent_framing_through_the_registry_client() -> None:
    codec = codec_for("Span", schema_registry_url="mock://reloadtrace-codec-test")
    assert isinstance(codec, ConfluentCodec)
    data = codec.encode(SPAN)
    assert data[0] == 0
    schema_id = int.from_bytes(data[1:5], "big")
    assert codec._registry.get_schema(schema_id).schema_str  # registered under the record-name subject
    assert codec.subject == "dev.reloadtrace.Span"
    # A fresh codec (another process) resolves the id through the registry.
    other = ConfluentCodec("Span", codec._registry)
    assert other.decode(data) == {**SPAN, **lossless_defaults()}


def test_confluent_framing_errors() -> None:
    codec = codec_for("Span", schema_registry_url="mock://reloadtrace-codec-errors")
    data = codec.encode(SPAN)
    for bad, kind in [
        (b"\xc3\x01" + data[1:], DecodeErrorKind.WRONG_MAGIC),
        (data[:3], DecodeErrorKind.TRUNCATED),
        (b"\x00\x00\x00\x99\x99" + data[5:], DecodeErrorKind.UNKNOWN_SCHEMA_ID),
        (data[:-3], DecodeErrorKind.TRUNCATED),
    ]:
        with pytest.raises(DecodeError) as caught:
            codec.decode(bad)
        assert caught.value.kind is kind


@pytest.mark.parametrize("registry_url", [None, "mock://reloadtrace-split-frame"])
def test_split_and_frame_reuse_an_encoded_body(registry_url: str | None) -> None:
    codec = codec_for("Span", schema_registry_url=registry_url)
    data = codec.encode(SPAN)
    writer, offset = codec.split(data)
    assert writer.fingerprint == codec.schema.fingerprint
    assert codec.frame(data[offset:]) == data
    with pytest.raises(DecodeError):
        codec.split(b"\x07garbage")


# --- the shipped contract evolution: Span.v1 -> Span.v2, EnrichedSpan.v1 -> EnrichedSpan.v2 ------------


def _v1_store(tmp_path: Path) -> SchemaStore:
    for name in ("Span", "EnrichedSpan"):
        shutil.copy(AVRO_DIR / f"{name}.v1.avsc", tmp_path)
    return SchemaStore.from_directory(tmp_path)


@pytest.mark.parametrize("name", ["Span", "EnrichedSpan"])
def test_v2_appends_only_fields_with_defaults_to_v1(name: str) -> None:
    v1, v2 = default_store().versions(name)
    v1_fields, v2_fields = v1.raw["fields"], v2.raw["fields"]
    added = [field for field in v2_fields if field["name"] not in {f["name"] for f in v1_fields}]
    assert [field["name"] for field in added] == list(LOSSLESS_FIELDS)
    assert all("default" in field for field in added)
    kept = [field for field in v2_fields if field["name"] not in LOSSLESS_FIELDS]
    assert kept == v1_fields  # same names, types, defaults and order
    if name == "Span":  # appended at the end: a v1 body is a prefix of a v2 body
        assert v2_fields[: len(v1_fields)] == v1_fields


@pytest.mark.parametrize("registry", [None, "mock://reloadtrace-evolution"])
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_v1_messages_stay_readable_with_the_v2_defaults(tmp_path_factory, registry, data) -> None:
    old_store = _v1_store(tmp_path_factory.mktemp("v1"))
    for name, strategy in (("Span", spans_v1()), ("EnrichedSpan", enriched_spans_v1())):
        record = data.draw(strategy)
        old = codec_for(name, schema_registry_url=registry, store=old_store)
        new = codec_for(name, schema_registry_url=registry)
        assert new.schema.version == 2
        assert new.decode(old.encode(record)) == {**record, **lossless_defaults()}


def test_a_v2_message_in_a_reader_that_only_knows_v1_is_refused_by_fingerprint(tmp_path: Path) -> None:
    message = SingleObjectCodec("Span").encode({**SPAN, **lossless_defaults()})
    with pytest.raises(DecodeError) as caught:
        SingleObjectCodec("Span", _v1_store(tmp_path)).decode(message)
    assert caught.value.kind is DecodeErrorKind.UNKNOWN_FINGERPRINT  # upgrade readers (sinks) first
