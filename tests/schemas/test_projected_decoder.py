"""One decoder contract: ProjectedDecoder refuses exactly what the codec's full decode refuses, and keeps its fields.

Held over a generated corpus of every record type: valid messages, and the same messages mutated
(bit flips, inserted / deleted / overwritten bytes, truncation, trailing bytes, invalid UTF-8 put
into a string, maps and arrays re-written as negative-count blocks with right and wrong byte sizes).
"""

from __future__ import annotations

import io

from fastavro import schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import ProjectedDecoder, codec_for
from schemas.errors import DecodeError
from streams.enricher import SPAN_FIELDS_ENRICHMENT_READS
from tests.strategies import RECORDS, spans_v1

CODECS = {name: codec_for(name) for name in RECORDS}


def outcome(decode, data: bytes) -> object:
    try:
        return ("ok", decode(data))
    except DecodeError as error:
        return ("error", error.kind)


def _varint(number: int) -> bytes:
    number = (number << 1) ^ (number >> 63)
    out = bytearray()
    while number & ~0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def negative_block(entries: bytes, count: int, size_error: int) -> bytes:
    """A map/array block written the other legal way: -count, byte size (off by ``size_error``), items, end."""
    return _varint(-count) + _varint(len(entries) + size_error) + entries + b"\x00"


def with_negative_blocks(record_name: str, record: dict, size_error: int) -> bytes | None:
    """The message of ``record`` whose first non-empty map field is written as a negative-count block."""
    codec = CODECS[record_name]
    for name, value in record.items():
        if isinstance(value, dict) and value:
            field = next(f for f in codec.schema.raw["fields"] if f["name"] == name)
            value_schema = field["type"]
            map_schema = next(t for t in value_schema if t != "null") if isinstance(value_schema, list) else value_schema
            entries = io.BytesIO()
            for key, item in value.items():
                schemaless_writer(entries, {"type": "record", "name": "E", "fields": [
                    {"name": "k", "type": "string"}, {"name": "v", "type": map_schema["values"]}]}, {"k": key, "v": item})
            good = codec.encode(record)
            empty = codec.encode({**record, name: {}})  # the same message with this map as one 0x00 byte
            at = next(i for i in range(len(empty)) if good[i] != empty[i])  # where the map starts
            return good[:at] + negative_block(entries.getvalue(), len(value), size_error) + empty[at + 1 :]
    return None


MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 4)),
    st.tuples(st.just("overwrite"), st.integers(0, 10_000), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("append"), st.just(0), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("bad_utf8"), st.integers(0, 10_000), st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80"])),
)


def mutate(message: bytes, mutation: tuple) -> bytes:
    kind, position, argument = mutation
    at = 10 + position % max(1, len(message) - 10)  # the body, after the single-object header
    if kind == "flip":
        return message[:at] + bytes([message[at] ^ (1 << argument)]) + message[at + 1 :] if at < len(message) else message
    if kind == "insert":
        return message[:at] + argument + message[at:]
    if kind == "delete":
        return message[:at] + message[at + argument :]
    if kind == "overwrite":
        return message[:at] + argument + message[at + len(argument) :]
    if kind == "truncate":
        return message[:at]
    if kind == "append":
        return message + argument
    # bad_utf8: inside the first printable run (a string's bytes), keeping the length
    start = next((i for i in range(10, len(message) - 1) if 0x61 <= message[i] <= 0x7A), None)
    if start is None:
        return message
    return message[:start] + argument + message[start + len(argument) :]


