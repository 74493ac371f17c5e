"""The native writer writes fastavro's bytes, or leaves the record to fastavro: never other bytes, never a refused record."""

from __future__ import annotations

import io
import json
import os
from typing import Any
from unittest.mock import patch

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import codec as codec_module
from schemas.avro_program import compile_schema, writer
from schemas.codec import AVRO_DIR, SingleObjectCodec
from schemas.errors import EncodeError
from tests import strategies
from tests.schemas.test_avro_walk import SCHEMAS
from tests.schemas.test_codec import SPAN

WRITE = writer()
pytestmark = pytest.mark.skipif(WRITE is None, reason="the native writer (schemas._avro_write) is not built")
EXAMPLES = int(os.environ.get("WRITE_EXAMPLES", "3000"))

# Where fastavro chooses or coerces by rules the native writer leaves to it.
WRITER_SCHEMAS = [
    ["null", "float", "double"],
    ["float", "long"],
    ["int", "long", "string"],
    ["null", "double", "long"],
    ["null", {"type": "enum", "name": "E", "symbols": ["A", "B"]}, "string"],
    ["null", {"type": "fixed", "name": "F", "size": 2}, "bytes"],
    ["null", {"type": "array", "items": ["long", "string"]}, {"type": "map", "values": "long"}],
    ["null", {"type": "record", "name": "P", "fields": [{"name": "a", "type": "long"}]},
     {"type": "record", "name": "Q", "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "string"}]}],
    {"type": "record", "name": "D", "fields": [
        {"name": "a", "type": "long", "default": 7}, {"name": "b", "type": ["null", "string"], "default": None},
        {"name": "c", "type": "double", "default": 1}, {"name": "d", "type": "string"},
        {"name": "e", "type": {"type": "map", "values": ["string", "boolean", "long", "double"]}, "default": {}},
        {"name": "f", "type": {"type": "array", "items": "int"}, "default": []},
        {"name": "g", "type": {"type": "enum", "name": "G", "symbols": ["X", "Y"]}, "default": "Y"}]},
    {"type": "record", "name": "Node", "fields": [
        {"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"], "default": None}]},
]  # fmt: skip
CONTRACT = [json.loads(path.read_text()) for path in sorted(AVRO_DIR.glob("*.avsc"))]
ALL_SCHEMAS = SCHEMAS + WRITER_SCHEMAS + CONTRACT


class Text(str):
    pass


class Whole(int):
    pass


leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.integers(-3, 3), st.floats(), st.text(max_size=6),
    st.sampled_from(["A", "B", "X", "Y", "a", "b", "\ud800"]), st.binary(max_size=4), st.binary(max_size=4).map(bytearray),
    st.text(max_size=3).map(Text), st.integers(-3, 3).map(Whole),
)  # fmt: skip
hostile = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.lists(inner, max_size=2).map(tuple),
        st.dictionaries(st.sampled_from(["a", "b", "c", "d", "v", "next", "-type"]) | st.text(max_size=2) | st.integers(0, 2), inner, max_size=4),
    ),
    max_leaves=10,
)  # fmt: skip

_PRIMITIVE_VALUES = {
    "null": st.none(), "boolean": st.booleans(), "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1), "float": st.floats(width=32), "double": st.floats(),
    "string": st.text(max_size=8), "bytes": st.binary(max_size=8),
}  # fmt: skip


def shaped(schema: Any, named: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of ``schema``'s shape, with a hostile value now and then at any level."""
    return st.one_of(_shaped(schema, named, depth), _shaped(schema, named, depth), _shaped(schema, named, depth), hostile)


def _shaped(schema: Any, named: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    if isinstance(schema, str):
        if schema in _PRIMITIVE_VALUES:
            return _PRIMITIVE_VALUES[schema]
        target = named.get(schema) or next(value for key, value in named.items() if key.split(".")[-1] == schema)
        return st.none() if depth > 3 else _shaped(target, named, depth + 1)
    if isinstance(schema, list):
        return st.one_of([shaped(branch, named, depth + 1) for branch in schema])
    kind = schema["type"]
    if kind in ("record", "enum", "fixed"):
        named[schema["name"]] = schema
        if schema.get("namespace"):
            named[f"{schema['namespace']}.{schema['name']}"] = schema
    if kind == "record":
        required = {f["name"]: shaped(f["type"], named, depth + 1) for f in schema["fields"] if "default" not in f}
        optional = {f["name"]: shaped(f["type"], named, depth + 1) for f in schema["fields"] if "default" in f}
        records = st.fixed_dictionaries(required, optional=optional)
        return records | st.tuples(records, st.dictionaries(st.sampled_from(["zz", "-type"]), leaves, max_size=1)).map(
            lambda pair: {**pair[0], **pair[1]}
        )
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "array":
        return st.lists(shaped(schema["items"], named, depth + 1), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=4), shaped(schema["values"], named, depth + 1), max_size=3)
    return _shaped(kind, named, depth)


def fastavro_bytes(schema: Any, value: Any) -> bytes | None:
    buffer = io.BytesIO()
    try:
        schemaless_writer(buffer, parse_schema(schema, named_schemas={}), value, strict_allow_default=True)
    except Exception:  # noqa: BLE001 - any refusal: the native writer must not write the record either
        return None
    return buffer.getvalue()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), index=st.integers(0, len(ALL_SCHEMAS) - 1))
def test_the_writer_gives_fastavros_bytes_or_leaves_the_record_to_it(data: st.DataObject, index: int) -> None:
    schema = ALL_SCHEMAS[index]
    value = data.draw(shaped(json.loads(json.dumps(schema)), {}))
    program = compile_schema(json.loads(json.dumps(schema)))
    assert program is not None
    written = WRITE(program, value)  # type: ignore[misc]
    if written is not None:
        assert written == fastavro_bytes(schema, value)


CONTRACT_RECORDS = st.one_of(
    strategies.spans().map(lambda r: ("Span", r)), strategies.enriched_spans().map(lambda r: ("EnrichedSpan", r)),
    strategies.reload_events().map(lambda r: ("ReloadEvent", r)), strategies.anomalies().map(lambda r: ("Anomaly", r)),
    strategies.dead_letters().map(lambda r: ("DeadLetter", r)),
    strategies.reload_verdicts().map(lambda r: ("ReloadVerdict", r)),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(named=CONTRACT_RECORDS)
def test_contract_records_are_written_natively_and_as_fastavro_writes_them(named: tuple[str, dict[str, Any]]) -> None:
    name, record = named
    schema = SingleObjectCodec(name).schema
    written = WRITE(schema.program, record)  # type: ignore[misc]
    assert written is not None, f"a valid {name} fell back to fastavro"
    assert written == fastavro_bytes(schema.raw, record)


def _outcome(codec: SingleObjectCodec, record: dict[str, Any]) -> bytes | str:
    try:
        return codec.encode(record)
    except EncodeError as error:
        return str(error)


@settings(max_examples=500, deadline=None)
@given(attributes=st.dictionaries(st.text(max_size=3), hostile, max_size=3), extra=st.booleans(), drop=st.booleans())
def test_the_codec_encodes_and_refuses_exactly_as_without_the_native_writer(
    attributes: dict[str, Any], extra: bool, drop: bool
) -> None:
    record = {**SPAN, "attributes": attributes, **({"extra": 1} if extra else {})}
    if drop:
        del record["trace_id"]
    codec = SingleObjectCodec("Span")
    native = _outcome(codec, record)
    with patch.object(codec_module, "_WRITE", None):
        assert _outcome(codec, record) == native
