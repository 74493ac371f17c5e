"""Enriched-span messages built from the span's own Avro body plus the encoded enrichment fields.

An EnrichedSpan is a Span followed by six fields (see ``EnrichedSpan.v2.avsc``), and Avro encodes
a record as the concatenation of its fields. So when a span message was written with the newest
Span schema, its body is already the first part of the EnrichedSpan body: the worker appends the
encoded answer (:meth:`EnrichedEncoder.encoded_enrichment`, kept with the answer by
:class:`streams.enrichment.SegmentCache`) and the revision instead of re-encoding the span.
An older writer whose fields are a prefix of it (``Span.v1``) gets, between body and enrichment,
the encoded defaults of the fields it lacks: the bytes the slow path would write for them.
Spans from other writer versions take the slow path (decode, merge, encode).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import fastavro
from fastavro import schemaless_writer

from schemas.codec import Codec
from schemas.records import ENRICHMENT_FIELDS
from streams.enrichment import Enrichment

_UNKNOWN = object()
_REVISION_FIELD = ENRICHMENT_FIELDS[-1]
_SMALL_REVISIONS = 64


def _field_shape(field: Mapping[str, Any]) -> tuple[Any, str]:
    """A field's name and type, as canonical JSON (docs and defaults do not change the bytes)."""
    return field.get("name"), json.dumps(_without_docs(field.get("type")), sort_keys=True)


def _without_docs(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {key: _without_docs(value) for key, value in schema.items() if key not in ("doc", "default")}
    if isinstance(schema, list):
        return [_without_docs(item) for item in schema]
    return schema


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
        tail_fields = enriched_fields[len(span_fields) :]
        # The fast path appends the answer's fields, then the revision (the last field, a long) on its own.
        prefix_matches = (
            [_field_shape(field) for field in enriched_fields[: len(span_fields)]]
            == [_field_shape(field) for field in span_fields]
            and [field["name"] for field in tail_fields] == list(ENRICHMENT_FIELDS)
            and tail_fields[-1]["type"] == "long"
        )
        self._span_fields = span_fields if prefix_matches else None
        self._enriched_raw = enriched_codec.schema.raw
        # writer fingerprint -> bytes between its body and the enrichment tail (None: slow path)
        self._paddings: dict[bytes, bytes | None] = {}
        self._answer_schema = fastavro.parse_schema(
            {
                "type": "record",
                "name": "EnrichmentTail",
                "namespace": enriched_codec.schema.raw.get("namespace", ""),
                "fields": [field for field in tail_fields if field["name"] != _REVISION_FIELD],
            },
            named_schemas={},
        )
        self._revisions = [_long(revision) for revision in range(_SMALL_REVISIONS)]
        self._enriched_field_names = [field["name"] for field in enriched_fields]
        self.fast_path = 0
        self.slow_path = 0

    def encoded_enrichment(self, enrichment: Enrichment) -> bytes:
        """The answer's EnrichedSpan fields but the revision, as Avro bytes (worth caching with the answer)."""
        buffer = io.BytesIO()
        schemaless_writer(buffer, self._answer_schema, enrichment.fields(0))
        return buffer.getvalue()

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

    def encode(
        self, span_message: bytes, enrichment: Enrichment, revision: int, encoded_enrichment: bytes | None = None
    ) -> bytes:
        """The EnrichedSpan message for a span message that decodes (callers validated it).

        Args:
            encoded_enrichment: :meth:`encoded_enrichment` of ``enrichment``, when the caller keeps it.

        Raises:
            DecodeError: the span message does not decode.
        """
        writer, offset = self._span_codec.split(span_message)
        padding = self._paddings.get(writer.fingerprint, _UNKNOWN)
        if padding is _UNKNOWN:
            padding = self._paddings[writer.fingerprint] = self._padding(writer.raw)
        if padding is not None:
            self.fast_path += 1
            if encoded_enrichment is None:
                encoded_enrichment = self.encoded_enrichment(enrichment)
            encoded_revision = self._revisions[revision] if revision < _SMALL_REVISIONS else _long(revision)
            return self._enriched_codec.frame(span_message[offset:] + padding + encoded_enrichment + encoded_revision)
        self.slow_path += 1
        merged = {**self._span_codec.decode(span_message), **enrichment.fields(revision)}
        # Fields the EnrichedSpan schema does not know (a newer Span) are not carried.
        return self._enriched_codec.encode({name: merged[name] for name in self._enriched_field_names if name in merged})


def _long(value: int) -> bytes:
    """An Avro long: zig-zag, then base-128 varint, least significant group first."""
    number = (value << 1) ^ (value >> 63)
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)
