"""Hypothesis strategies for valid contract records, shared by the property tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from schemas.records import RELOAD_STATUSES, SPAN_KINDS, STATUS_CODES
from schemas.reload_span import RELOAD_ID

HEX = "0123456789abcdef"
BASE_TIME = 1_763_900_000_000_000_000  # 2025-11-23, nanoseconds

trace_ids = st.text(HEX, min_size=32, max_size=32).filter(lambda s: s != "0" * 32)
span_ids = st.text(HEX, min_size=16, max_size=16).filter(lambda s: s != "0" * 16)
names = st.text(min_size=1, max_size=40)
keys = st.text(min_size=1, max_size=30)
attribute_values = st.one_of(
    st.text(max_size=50),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
# An ordinary span: the reload span convention makes any span carrying ``reload.id`` a reload event.
attribute_maps = st.dictionaries(keys.filter(lambda key: key != RELOAD_ID), attribute_values, max_size=8)
timestamps = st.integers(min_value=0, max_value=2**62)


counts = st.integers(min_value=0, max_value=2**32 - 1)
trace_states = st.sampled_from(["", "rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"])
span_events = st.fixed_dictionaries(
    {
        "time_unix_nano": timestamps,
        "name": st.text(max_size=20),
        "attributes": attribute_maps,
        "dropped_attributes_count": counts,
    }
)
span_links = st.fixed_dictionaries(
    {
        "trace_id": trace_ids,
        "span_id": span_ids,
        "trace_state": trace_states,
        "attributes": attribute_maps,
        "dropped_attributes_count": counts,
    }
)


@st.composite
def lossless_fields(draw: st.DrawFn) -> dict[str, Any]:
    """The ``Span.v2`` fields: events, links, trace_state, scope, dropped counts."""
    return {
        "trace_state": draw(trace_states),
        "scope_name": draw(st.text(max_size=20)),
        "scope_version": draw(st.text(max_size=10)),
        "events": draw(st.lists(span_events, max_size=3)),
        "links": draw(st.lists(span_links, max_size=2)),
        "dropped_attributes_count": draw(counts),
        "dropped_events_count": draw(counts),
        "dropped_links_count": draw(counts),
    }


@st.composite
def spans(draw: st.DrawFn) -> dict[str, Any]:
    """A ``Span.v2`` record with every field (so a decode gives it back whole)."""
    return {**draw(spans_v1()), **draw(lossless_fields())}


@st.composite
def spans_v1(draw: st.DrawFn) -> dict[str, Any]:
    """A record with the ``Span.v1`` fields only (what an old producer writes)."""
    start = draw(timestamps)
    return {
        "trace_id": draw(trace_ids),
        "span_id": draw(span_ids),
        "parent_span_id": draw(st.none() | span_ids),
        "name": draw(st.text(max_size=40)),
        "kind": draw(st.sampled_from(SPAN_KINDS)),
        "service_name": draw(names),
        "service_instance_id": draw(st.text(max_size=20)),
        "start_time_unix_nano": start,
        "end_time_unix_nano": start + draw(st.integers(min_value=0, max_value=10**12)),
        "status_code": draw(st.sampled_from(STATUS_CODES)),
        "status_message": draw(st.none() | st.text(max_size=40)),
        "attributes": draw(attribute_maps),
        "resource_attributes": draw(st.none() | attribute_maps),
    }


@st.composite
def reload_events(draw: st.DrawFn) -> dict[str, Any]:
    requested = draw(timestamps)
    return {
        "reload_id": draw(names),
        "service_name": draw(names),
        "service_instance_id": draw(st.none() | names),
        "component": draw(st.sampled_from(["config", "model", "routing_rules", "feature_flags"]) | names),
        "old_version": draw(st.none() | names),
        "new_version": draw(names),
        "requested_time_unix_nano": requested,
        "effective_time_unix_nano": requested + draw(st.integers(min_value=0, max_value=10**10)),
        "status": draw(st.sampled_from(RELOAD_STATUSES)),
        "source": draw(st.text(max_size=20)),
        "trace_id": draw(st.none() | trace_ids),
        "span_id": draw(st.none() | span_ids),
        "model_context": draw(st.dictionaries(keys, st.text(max_size=30), max_size=5)),
        "changed_keys": draw(st.lists(keys, max_size=5)),
    }


def enriched_spans_v1() -> st.SearchStrategy[dict[str, Any]]:
    """A record with the ``EnrichedSpan.v1`` fields only."""
    return enriched_spans(spans_v1())


@st.composite
def enriched_spans(draw: st.DrawFn, span_records: st.SearchStrategy[dict[str, Any]] | None = None) -> dict[str, Any]:
    versions = st.dictionaries(keys, names, max_size=4)
    return {
        **draw(span_records if span_records is not None else spans()),
        "versions": draw(versions),
        "versions_at_end": draw(versions),
        "reload_ids": draw(versions),
        "mid_flight": draw(st.booleans()),
        "mid_flight_reload_ids": sorted(draw(st.lists(names, max_size=3))),
        "enrichment_revision": draw(st.integers(min_value=0, max_value=1000)),
    }


@st.composite
def anomalies(draw: st.DrawFn) -> dict[str, Any]:
    finite = st.floats(allow_nan=False, allow_infinity=False)
    return {
        "anomaly_id": draw(names),
        "reload_id": draw(names),
        "service_name": draw(names),
        "component": draw(names),
        "old_version": draw(st.none() | names),
        "new_version": draw(names),
        "metric": draw(st.sampled_from(["latency", "error_rate", "reload_duration", "reload_failed"])),
        "baseline_value": draw(finite),
        "observed_value": draw(finite),
        "p_value": draw(st.floats(min_value=0, max_value=1)),
        "baseline_count": draw(st.integers(min_value=0, max_value=10**9)),
        "observed_count": draw(st.integers(min_value=0, max_value=10**9)),
        "detected_time_unix_nano": draw(timestamps),
        "severity": draw(st.sampled_from(["INFO", "WARNING", "CRITICAL"])),
    }


@st.composite
def dead_letters(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "source_topic": draw(names),
        "source_partition": draw(st.integers(min_value=-1, max_value=2**31 - 1)),
        "source_offset": draw(st.integers(min_value=-1, max_value=2**63 - 1)),
        "raw_key": draw(st.none() | st.binary(max_size=40)),
        "raw_value": draw(st.none() | st.binary(max_size=200)),
        "error_kind": draw(names),
        "error": draw(st.text(max_size=100)),
        "stage": draw(st.sampled_from(["decode", "validate", "enrich", "sink"])),
        "dead_lettered_time_unix_nano": draw(timestamps),
        "raw_key_length": draw(st.none() | st.integers(min_value=0, max_value=2**31)),
        "raw_value_length": draw(st.none() | st.integers(min_value=0, max_value=2**31)),
        "raw_value_sha256": draw(st.none() | st.text(HEX, min_size=64, max_size=64)),
        "truncated": draw(st.booleans()),
        "source_index": draw(st.integers(min_value=-1, max_value=2**31 - 1)),
    }


@st.composite
def reload_verdicts(draw: st.DrawFn) -> dict[str, Any]:
    finite = st.floats(allow_nan=False, allow_infinity=False)
    severities = st.none() | st.sampled_from(["INFO", "WARNING", "CRITICAL"])
    metric = st.fixed_dictionaries(
        {
            "metric": st.sampled_from(["latency", "error_rate", "reload_duration", "reload_failed"]),
            "severity": severities,
            "emitted_severity": severities,
            "baseline_value": finite,
            "observed_value": finite,
            "p_value": st.floats(min_value=0, max_value=1),
            "baseline_count": st.integers(min_value=0, max_value=10**9),
            "observed_count": st.integers(min_value=0, max_value=10**9),
        }
    )
    total = draw(st.integers(min_value=1, max_value=12))
    index = draw(st.integers(min_value=0, max_value=total - 1))
    return {
        "reload_id": draw(names),
        "service_name": draw(names),
        "service_instance_id": draw(st.none() | names),
        "component": draw(names),
        "old_version": draw(st.none() | names),
        "new_version": draw(names),
        "status": draw(st.sampled_from(RELOAD_STATUSES)),
        "requested_time_unix_nano": draw(timestamps),
        "effective_time_unix_nano": draw(timestamps),
        "look_time_unix_nano": draw(timestamps),
        "look_index": index,
        "looks_total": total,
        "final": index == total - 1,
        "window_end_unix_nano": draw(timestamps),
        "metrics": draw(st.lists(metric, max_size=4)),
    }


RECORDS = {
    "Span": spans,
    "ReloadEvent": reload_events,
    "EnrichedSpan": enriched_spans,
    "Anomaly": anomalies,
    "DeadLetter": dead_letters,
    "ReloadVerdict": reload_verdicts,
}