def _assert_same_contract(record_name: str, data: bytes, fields: tuple[str, ...]) -> None:
    codec = CODECS[record_name]
    full = outcome(codec.decode, data)
    projected = outcome(ProjectedDecoder(codec, fields).decode, data)
    if full[0] == "ok":
        assert projected == ("ok", {name: full[1][name] for name in fields if name in full[1]})
    else:
        assert projected == full


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), mutations=st.lists(MUTATIONS, min_size=0, max_size=3))
def test_the_projected_decoder_refuses_exactly_what_the_full_decoder_refuses(data: st.DataObject, mutations: list) -> None:
    record_name = data.draw(st.sampled_from(sorted(RECORDS)))
    record = data.draw(RECORDS[record_name]())
    message = CODECS[record_name].encode(record)
    for mutation in mutations:
        message = mutate(message, mutation)
    names = [field["name"] for field in CODECS[record_name].schema.raw["fields"]]
    fields = tuple(data.draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names))))
    _assert_same_contract(record_name, message, fields)
    # Leading fields: the native walker's path (when built), for every record type.
    _assert_same_contract(record_name, message, tuple(names[: data.draw(st.integers(1, len(names)))]))
    if record_name == "Span":
        _assert_same_contract(record_name, message, SPAN_FIELDS_ENRICHMENT_READS)


def test_skipped_attributes_with_invalid_utf8_are_refused_as_by_the_full_decoder() -> None:
    codec = CODECS["Span"]
    span = {
        "trace_id": "1" * 32, "span_id": "2" * 16, "parent_span_id": None, "name": "n", "kind": "SERVER",
        "service_name": "s", "service_instance_id": "i", "start_time_unix_nano": 1, "end_time_unix_nano": 2,
        "status_code": "OK", "status_message": None, "attributes": {"k": "ab"}, "resource_attributes": None,
    }  # fmt: skip
    bad = codec.encode(span).replace(b"\x04ab", b"\x04\xff\xfe", 1)  # {"k": b"\xff\xfe"}
    assert outcome(codec.decode, bad)[0] == "error"
    assert outcome(ProjectedDecoder(codec, SPAN_FIELDS_ENRICHMENT_READS).decode, bad) == outcome(codec.decode, bad)


@settings(max_examples=100, deadline=None)
@given(record=RECORDS["Span"](), size_error=st.integers(-3, 3))
def test_negative_count_blocks_are_judged_alike_whatever_their_byte_size(record: dict, size_error: int) -> None:
    message = with_negative_blocks("Span", record, size_error)
    if message is None:
        return
    _assert_same_contract("Span", message, SPAN_FIELDS_ENRICHMENT_READS)
    if size_error == 0:
        assert outcome(CODECS["Span"].decode, message)[0] == "ok"


@given(span=spans_v1())
def test_v1_writers_project_like_v2_writers(span: dict) -> None:
    import shutil
    import tempfile
    from pathlib import Path

    from schemas.codec import AVRO_DIR, SchemaStore, SingleObjectCodec

    with tempfile.TemporaryDirectory() as directory:
        shutil.copy(AVRO_DIR / "Span.v1.avsc", directory)
        old = SingleObjectCodec("Span", SchemaStore.from_directory(Path(directory)))
    codec = CODECS["Span"]
    decoder = ProjectedDecoder(codec, SPAN_FIELDS_ENRICHMENT_READS)
    v1_message, v2_message = old.encode(span), codec.encode(span)
    assert decoder.decode(v1_message) == decoder.decode(v2_message) == {
        name: span[name] for name in SPAN_FIELDS_ENRICHMENT_READS
    }


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), mutations=st.lists(MUTATIONS, min_size=0, max_size=3))
def test_without_the_native_walker_the_contract_holds_too(data: st.DataObject, mutations: list) -> None:
    """The pure-Python path (the extension not built): the full decode, projected."""
    import schemas.codec as codec_module

    record_name = data.draw(st.sampled_from(sorted(RECORDS)))
    message = CODECS[record_name].encode(data.draw(RECORDS[record_name]()))
    for mutation in mutations:
        message = mutate(message, mutation)
    fields = tuple(field["name"] for field in CODECS[record_name].schema.raw["fields"][:3])
    original = codec_module.walker
    codec_module.walker = lambda: None
    try:
        decoder = ProjectedDecoder(CODECS[record_name], fields)
    finally:
        codec_module.walker = original
    assert decoder._walk is None
    full = outcome(CODECS[record_name].decode, message)
    projected = outcome(decoder.decode, message)
    assert projected == (("ok", {name: full[1][name] for name in fields if name in full[1]}) if full[0] == "ok" else full)
