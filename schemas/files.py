"""Contract records in files: JSON Lines (``.jsonl``) or Avro object container files (``.avro``).

The format follows the file extension. JSON lines use the Avro field names; attribute values keep
their JSON type (string, boolean, integer, float); JSON has no infinities or NaN, so such
floats are written as ``null`` — use ``.avro`` to keep them. Avro container files embed their writer
schema, so they stay readable when the contract gains fields.

Reading yields :class:`FileRecord` items: a record, or the reason the line could not be parsed,
always with its position (1-based line number for JSONL, 1-based record number for Avro) so
callers can report exactly what they skipped. Unreadable files raise :class:`RecordFileError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import orjson

from schemas.codec import SchemaStore, default_store
from schemas.errors import ReloadtraceError
from schemas.text import bounded_repr, bounded_text

SUFFIXES = (".jsonl", ".avro")


class RecordFileError(ReloadtraceError):
    """A record file is missing, has an unknown extension, or is corrupt beyond a single line."""


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One item of a record file: ``record`` when it parsed, else ``error`` says why."""

    position: int
    record: dict[str, Any] | None = None
    error: str | None = None


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise RecordFileError(f"{path}: unknown extension {suffix!r}; use .jsonl or .avro")
    return suffix


def read_records(path: Path | str) -> Iterator[FileRecord]:
    """Yield every record of a ``.jsonl`` or ``.avro`` file in file order.

    Raises:
        RecordFileError: the file cannot be opened, or an Avro file is corrupt (a bad line of a
            JSONL file is yielded as an error item instead).
    """
    path = Path(path)
    suffix = _suffix(path)
    try:
        handle = path.open("rb")
    except OSError as error:
        raise RecordFileError(f"{path}: cannot open: {error.strerror or error}") from error
    with handle:
        if suffix == ".jsonl":
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as error:
                    yield FileRecord(number, error=f"not JSON: {bounded_text(str(error), 300)}")
                    continue
                if not isinstance(record, dict):
                    yield FileRecord(number, error=f"expected a JSON object, got {type(record).__name__}")
                    continue
                yield FileRecord(number, record=record)
            return
        try:
            reader = fastavro.reader(handle)
            for number, record in enumerate(reader, start=1):
                yield FileRecord(number, record=record)
        except Exception as error:  # noqa: BLE001 - fastavro raises many types on corrupt containers
            raise RecordFileError(f"{path}: not a readable Avro container file: {bounded_repr(error)}") from error


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


class RecordWriter:
    """Append records of one type to a ``.jsonl`` or ``.avro`` file (truncating it first).

    Use as a context manager; the Avro writer buffers blocks and flushes on close.
    """

    def __init__(self, path: Path | str, record_name: str, store: SchemaStore | None = None) -> None:
        self.path = Path(path)
        self._suffix = _suffix(self.path)
        self._schema = (store or default_store()).latest(record_name).parsed
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("wb")
        self._avro = fastavro.write.Writer(self._handle, self._schema, codec="deflate") if self._suffix == ".avro" else None
        self.count = 0

    def write(self, record: Mapping[str, Any]) -> None:
        if self._avro is not None:
            self._avro.write(record)
        else:
            self._handle.write(orjson.dumps(record, default=_json_default, option=orjson.OPT_APPEND_NEWLINE))
        self.count += 1

    def write_all(self, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            self.write(record)

    def close(self) -> None:
        if self._avro is not None:
            self._avro.flush()
        self._handle.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_records(path: Path | str, record_name: str, records: Iterable[Mapping[str, Any]]) -> int:
    """Write ``records`` to ``path`` (format by extension); returns how many were written."""
    with RecordWriter(path, record_name) as writer:
        writer.write_all(records)
        return writer.count
