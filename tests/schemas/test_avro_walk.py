"""The native walker accepts and refuses exactly what fastavro's full read does, ending where it ends."""

from __future__ import annotations

import io
import json

import pytest
from fastavro import parse_schema, schemaless_reader
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.avro_program import compile_schema, walker
from schemas.codec import AVRO_DIR

WALK = walker()
pytestmark = pytest.mark.skipif(WALK is None, reason="the native walker (schemas._avro_walk) is not built")

SCHEMAS = [
    "string",
    "long",
    "boolean",
    "double",
    "float",
    "bytes",
    ["null", "string", "long"],
    {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]},
    {"type": "fixed", "name": "F", "size": 3},
    {"type": "map", "values": ["string", "boolean", "long", "double"]},
    {"type": "array", "items": "string"},
    {"type": "record", "name": "R", "fields": [
        {"name": "a", "type": "string"}, {"name": "b", "type": {"type": "map", "values": "long"}},
        {"name": "c", "type": {"type": "array", "items": {"type": "record", "name": "I", "fields": [
            {"name": "x", "type": ["null", "double"]}, {"name": "y", "type": "boolean"}]}}},
        {"name": "d", "type": "I"}]},
]  # fmt: skip


def fastavro_outcome(schema, data: bytes) -> tuple:
    stream = io.BytesIO(data)
    try:
        schemaless_reader(stream, parse_schema(schema))
    except EOFError:
        return ("truncated",)
    except Exception:  # noqa: BLE001 - every other refusal reads as malformed
        return ("malformed",)
    return ("ok", stream.tell())


def walker_outcome(schema, data: bytes) -> tuple:
    program = compile_schema(json.loads(json.dumps(schema)) if not isinstance(schema, str) else schema)
    assert program is not None
    try:
        return ("ok", WALK(program, data, 0))
    except EOFError:
        return ("truncated",)
    except Exception:  # noqa: BLE001 - as above
        return ("malformed",)


# Bytes that are likely to hit every branch: varint continuation bytes, small zigzag values (negative
# counts and indices included), bytes that break UTF-8.
HOSTILE = st.lists(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x7F, 0x80, 0xFF, 0xC3, 0xA9, 0xED, 0xA0,
                                    0x61, 0x62]) | st.integers(0, 255), max_size=40).map(bytes)


@settings(max_examples=int(__import__("os").environ.get("WALK_EXAMPLES", "3000")), deadline=None)
@given(index=st.integers(0, len(SCHEMAS) - 1), data=HOSTILE)
def test_the_walker_agrees_with_fastavro_on_hostile_bytes(index: int, data: bytes) -> None:
    schema = SCHEMAS[index]
    assert walker_outcome(schema, data) == fastavro_outcome(schema, data)


@pytest.mark.parametrize("data", [b"\xff" * 9 + b"\x01", b"\xff" * 10 + b"\x01", b"\xff" * 19 + b"\x01",
                                  b"\x80" * 12 + b"\x00", b"\xfe" * 11 + b"\x7f"])
def test_varints_of_any_length_give_the_same_length_as_fastavro(data: bytes) -> None:
    for schema in ("long", "string", ["null", "string"], {"type": "map", "values": "long"}):
        assert walker_outcome(schema, data + b"abc") == fastavro_outcome(schema, data + b"abc")


def test_every_contract_schema_compiles() -> None:
    for path in sorted(AVRO_DIR.glob("*.avsc")):
        assert compile_schema(json.loads(path.read_text())) is not None, path.name


def test_schemas_the_walker_cannot_stand_for_are_left_to_the_full_read() -> None:
    assert compile_schema({"type": "long", "logicalType": "timestamp-millis"}) is None
    assert compile_schema({"type": "array", "items": "null"}) is None
