"""Enriched-span messages built from the span's own Avro body plus the encoded enrichment fields.

An EnrichedSpan is a Span followed by six fields (see ``EnrichedSpan.v2.avsc``), and Avro encodes
a record as the concatenation of its fields. So when a span message was written with the newest
Span schema, its body is already the first part of the EnrichedSpan body: the worker appends the
enrichment fields (memoised, since many spans share one answer) instead of re-encoding the span.
An older writer whose fields are a prefix of it (``Span.v1``) gets, between body and enrichment,
the encoded defaults of the fields it lacks: the bytes the slow path would write for them.
Spans from other writer versions take the slow path (decode, merge, encode).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import fastavro
from fastavro import schemaless_writer

from schemas.codec import Codec
from schemas.records import ENRICHMENT_FIELDS

_TAIL_CACHE_LIMIT = 65_536
_UNKNOWN = object()


def _field_shape(field: Mapping[str, Any]) -> tuple[Any, str]:
    """A field's name and type, as canonical JSON (docs and defaults do not change the bytes)."""
    return field.get("name"), json.dumps(_without_docs(field.get("type")), sort_keys=True)


def _without_docs(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {key: _without_docs(value) for key, value in schema.items() if key not in ("doc", "default")}
    if isinstance(schema, list):
        return [_without_docs(item) for item in schema]
    return schema


@dataclass(frozen=True, slots=True)
class Enrichment:
    """The part of an enriched span that reloads decide; hashable, so answers can be compared."""

    versions: tuple[tuple[str, str], ...] = ()
    versions_at_end: tuple[tuple[str, str], ...] = ()
    reload_ids: tuple[tuple[str, str], ...] = ()
    mid_flight_reload_ids: tuple[str, ...] = ()

    def fields(self, revision: int) -> dict[str, Any]:
        """The EnrichedSpan fields (DESIGN.md names) for this answer at ``revision``."""
        return {
            "versions": dict(self.versions),
            "versions_at_end": dict(self.versions_at_end),
            "reload_ids": dict(self.reload_ids),
            "mid_flight": bool(self.mid_flight_reload_ids),
            "mid_flight_reload_ids": list(self.mid_flight_reload_ids),
            "enrichment_revision": revision,
        }

    @classmethod
    def from_fields(cls, record: Mapping[str, Any]) -> Enrichment:
        """The answer carried by an EnrichedSpan record."""
        return cls(
            versions=tuple(sorted(record["versions"].items())),
            versions_at_end=tuple(sorted(record["versions_at_end"].items())),
            reload_ids=tuple(sorted(record["reload_ids"].items())),
            mid_flight_reload_ids=tuple(sorted(record["mid_flight_reload_ids"])),
        )


class _ActiveVersion(Protocol):
    version: str
    reload_id: str


class _Timeline(Protocol):
    def versions_at(self, service_name: str, service_instance_id: str, time_unix_nano: int) -> Mapping[str, _ActiveVersion]: ...

    def reloads_between(self, service_name: str, service_instance_id: str, start_exclusive: int, end_inclusive: int) -> list[Any]: ...


def enrichment_of(timeline: _Timeline, service_name: str, service_instance_id: str, start: int, end: int) -> Enrichment:
    """The answer for a span of (service, instance) running from ``start`` to ``end`` (ns)."""
    at_start = timeline.versions_at(service_name, service_instance_id, start)
    at_end = timeline.versions_at(service_name, service_instance_id, end)
    return Enrichment(
        versions=tuple(sorted((component, active.version) for component, active in at_start.items())),
        versions_at_end=tuple(sorted((component, active.version) for component, active in at_end.items())),
        reload_ids=tuple(sorted((component, active.reload_id) for component, active in at_start.items())),
        mid_flight_reload_ids=tuple(
            sorted(reload.reload_id for reload in timeline.reloads_between(service_name, service_instance_id, start, end))
        ),
    )


class EnrichedEncoder:
    """Turns (span message, answer, revision) into an EnrichedSpan message.

    Args:
        span_codec: decodes and splits incoming span messages.
        enriched_codec: frames outgoing enriched messages (same framing as the deployment's).
    """

    def __init__(self, span_codec: Codec, enriched_codec: Codec) -> None:
        self._span_codec = span_codec
        self._enriched_codec = enriched_codec
        span_fields = span_codec.schema.raw["fields"]
        enriched_fields = enriched_codec.schema.raw["fields"]
        prefix_matches = [_field_shape(field) for field in enriched_fields[: len(span_fields)]] == [
            _field_shape(field) for field in span_fields
        ] and [field["name"] for field in enriched_fields[len(span_fields) :]] == list(ENRICHMENT_FIELDS)
        self._span_fields = span_fields if prefix_matches else None
        self._enriched_raw = enriched_codec.schema.raw
        # writer fingerprint -> bytes between its body and the enrichment tail (None: slow path)
        self._paddings: dict[bytes, bytes | None] = {}
        self._tail_schema = fastavro.parse_schema(
            {
                "type": "record",
                "name": "EnrichmentTail",
                "namespace": enriched_codec.schema.raw.get("namespace", ""),
                "fields": enriched_fields[len(span_fields) :],
            },
            named_schemas={},
        )
        self._enriched_field_names = [field["name"] for field in enriched_fields]
        self._tails: dict[tuple[Enrichment, int], bytes] = {}
        self.fast_path = 0
        self.slow_path = 0

    def _tail(self, enrichment: Enrichment, revision: int) -> bytes:
        key = (enrichment, revision)
        tail = self._tails.get(key)
        if tail is None:
            if len(self._tails) >= _TAIL_CACHE_LIMIT:
                self._tails.clear()
            buffer = io.BytesIO()
            schemaless_writer(buffer, self._tail_schema, enrichment.fields(revision))
            tail = self._tails[key] = buffer.getvalue()
        return tail

    def _padding(self, writer_raw: Mapping[str, Any]) -> bytes | None:
        """The encoded defaults of the newest Span fields a writer lacks, or None when its body is no prefix."""
        span_fields = self._span_fields
        writer_fields = writer_raw.get("fields") if isinstance(writer_raw, Mapping) else None
        if span_fields is None or not isinstance(writer_fields, list) or len(writer_fields) > len(span_fields):
            return None
        # Same names and same types, field by field (a promoted or renamed field re-encodes differently).
        if any(
            _field_shape(mine) != _field_shape(theirs) for mine, theirs in zip(span_fields, writer_fields, strict=False)
        ):
            return None
        missing = span_fields[len(writer_fields) :]
        if not missing:
            return b""
        if any("default" not in field for field in missing):
            return None
        try:
            padding_schema = fastavro.parse_schema(
                {"type": "record", "name": "SpanPadding", "namespace": self._enriched_raw.get("namespace", ""),
                 "fields": missing},
                named_schemas={},
            )
            buffer = io.BytesIO()
            schemaless_writer(buffer, padding_schema, {field["name"]: field["default"] for field in missing})
        except Exception:  # noqa: BLE001 - e.g. a type named in an earlier field: the slow path still works
            return None
        return buffer.getvalue()

    def encode(self, span_message: bytes, enrichment: Enrichment, revision: int) -> bytes:
        """The EnrichedSpan message for a span message that decodes (callers validated it).

        Raises:
            DecodeError: the span message does not decode.
        """
        writer, offset = self._span_codec.split(span_message)
        padding = self._paddings.get(writer.fingerprint, _UNKNOWN)
        if padding is _UNKNOWN:
            padding = self._paddings[writer.fingerprint] = self._padding(writer.raw)
        if padding is not None:
            self.fast_path += 1
            return self._enriched_codec.frame(span_message[offset:] + padding + self._tail(enrichment, revision))
        self.slow_path += 1
        merged = {**self._span_codec.decode(span_message), **enrichment.fields(revision)}
        # Fields the EnrichedSpan schema does not know (a newer Span) are not carried.
        return self._enriched_codec.encode({name: merged[name] for name in self._enriched_field_names if name in merged})
