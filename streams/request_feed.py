"""The request feed (``reloadtrace.requests-by-service``): what the enricher tells the detector, and how it reads it.

Three message shapes, JSON, keyed by service (watermarks go to every partition):

* ``{"service_name": S, "requests": [[instance, start_ns, end_ns, is_error, kind], ...]}`` —
  first answers of S's spans (at most :data:`ROWS_PER_MESSAGE` rows a message);
* ``{"service_name": S, "reload": {ReloadEvent}}`` — a reload the enricher applied;
* ``{"watermarks": {"partitions": N, "times": {"P": W, ...}}}`` — span partition P (of N)
  vouches that every request of P that started before W, and every reload effective before W,
  is in the messages before this one on this feed partition.

A writer publishes rows and reloads before the watermark that covers them, on one producer, so
the per-partition order of Kafka keeps that promise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from schemas.errors import InvalidRecordError
from schemas.records import ReloadEvent

ROWS_PER_MESSAGE = 5_000
"""Request rows per message (keeps a message near 400 kB, far below the broker's 1 MB)."""
_INT64 = 2**63


class RequestRow(NamedTuple):
    """One request (a span's first answer) as the detector needs it."""

    service_instance_id: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    is_error: bool
    kind: str


@dataclass(frozen=True, slots=True)
class Requests:
    service_name: str
    rows: list[RequestRow]


@dataclass(frozen=True, slots=True)
class AppliedReload:
    reload: ReloadEvent


@dataclass(frozen=True, slots=True)
class Watermarks:
    """Span partition P (of ``partitions``) has sent everything that started before ``times[P]``."""

    partitions: int
    times: dict[int, int]


FeedMessage = Requests | AppliedReload | Watermarks


def encode_requests(service_name: str, rows: Sequence[RequestRow], *, max_bytes: int = 1_000_000) -> tuple[list[bytes], int]:
    """The messages carrying ``rows`` of a service, each at most ``max_bytes``, and how many rows could not fit.

    Rows go :data:`ROWS_PER_MESSAGE` a message, halved while a message is too large; a row too
    large alone (names of hundreds of kB) is left out and counted.
    """
    messages: list[bytes] = []
    skipped = 0
    pending = [rows[first : first + ROWS_PER_MESSAGE] for first in range(0, len(rows), ROWS_PER_MESSAGE)]
    pending.reverse()
    while pending:
        chunk = pending.pop()
        value = orjson.dumps({"service_name": service_name, "requests": chunk}, option=orjson.OPT_PASSTHROUGH_SUBCLASS, default=_as_list)
        if len(value) <= max_bytes:
            messages.append(value)
        elif len(chunk) == 1:
            skipped += 1
        else:
            middle = len(chunk) // 2
            pending += [chunk[middle:], chunk[:middle]]
    return messages, skipped


def _as_list(value: object) -> list[object]:
    if isinstance(value, tuple):  # a RequestRow
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_reload(reload: ReloadEvent) -> bytes:
    return orjson.dumps({"service_name": reload.service_name, "reload": reload.to_dict()})


def encode_watermarks(partitions: int, times: dict[int, int]) -> bytes:
    return orjson.dumps({"watermarks": {"partitions": partitions, "times": {str(p): t for p, t in times.items()}}})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64


def parse(value: bytes | None) -> FeedMessage:
    """One feed message.

    Raises:
        InvalidRecordError: not JSON, not one of the three shapes, or a malformed row.
    """
    if value is None:
        raise InvalidRecordError("empty message (tombstone)")
    try:
        message = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise InvalidRecordError(f"not JSON: {error}") from error
    if not isinstance(message, dict):
        raise InvalidRecordError("a feed message is a JSON object")
    if "watermarks" in message:
        return _parse_watermarks(message["watermarks"])
    service = message.get("service_name")
    if not isinstance(service, str) or not service:
        raise InvalidRecordError("a message needs a non-empty service_name", "service_name")
    if "requests" in message:
        return Requests(service, _parse_rows(message["requests"]))
    if "reload" in message:
        if not isinstance(message["reload"], dict):
            raise InvalidRecordError("reload must be a record", "reload")
        reload = ReloadEvent.from_dict(message["reload"])
        if reload.service_name != service:
            raise InvalidRecordError("the reload's service differs from the message's", "service_name")
        return AppliedReload(reload)
    raise InvalidRecordError("a message holds requests, a reload or a watermark")


def _parse_rows(rows: object) -> list[RequestRow]:
    if not isinstance(rows, list):
        raise InvalidRecordError("requests must be a list", "requests")
    parsed = []
    for row in rows:
        if (
            not isinstance(row, list)
            or len(row) != 5
            or not isinstance(row[0], str)
            or not _is_int(row[1])
            or not _is_int(row[2])
            or not isinstance(row[3], bool)
            or not isinstance(row[4], str)
            or row[2] < row[1]
        ):
            raise InvalidRecordError("a request row is [instance, start_ns, end_ns >= start, is_error, kind]", "requests")
        parsed.append(RequestRow(row[0], row[1], row[2], row[3], row[4]))
    return parsed


_MAX_PARTITIONS = 100_000


def _parse_watermarks(document: object) -> Watermarks:
    shape = "watermarks are {partitions: N, times: {P: time_unix_nano}} with 0 <= P < N"
    if not isinstance(document, dict) or not _is_int(document.get("partitions")) or not isinstance(document.get("times"), dict):
        raise InvalidRecordError(shape, "watermarks")
    partitions = document["partitions"]
    if not 0 < partitions <= _MAX_PARTITIONS:
        raise InvalidRecordError(shape, "watermarks")
    times = {}
    for text, value in document["times"].items():
        if not (text.isascii() and text.isdigit() and len(text) <= 6) or not _is_int(value) or int(text) >= partitions:
            raise InvalidRecordError(shape, "watermarks")
        times[int(text)] = value
    return Watermarks(partitions, times)
