"""OTLP trace files, in the two forms the Collector's fileexporter writes.

* ``.otlp.jsonl`` — one OTLP/JSON ``ExportTraceServiceRequest`` per line (``format: json``).
* ``.otlp.pb`` — binary ``ExportTraceServiceRequest`` messages, each after its length as a 4-byte
  big-endian unsigned integer (``format: proto``).

Reading yields one :class:`OtlpFileMessage` per message, with its position (1-based line number or
message number): the decoded spans and reloads (see :mod:`schemas.otlp`), or why the message did not
parse. A file that cannot be opened, or a ``.otlp.pb`` whose length prefixes run past its end,
raises :class:`~schemas.files.RecordFileError` (after the messages before the damage).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from schemas.errors import DecodeError
from schemas.files import RecordFileError
from schemas.otlp import DEFAULT_MAX_MESSAGE_BYTES, OtlpSpans, decode_otlp_json, decode_otlp_proto, otlp_json_bytes

OTLP_JSONL = ".otlp.jsonl"
OTLP_PB = ".otlp.pb"
OTLP_SUFFIXES = (OTLP_JSONL, OTLP_PB)
_LENGTH_BYTES = 4


def otlp_suffix(path: Path | str) -> str | None:
    """``.otlp.jsonl`` or ``.otlp.pb`` when ``path`` is an OTLP file by its name, else None."""
    name = Path(path).name.lower()
    return next((suffix for suffix in OTLP_SUFFIXES if name.endswith(suffix)), None)


@dataclass(frozen=True, slots=True)
class OtlpFileMessage:
    """One message of an OTLP file: ``decoded`` when it parsed, else ``error`` says why."""

    position: int
    decoded: OtlpSpans | None = None
    error: str | None = None


def read_otlp_messages(
    path: Path | str, handle: BinaryIO | None = None, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> Iterator[OtlpFileMessage]:
    """Every message of an OTLP file, in file order (``handle``: an open binary file of ``path``).

    Raises:
        RecordFileError: not an OTLP file name, cannot be opened, or a length-prefixed file is cut.
    """
    path = Path(path)
    suffix = otlp_suffix(path)
    if suffix is None:
        raise RecordFileError(f"{path}: not an OTLP file; name it *{OTLP_JSONL} or *{OTLP_PB}")
    if handle is None:
        try:
            handle = path.open("rb")
        except OSError as error:
            raise RecordFileError(f"{path}: cannot open: {error.strerror or error}") from error
        with handle:
            yield from _messages(path, handle, suffix, max_message_bytes)
    else:
        yield from _messages(path, handle, suffix, max_message_bytes)


def _messages(path: Path, handle: BinaryIO, suffix: str, max_message_bytes: int) -> Iterator[OtlpFileMessage]:
    if suffix == OTLP_JSONL:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield OtlpFileMessage(number, decode_otlp_json(line, max_message_bytes=max_message_bytes))
            except DecodeError as error:
                yield OtlpFileMessage(number, error=str(error))
        return
    number = 0
    while header := handle.read(_LENGTH_BYTES):
        number += 1
        length = int.from_bytes(header, "big")
        if len(header) < _LENGTH_BYTES or length > max_message_bytes:
            raise RecordFileError(f"{path}: message {number} has a bad length prefix ({header.hex()})")
        body = handle.read(length)
        if len(body) < length:
            raise RecordFileError(f"{path}: message {number} is cut: {len(body)} of {length} bytes")
        try:
            yield OtlpFileMessage(number, decode_otlp_proto(body, max_message_bytes=max_message_bytes))
        except DecodeError as error:
            yield OtlpFileMessage(number, error=str(error))


def write_otlp_file(path: Path | str, requests: Iterable[ExportTraceServiceRequest | bytes]) -> int:
    """Write requests (messages or their serialized bytes) as ``path``'s form says; returns how many."""
    path = Path(path)
    suffix = otlp_suffix(path)
    if suffix is None:
        raise RecordFileError(f"{path}: not an OTLP file; name it *{OTLP_JSONL} or *{OTLP_PB}")
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("wb") as handle:
        for request in requests:
            if not isinstance(request, ExportTraceServiceRequest):
                request = ExportTraceServiceRequest.FromString(request)
            message = request
            if suffix == OTLP_JSONL:
                handle.write(otlp_json_bytes(message) + b"\n")
            else:
                body = message.SerializeToString()
                handle.write(len(body).to_bytes(_LENGTH_BYTES, "big") + body)
            count += 1
    return count
