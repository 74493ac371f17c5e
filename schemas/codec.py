"""Avro encoding and decoding of contract records: single-object framing by default, Confluent framing with a registry.

Single-object: ``C3 01`` + the writer schema's CRC-64-AVRO fingerprint + body; a reader finds the
writer schema by fingerprint among every known ``.avsc`` version and resolves it into its newest, so
old and (with the newer file) new writers' messages decode. Confluent (with a registry URL): ``00``
+ 4-byte schema id + body, record-name subjects. Bodies are fastavro's bytes (the native writer's
where it vouches for them). Every decoding failure raises :class:`~schemas.errors.DecodeError` with
a :class:`DecodeErrorKind` that says why; no other exception escapes ``decode`` for any input bytes.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Protocol

import fastavro
from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.avro_program import Program, compile_schema, walker, writer
from schemas.errors import DecodeError, DecodeErrorKind, EncodeError, SchemaStoreError
from schemas.text import bounded_repr, bounded_text

AVRO_DIR = Path(__file__).resolve().parent / "avro"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_SINGLE_OBJECT_HEADER_BYTES = 10
_CONFLUENT_HEADER_BYTES = 5
_UNKNOWN_ID_RETRY_S = 60.0
_UNKNOWN_IDS_KEPT = 10_000
_FILE_NAME = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[0-9]+)\.avsc$")

RECORD_NAMES = ("Span", "ReloadEvent", "EnrichedSpan", "Anomaly", "DeadLetter", "ReloadVerdict")


def crc64_avro_fingerprint(schema: Any) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint of a schema's parsing canonical form."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


@dataclass(frozen=True)
class SchemaVersion:
    """One known version of one record schema."""

    name: str
    version: int
    raw: dict[str, Any]
    parsed: Any
    fingerprint: bytes

    @property
    def full_name(self) -> str:
        namespace = self.raw.get("namespace")
        return f"{namespace}.{self.name}" if namespace else self.name

    @property
    def canonical_json(self) -> str:
        return to_parsing_canonical_form(self.raw)

    @cached_property
    def program(self) -> Program | None:
        """The schema program of the native walker and writer (None where they cannot stand for fastavro)."""
        return compile_schema(self.raw)


class SchemaStore:
    """Every version of every record schema this process knows, by name and by fingerprint.

    Files are ``<RecordName>.v<N>.avsc``; the highest ``N`` is the reader (and writer) schema.
    """

    def __init__(self, versions: list[SchemaVersion]) -> None:
        self._by_name: dict[str, list[SchemaVersion]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for version in sorted(versions, key=lambda v: (v.name, v.version)):
            self._by_name.setdefault(version.name, []).append(version)
            self._by_fingerprint.setdefault(version.fingerprint, version)

    @classmethod
    def from_directory(cls, directory: Path | str = AVRO_DIR) -> SchemaStore:
        """Load every ``<Name>.v<N>.avsc`` file in ``directory``.

        Raises:
            SchemaStoreError: a file is unreadable, not a valid Avro schema, or misnamed.
        """
        directory = Path(directory)
        versions: list[SchemaVersion] = []
        for path in sorted(directory.glob("*.avsc")):
            match = _FILE_NAME.match(path.name)
            if match is None:
                raise SchemaStoreError(f"{path}: schema files must be named <RecordName>.v<N>.avsc")
            try:
                raw = json.loads(path.read_text())
                parsed = fastavro.parse_schema(raw, named_schemas={})
            except (OSError, ValueError, fastavro.schema.SchemaParseException) as error:
                raise SchemaStoreError(f"{path}: {error}") from error
            if raw.get("name") != match["name"]:
                raise SchemaStoreError(f"{path}: file name says {match['name']}, schema says {raw.get('name')}")
            versions.append(
                SchemaVersion(match["name"], int(match["version"]), raw, parsed, crc64_avro_fingerprint(raw))
            )
        if not versions:
            raise SchemaStoreError(f"no .avsc files in {directory}")
        return cls(versions)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def latest(self, name: str) -> SchemaVersion:
        try:
            return self._by_name[name][-1]
        except KeyError:
            raise SchemaStoreError(f"no schema named {name!r}; known: {', '.join(self.names())}") from None

    def versions(self, name: str) -> list[SchemaVersion]:
        return list(self._by_name.get(name, []))

    def by_fingerprint(self, fingerprint_bytes: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(fingerprint_bytes)


@cache
def default_store() -> SchemaStore:
    """The schemas shipped in ``schemas/avro`` (loaded once; they are immutable package data)."""
    return SchemaStore.from_directory(AVRO_DIR)


class Codec(Protocol):
    """Turns one record type into Kafka message values and back."""

    record_name: str

    @property
    def schema(self) -> SchemaVersion: ...

    def encode(self, record: Mapping[str, Any]) -> bytes: ...

    def decode(self, data: bytes) -> dict[str, Any]: ...

    def split(self, data: bytes) -> tuple[SchemaVersion, int]: ...

    def frame(self, body: bytes) -> bytes: ...


_WRITE = writer()


def _encode_body(schema: SchemaVersion, record: Mapping[str, Any]) -> bytes:
    """The Avro body of ``record``: the native writer's where it vouches for fastavro's bytes, else fastavro's."""
    if _WRITE is not None and schema.program is not None:
        body = _WRITE(schema.program, record)
        if body is not None:
            return body
    buffer = io.BytesIO()
    try:
        schemaless_writer(buffer, schema.parsed, record, strict_allow_default=True)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as error:
        raise EncodeError(f"{schema.name} record does not fit its schema: {bounded_text(str(error), 300)}") from error
    return buffer.getvalue()


