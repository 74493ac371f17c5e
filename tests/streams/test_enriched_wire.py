"""Enriched messages built by appending to the span body decode exactly like fully encoded ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import AVRO_DIR, SchemaStore, SingleObjectCodec, codec_for
from schemas.records import lossless_defaults
from streams.enriched_wire import EnrichedEncoder
from streams.enrichment import Enrichment
from tests.strategies import spans, spans_v1

names = st.text(min_size=1, max_size=12)
enrichments = st.builds(
    Enrichment,
    versions=st.dictionaries(names, names, max_size=4).map(lambda d: tuple(sorted(d.items()))),
    versions_at_end=st.dictionaries(names, names, max_size=4).map(lambda d: tuple(sorted(d.items()))),
    reload_ids=st.dictionaries(names, names, max_size=4).map(lambda d: tuple(sorted(d.items()))),
    mid_flight_reload_ids=st.lists(names, max_size=3).map(lambda ids: tuple(sorted(ids))),
)


@settings(max_examples=200)
@given(span=spans(), enrichment=enrichments, revision=st.integers(0, 10**6),
       registry=st.sampled_from([None, "mock://reloadtrace-wire"]))
def test_appended_body_equals_the_fully_encoded_record(span: dict, enrichment: Enrichment, revision: int,
                                                       registry: str | None) -> None:
    span_codec = codec_for("Span", schema_registry_url=registry)
    enriched_codec = codec_for("EnrichedSpan", schema_registry_url=registry)
    encoder = EnrichedEncoder(span_codec, enriched_codec)
    message = encoder.encode(span_codec.encode(span), enrichment, revision)
    expected = {**span, **enrichment.fields(revision)}
    assert enriched_codec.decode(message) == expected
    assert message == enriched_codec.encode(expected)
    assert Enrichment.from_fields(expected) == enrichment
    assert encoder.fast_path == 1
    # The encoded answer a SegmentCache keeps gives the same bytes.
    cached = encoder.encoded_enrichment(enrichment)
    assert encoder.encode(span_codec.encode(span), enrichment, revision, cached) == message


SPAN_V1 = {
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "parent_span_id": None,
    "name": "GET /", "kind": "SERVER", "service_name": "gw", "service_instance_id": "gw-1",
    "start_time_unix_nano": 1, "end_time_unix_nano": 2, "status_code": "OK", "status_message": None,
    "attributes": {"http.route": "/"}, "resource_attributes": None,
}


def _v1_only_store(tmp_path: Path) -> SchemaStore:
    directory = tmp_path / "v1"
    directory.mkdir()
    for name in ("Span", "EnrichedSpan"):
        shutil.copy(AVRO_DIR / f"{name}.v1.avsc", directory)
    return SchemaStore.from_directory(directory)


def test_spans_from_an_older_writer_take_the_slow_path(tmp_path: Path) -> None:
    # The deployment knows Span v1 and a v2 with one more field, but an EnrichedSpan without it:
    # an old producer's v1 body is no prefix the enriched schema continues, so it is re-encoded.
    for name in ("Span", "EnrichedSpan"):
        shutil.copy(AVRO_DIR / f"{name}.v1.avsc", tmp_path)
    span_v2 = json.loads((AVRO_DIR / "Span.v1.avsc").read_text())
    span_v2["fields"].append({"name": "sampling_priority", "type": "int", "default": 1, "doc": "test"})
    (tmp_path / "Span.v2.avsc").write_text(json.dumps(span_v2))
    store = SchemaStore.from_directory(tmp_path)
    old_span_codec = SingleObjectCodec("Span", _v1_only_store(tmp_path))
    encoder = EnrichedEncoder(SingleObjectCodec("Span", store), SingleObjectCodec("EnrichedSpan", store))
    enrichment = Enrichment(versions=(("model", "v2"),), reload_ids=(("model", "r1"),))
    message = encoder.encode(old_span_codec.encode(SPAN_V1), enrichment, 3)
    assert encoder.slow_path == 1 and encoder.fast_path == 0
    decoded = SingleObjectCodec("EnrichedSpan", store).decode(message)
    assert decoded == {**SPAN_V1, **enrichment.fields(3)}


@settings(max_examples=100)
@given(span=spans_v1(), enrichment=enrichments, revision=st.integers(0, 10**6),
       registry=st.sampled_from([None, "mock://reloadtrace-wire-v1"]))
def test_a_v1_writer_takes_the_fast_path_with_the_v2_defaults_in_between(
    tmp_path_factory: pytest.TempPathFactory, span: dict, enrichment: Enrichment, revision: int, registry: str | None
) -> None:
    # A gateway still on Span.v1 beside the v2 worker: its body + the encoded v2 defaults + the tail
    # is byte for byte what decoding, merging and encoding with EnrichedSpan.v2 gives.
    old_codec = (codec_for("Span", schema_registry_url=registry, store=_v1_only_store(tmp_path_factory.mktemp("s")))
                 if registry else SingleObjectCodec("Span", _v1_only_store(tmp_path_factory.mktemp("s"))))
    span_codec = codec_for("Span", schema_registry_url=registry)
    enriched_codec = codec_for("EnrichedSpan", schema_registry_url=registry)
    encoder = EnrichedEncoder(span_codec, enriched_codec)
    message = encoder.encode(old_codec.encode(span), enrichment, revision)
    assert encoder.fast_path == 1 and encoder.slow_path == 0
    expected = {**span, **lossless_defaults(), **enrichment.fields(revision)}
    assert enriched_codec.decode(message) == expected
    assert message == enriched_codec.encode(expected)
