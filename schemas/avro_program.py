"""Programs for the native Avro walker and writer (``schemas._avro_walk``, ``schemas._avro_write``).

A program is a schema as nested ``(op, argument, ...)`` tuples: a record also carries its field
names and defaults (``None``, or the default in a 1-tuple), an enum its symbols' indexes.
:func:`compile_schema` turns a schema (its ``.avsc`` JSON) into one, or None when the native code
cannot stand for fastavro on it (a logical type, which fastavro converts and may refuse; an array
whose items can take no bytes, which a hostile count would make the walk loop on). :func:`walker`
and :func:`writer` are None when their extension is not built (fastavro is used then).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

NULL, BOOLEAN, LONG, FLOAT, DOUBLE, BYTES, STRING, FIXED, ENUM, ARRAY, MAP, UNION, RECORD, INT = range(14)
_PRIMITIVES = {
    "null": NULL, "boolean": BOOLEAN, "int": INT, "long": LONG, "float": FLOAT, "double": DOUBLE,
    "bytes": BYTES, "string": STRING,
}  # fmt: skip

Program = tuple[Any, ...]


class _NotWalkable(Exception):
    pass


def walker() -> Callable[[Program, bytes, int], int] | None:
    """The native ``walk(program, data, position) -> end``, or None when the extension is not built."""
    try:
        from schemas._avro_walk import walk
    except ImportError:
        return None
    return walk


def writer() -> Callable[[Program, Any], bytes | None] | None:
    """The native ``write(program, record) -> body or None``, or None when the extension is not built."""
    try:
        from schemas._avro_write import write
    except ImportError:
        return None
    return write


def compile_schema(schema: Any) -> Program | None:
    """The program of ``schema`` (parsed JSON of an ``.avsc``), or None when the native code cannot stand for fastavro."""
    try:
        return _compile(schema, {}, "")
    except _NotWalkable:
        return None


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _compile(schema: Any, named: dict[str, Program], namespace: str) -> Program:
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return (_PRIMITIVES[schema], None)
        found = named.get(_full_name(schema, namespace)) or named.get(schema)
        if found is None:
            raise _NotWalkable(f"unknown named type {schema}")
        return found
    if isinstance(schema, list):
        return (UNION, tuple(_compile(branch, named, namespace) for branch in schema))
    if not isinstance(schema, Mapping):
        raise _NotWalkable(f"not a schema: {schema!r}")
    if "logicalType" in schema:
        raise _NotWalkable("logical types are converted (and checked) by fastavro")
    kind = schema.get("type")
    if kind in _PRIMITIVES:
        return (_PRIMITIVES[kind], None)
    if kind == "record" or kind == "error":
        space = schema.get("namespace", namespace)
        full = _full_name(schema["name"], space)
        fields: list[Program] = []
        names = tuple(field["name"] for field in schema["fields"])
        defaults = tuple((field["default"],) if "default" in field else None for field in schema["fields"])
        node = (RECORD, fields, names, defaults)
        named[full] = named[schema["name"]] = node  # a record may refer to itself
        fields.extend(_compile(field["type"], named, space) for field in schema["fields"])
        program = (RECORD, tuple(fields), names, defaults)
        named[full] = named[schema["name"]] = program
        return program
    if kind == "enum":
        program = (ENUM, len(schema["symbols"]), {symbol: index for index, symbol in enumerate(schema["symbols"])})
    elif kind == "fixed":
        program = (FIXED, int(schema["size"]))
    elif kind == "array":
        items = _compile(schema["items"], named, namespace)
        if _can_be_empty(items):
            raise _NotWalkable("array items that can take no bytes")
        return (ARRAY, items)
    elif kind == "map":
        return (MAP, _compile(schema["values"], named, namespace))
    else:
        return _compile(kind, named, namespace)
    if "name" in schema:
        full = _full_name(schema["name"], schema.get("namespace", namespace))
        named[full] = named[schema["name"]] = program
    return program


def _can_be_empty(program: Program) -> bool:
    op, argument = program[0], program[1]
    if op == NULL:
        return True
    if op == FIXED:
        return argument == 0
    if op == RECORD:
        return all(_can_be_empty(child) for child in argument) if isinstance(argument, tuple) else False
    return False  # every other value takes at least one byte (unions: their index)
