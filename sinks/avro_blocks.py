"""Avro object-container bytes from Avro bodies, for ClickHouse's own Avro input (``FORMAT Avro``).

A container is a header (magic, the writer schema as JSON, a sync marker) and blocks of
concatenated record bodies. Kafka messages already hold bodies (after their single-object or
Confluent header), so a batch becomes a container by concatenation: no record is decoded or
re-encoded in Python. Records given as dicts are encoded once with fastavro.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import fastavro
from fastavro import schemaless_reader, schemaless_writer

from schemas.codec import SchemaVersion, default_store
from schemas.text import bounded_repr

TABLE_RECORDS = {
    "spans_enriched": "EnrichedSpan",
    "reload_events": "ReloadEvent",
    "anomalies": "Anomaly",
    "dead_letters": "DeadLetter",
}


def _varint(number: int) -> bytes:
    """Avro ``long``: zig-zag, then base-128 little-endian."""
    number = (number << 1) ^ (number >> 63)
    out = bytearray()
    while number & ~0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


_HEADERS: dict[bytes, tuple[bytes, bytes]] = {}


def _header(schema: SchemaVersion) -> tuple[bytes, bytes]:
    """(container header, its 16-byte sync marker) for ``schema``; fastavro writes the header once."""
    cached = _HEADERS.get(schema.fingerprint)
    if cached is None:
        buffer = io.BytesIO()
        fastavro.writer(buffer, schema.parsed, [], codec="null", sync_marker=b"reloadtrace-sync")
        header = buffer.getvalue()
        cached = _HEADERS[schema.fingerprint] = (header, header[-16:])
    return cached


def container(schema: SchemaVersion, bodies: Sequence[bytes]) -> bytes:
    """One Avro object container holding ``bodies`` (each a body written with ``schema``) in one block."""
    header, sync = _header(schema)
    data = b"".join(bodies)
    return b"".join((header, _varint(len(bodies)), _varint(len(data)), data, sync))


def landing_table(table: str, writer: SchemaVersion) -> str:
    """The Null table through which ``writer``'s bodies land in ``table`` (``schemas/clickhouse``).

    Version 1 (and a registry schema the store does not know, matched by field names) lands in
    ``<table>_avro``; version N >= 2 in ``<table>_vN_avro``, which its DDL file adds beside the
    older ones, so an existing store gains a writer version without changing a shipped statement.
    """
    return f"{table}_v{writer.version}_avro" if writer.version >= 2 else f"{table}_avro"


def latest_schema(table: str) -> SchemaVersion:
    """The newest contract schema of the records of ``table``."""
    return default_store().latest(TABLE_RECORDS[table])


def encode_body(schema: SchemaVersion, record: Mapping[str, Any]) -> bytes:
    """The Avro body of ``record``.

    Raises:
        ValueError, TypeError, KeyError, AttributeError, OverflowError: the record does not fit.
    """
    buffer = io.BytesIO()
    schemaless_writer(buffer, schema.parsed, record, strict_allow_default=True)
    return buffer.getvalue()


def body_problem(schema: SchemaVersion, body: bytes) -> str | None:
    """Why ``body`` is not exactly one ``schema`` record, or None when it is (decodes it: slow path)."""
    stream = io.BytesIO(body)
    try:
        schemaless_reader(stream, schema.parsed, None)
    except Exception as error:  # noqa: BLE001 - any reader failure on hostile bytes means undecodable
        return f"body is not a valid {schema.name}: {bounded_repr(error)}"
    if stream.tell() != len(body):
        return f"{len(body) - stream.tell()} bytes after the end of the {schema.name} record"
    return None