def _read_body(
    data: bytes, offset: int, writer: SchemaVersion, reader: SchemaVersion, record_name: str
) -> dict[str, Any]:
    stream = io.BytesIO(data)
    stream.seek(offset)
    try:
        record = schemaless_reader(stream, writer.parsed, None if writer is reader else reader.parsed)
    except (EOFError, StopIteration) as error:
        raise DecodeError(DecodeErrorKind.TRUNCATED, f"body ends early: {bounded_repr(error)}", record_name) from error
    except Exception as error:  # noqa: BLE001 - any reader failure on hostile bytes is malformed input
        raise DecodeError(DecodeErrorKind.MALFORMED, f"body is not a valid {writer.name}: {bounded_repr(error)}", record_name) from error
    if stream.tell() != len(data):
        raise DecodeError(
            DecodeErrorKind.MALFORMED,
            f"{len(data) - stream.tell()} bytes after the end of the {writer.name} record",
            record_name,
        )
    if not isinstance(record, dict):
        raise DecodeError(DecodeErrorKind.MALFORMED, "body is not a record", record_name)
    return record


class SingleObjectCodec:
    """Avro single-object encoding; needs no registry.

    Args:
        record_name: e.g. ``"Span"``; encodes with, and decodes into, its newest known version.
        store: the known schema versions (default: ``schemas/avro``).
    """

    def __init__(self, record_name: str, store: SchemaStore | None = None) -> None:
        self.record_name = record_name
        self._store = store or default_store()
        self._schema = self._store.latest(record_name)
        self._header = SINGLE_OBJECT_MAGIC + self._schema.fingerprint

    @property
    def schema(self) -> SchemaVersion:
        return self._schema

    def encode(self, record: Mapping[str, Any]) -> bytes:
        return self._header + _encode_body(self._schema, record)

    def frame(self, body: bytes) -> bytes:
        """A message from an Avro body already encoded with :attr:`schema`."""
        return self._header + body

    def split(self, data: bytes) -> tuple[SchemaVersion, int]:
        """Check the header of ``data``: (its writer schema, offset of the body).

        Raises:
            DecodeError: wrong magic, truncated header, unknown fingerprint, or another record type.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(DecodeErrorKind.MALFORMED, f"expected bytes, got {type(data).__name__}", self.record_name)
        if data[:2] != SINGLE_OBJECT_MAGIC[: len(data)] or not data:
            raise DecodeError(
                DecodeErrorKind.WRONG_MAGIC,
                f"expected Avro single-object marker c301, got {bytes(data[:2]).hex() or 'empty message'}",
                self.record_name,
            )
        if len(data) < _SINGLE_OBJECT_HEADER_BYTES:
            raise DecodeError(
                DecodeErrorKind.TRUNCATED, f"{len(data)} bytes is shorter than the 10-byte header", self.record_name
            )
        fingerprint_bytes = bytes(data[2:_SINGLE_OBJECT_HEADER_BYTES])
        writer = self._store.by_fingerprint(fingerprint_bytes)
        if writer is None:
            raise DecodeError(
                DecodeErrorKind.UNKNOWN_FINGERPRINT,
                f"writer schema fingerprint {fingerprint_bytes.hex()} is not among the known schema versions",
                self.record_name,
            )
        if writer.name != self.record_name:
            raise DecodeError(
                DecodeErrorKind.WRONG_RECORD_TYPE,
                f"message holds a {writer.name} (v{writer.version}), expected a {self.record_name}",
                self.record_name,
            )
        return writer, _SINGLE_OBJECT_HEADER_BYTES

    def decode(self, data: bytes) -> dict[str, Any]:
        writer, offset = self.split(data)
        return _read_body(bytes(data), offset, writer, self._schema, self.record_name)


class ConfluentCodec:
    """Confluent wire format: magic byte 0, 4-byte schema id, body; schemas live in a registry.

    The writer schema is registered once (auto-registration) under the record-name subject.
    Schema ids seen while decoding are fetched once from the registry and cached; an id the registry
    cannot resolve is remembered as unresolvable for ``unknown_id_retry_s``, so junk messages carrying
    it cost no registry call each (a schema registered meanwhile is found after that time).

    Args:
        record_name: e.g. ``"Span"``.
        registry: a confluent-kafka ``SchemaRegistryClient`` (``mock://`` URLs give the in-memory one).
        store: the known schema versions; the newest is the writer and reader schema.
        unknown_id_retry_s: how long an unresolvable schema id is refused without asking again.
        clock: monotonic seconds (injected for tests).
    """

    def __init__(
        self,
        record_name: str,
        registry: Any,
        store: SchemaStore | None = None,
        *,
        unknown_id_retry_s: float = _UNKNOWN_ID_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.record_name = record_name
        self._registry = registry
        self._store = store or default_store()
        self._schema = self._store.latest(record_name)
        self._writer_header: bytes | None = None
        self._writers_by_id: dict[int, SchemaVersion] = {}
        self._unknown_ids: dict[int, tuple[float, str]] = {}
        self._unknown_id_retry_s = unknown_id_retry_s
        self._clock = clock

    @property
    def schema(self) -> SchemaVersion:
        return self._schema

    @property
    def subject(self) -> str:
        return self._schema.full_name

    def _header(self) -> bytes:
        if self._writer_header is None:
            from confluent_kafka.schema_registry import Schema

            schema_id = self._registry.register_schema(self.subject, Schema(json.dumps(self._schema.raw), "AVRO"))
            self._writers_by_id[schema_id] = self._schema
            self._writer_header = CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")
        return self._writer_header

    def encode(self, record: Mapping[str, Any]) -> bytes:
        return self._header() + _encode_body(self._schema, record)

    def _writer(self, schema_id: int) -> SchemaVersion:
        writer = self._writers_by_id.get(schema_id)
        if writer is not None:
            return writer
        unknown = self._unknown_ids.get(schema_id)
        if unknown is not None and self._clock() < unknown[0]:
            raise DecodeError(DecodeErrorKind.UNKNOWN_SCHEMA_ID, unknown[1], self.record_name)
        try:
            registered = self._registry.get_schema(schema_id)
            raw = json.loads(registered.schema_str)
            parsed = fastavro.parse_schema(raw, named_schemas={})
        except Exception as error:  # noqa: BLE001 - registry or parse failure: the id is unusable
            reason = f"schema id {schema_id} not resolvable: {bounded_text(str(error), 300)}"
            if len(self._unknown_ids) >= _UNKNOWN_IDS_KEPT:
                self._unknown_ids.clear()
            self._unknown_ids[schema_id] = (self._clock() + self._unknown_id_retry_s, reason)
            raise DecodeError(DecodeErrorKind.UNKNOWN_SCHEMA_ID, reason, self.record_name) from error
        name = raw.get("name", "") if isinstance(raw, dict) else ""
        writer = SchemaVersion(name, 0, raw, parsed, crc64_avro_fingerprint(raw))
        known = self._store.by_fingerprint(writer.fingerprint)
        self._writers_by_id[schema_id] = known or writer
        return self._writers_by_id[schema_id]

    def frame(self, body: bytes) -> bytes:
        """A message from an Avro body already encoded with the newest schema."""
        return self._header() + body

    def split(self, data: bytes) -> tuple[SchemaVersion, int]:
        """Check the header of ``data``: (its writer schema, offset of the body).

        Raises:
            DecodeError: wrong magic, truncated header, unresolvable schema id, or another record type.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(DecodeErrorKind.MALFORMED, f"expected bytes, got {type(data).__name__}", self.record_name)
        if not data or data[:1] != CONFLUENT_MAGIC:
            raise DecodeError(
                DecodeErrorKind.WRONG_MAGIC,
                f"expected Confluent magic byte 00, got {bytes(data[:1]).hex() or 'empty message'}",
                self.record_name,
            )
        if len(data) < _CONFLUENT_HEADER_BYTES:
            raise DecodeError(
                DecodeErrorKind.TRUNCATED, f"{len(data)} bytes is shorter than the 5-byte header", self.record_name
            )
        schema_id = int.from_bytes(data[1:5], "big")
        writer = self._writer(schema_id)
        if writer.name != self.record_name:
            raise DecodeError(
                DecodeErrorKind.WRONG_RECORD_TYPE,
                f"schema id {schema_id} is a {writer.name}, expected a {self.record_name}",
                self.record_name,
            )
        return writer, _CONFLUENT_HEADER_BYTES

    def decode(self, data: bytes) -> dict[str, Any]:
        writer, offset = self.split(data)
        return _read_body(bytes(data), offset, writer, self._schema, self.record_name)


class ProjectedDecoder:
    """Decodes a codec's messages and keeps only some top-level fields.

    One decoder contract: a message is refused exactly when :meth:`Codec.decode` refuses it, with the
    same :class:`DecodeError` kinds. When the native walker is built (``schemas._avro_walk``) and
    the kept fields lead the writer's record, the body is walked as fastavro's full read walks it
    (every string checked as UTF-8, every union and enum index, every block read item by item, no
    byte after the record) building nothing, and only the leading fields are then read; otherwise
    the message is decoded in full and projected.

    Args:
        codec: the framing and the known schemas.
        field_names: top-level fields to keep (those a writer lacks are simply absent).
    """

    def __init__(self, codec: Codec, field_names: tuple[str, ...]) -> None:
        self._codec = codec
        self._fields = tuple(field_names)
        self._walk = walker()
        self._plans: dict[bytes, tuple[Any, Any] | None] = {}

    def _plan(self, writer: SchemaVersion) -> tuple[Any, Any] | None:
        """(walk program, parsed schema of the kept leading fields) for ``writer``, or None."""
        if writer.fingerprint in self._plans:
            return self._plans[writer.fingerprint]
        plan = None
        reader = self._codec.schema
        writer_fields = writer.raw["fields"]
        kept = [field["name"] for field in writer_fields[: len(self._fields)]]
        reader_types = {field["name"]: field["type"] for field in reader.raw["fields"]}
        program = writer.program if self._walk is not None else None
        if (
            program is not None
            and kept == list(self._fields)
            and all(reader_types.get(field["name"]) == field["type"] for field in writer_fields[: len(self._fields)])
            and (writer.fingerprint == reader.fingerprint or not _has_enum(writer.raw))
        ):
            prefix = dict(writer.raw, fields=writer_fields[: len(self._fields)])
            plan = (program, fastavro.parse_schema(prefix, named_schemas={}))
        self._plans[writer.fingerprint] = plan
        return plan

    def decode(self, data: bytes) -> dict[str, Any]:
        """The kept fields of a message.

        Raises:
            DecodeError: exactly the failures of the codec's ``decode``.
        """
        writer, offset = self._codec.split(data)
        plan = self._plan(writer)
        if plan is None:
            record = _read_body(bytes(data), offset, writer, self._codec.schema, writer.name)
            return {name: record[name] for name in self._fields if name in record}
        body = bytes(data)
        try:
            end = self._walk(plan[0], body, offset)  # type: ignore[misc]
        except EOFError as error:
            raise DecodeError(DecodeErrorKind.TRUNCATED, f"body ends early: {bounded_repr(error)}", writer.name) from error
        except Exception as error:  # noqa: BLE001 - what fastavro's read refuses as malformed input
            raise DecodeError(DecodeErrorKind.MALFORMED, f"body is not a valid {writer.name}: {bounded_repr(error)}", writer.name) from error
        if end != len(body):
            raise DecodeError(DecodeErrorKind.MALFORMED, f"{len(body) - end} bytes after the end of the {writer.name} record", writer.name)
        stream = io.BytesIO(body)
        stream.seek(offset)
        return schemaless_reader(stream, plan[1], None)  # type: ignore[no-any-return]


def _has_enum(schema: Any) -> bool:
    if isinstance(schema, list):
        return any(_has_enum(branch) for branch in schema)
    if isinstance(schema, dict):
        return schema.get("type") == "enum" or any(_has_enum(value) for value in schema.values())
    return False


def codec_for(
    record_name: str, *, schema_registry_url: str | None = None, store: SchemaStore | None = None
) -> Codec:
    """The codec for ``record_name``: Confluent framing when a registry URL is given, else single-object.

    Raises:
        SchemaStoreError: ``record_name`` has no schema.
    """
    if schema_registry_url:
        return ConfluentCodec(record_name, _registry_client(schema_registry_url), store)
    return SingleObjectCodec(record_name, store)


@cache
def _registry_client(url: str) -> Any:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient.new_client({"url": url})
