"""Enriched-span messages built from the span's own Avro body plus the encoded enrichment fields.

An EnrichedSpan is a Span followed by six fields (see ``EnrichedSpan.v1.avsc``), and Avro encodes
a record as the concatenation of its fields. So when a span message was written with the newest
Span schema, its body is already the first part of the EnrichedSpan body: the worker appends the
enrichment fields (memoised, since many spans share one answer) instead of re-encoding the span.
Spans from other writer versions take the slow path (decode, merge, encode).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import fastavro
from fastavro import schemaless_writer

from schemas.codec import Codec
from schemas.records import ENRICHMENT_FIELDS

_TAIL_CACHE_LIMIT = 65_536


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
        prefix_matches = [field["name"] for field in enriched_fields[: len(span_fields)]] == [
            field["name"] for field in span_fields
        ] and [field["name"] for field in enriched_fields[len(span_fields) :]] == list(ENRICHMENT_FIELDS)
        self._fast_fingerprint = span_codec.schema.fingerprint if prefix_matches else None
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

    def encode(self, span_message: bytes, enrichment: Enrichment, revision: int) -> bytes:
        """The EnrichedSpan message for a span message that decodes (callers validated it).

        Raises:
            DecodeError: the span message does not decode.
        """
        writer, offset = self._span_codec.split(span_message)
        if writer.fingerprint == self._fast_fingerprint:
            self.fast_path += 1
            return self._enriched_codec.frame(span_message[offset:] + self._tail(enrichment, revision))
        self.slow_path += 1
        merged = {**self._span_codec.decode(span_message), **enrichment.fields(revision)}
        # Fields the EnrichedSpan schema does not know (a newer Span) are not carried.
        return self._enriched_codec.encode({name: merged[name] for name in self._enriched_field_names if name in merged})
