"""Enrichment against a brute-force oracle: spans straddling reloads, memoised answers, any arrival order."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import ReloadEvent
from streams.engine import EnrichmentEngine, ReloadArrival, SpanArrival, restore_partition
from streams.enrichment import Enrichment, SegmentCache, enrich, enrichment_of
from streams.timeline import VersionTimeline
from tests.streams import test_engine as engine_tests
from tests.streams.test_timeline import INSTANCES, SERVICES, oracle_between, oracle_versions, reload_sets


@st.composite
def span_records(draw: st.DrawFn) -> dict:
    start = draw(st.integers(0, 22))
    return {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "parent_span_id": None,
        "name": "POST /v1/chat", "kind": "SERVER", "service_name": draw(st.sampled_from(SERVICES)),
        "service_instance_id": draw(st.sampled_from(INSTANCES)), "start_time_unix_nano": start,
        "end_time_unix_nano": start + draw(st.sampled_from([0, 1, 3, 8, 25])), "status_code": "OK",
        "status_message": None, "attributes": {"http.status_code": 200}, "resource_attributes": None,
    }


def oracle_enriched(reloads: list[ReloadEvent], span: dict, revision: int = 0) -> dict:
    service, instance = span["service_name"], span["service_instance_id"]
    start, end = span["start_time_unix_nano"], span["end_time_unix_nano"]
    at_start = oracle_versions(reloads, service, instance, start)
    at_end = oracle_versions(reloads, service, instance, end)
    mid = oracle_between(reloads, service, instance, start, end)
    return {
        **span,
        "versions": {c: v[0] for c, v in at_start.items()},
        "versions_at_end": {c: v[0] for c, v in at_end.items()},
        "reload_ids": {c: v[1] for c, v in at_start.items()},
        "mid_flight": bool(mid),
        "mid_flight_reload_ids": mid,
        "enrichment_revision": revision,
    }


@settings(max_examples=300)
@given(reloads=reload_sets(), spans=st.lists(span_records(), min_size=1, max_size=15), revision=st.integers(0, 5),
       order=st.randoms(use_true_random=False))
def test_enrich_equals_the_oracle(reloads, spans, revision, order) -> None:
    shuffled = list(reloads)
    order.shuffle(shuffled)
    timeline = VersionTimeline()
    for reload in shuffled:
        timeline.add(reload)
    for span in spans:
        enriched = enrich(span, timeline, revision)
        assert enriched == oracle_enriched(reloads, span, revision)
        assert list(enriched)[: len(span)] == list(span)  # span fields first, untouched


@settings(max_examples=200)
@given(reloads=reload_sets(), spans=st.lists(span_records(), min_size=1, max_size=30), data=st.data())
def test_memoised_answers_equal_fresh_ones_while_reloads_keep_arriving(reloads, spans, data) -> None:
    """Both streams in any interleaving: the memo is never stale after a reload is added."""
    events = [("reload", r) for r in reloads] + [("span", s) for s in spans]
    data.draw(st.randoms(use_true_random=False)).shuffle(events)
    timeline = VersionTimeline()
    answers = SegmentCache(derive=lambda answer: answer.fields(0))
    for kind, item in events:
        if kind == "reload":
            timeline.add(item)
            continue
        args = (item["service_name"], item["service_instance_id"], item["start_time_unix_nano"], item["end_time_unix_nano"])
        fresh = enrichment_of(timeline, *args)
        assert answers(timeline, *args) == fresh
        assert answers.derived(timeline, *args) == fresh.fields(0)
    for span in spans:  # everything known: the memo agrees with the oracle
        args = (span["service_name"], span["service_instance_id"], span["start_time_unix_nano"], span["end_time_unix_nano"])
        expected = oracle_enriched(reloads, span)
        assert {**span, **answers(timeline, *args).fields(0)} == expected


@settings(max_examples=100)
@given(reloads=reload_sets(), spans=st.lists(span_records(), max_size=25), seed=st.integers(0, 10**6))
def test_engine_with_the_real_timeline_ends_at_the_all_known_answer(reloads, spans, seed) -> None:
    """Random arrival times for both streams (reloads before or after their spans): once everything
    has arrived and no span is beyond the horizon, every span's last answer is the oracle's."""
    rng = random.Random(seed)
    engine = EnrichmentEngine(VersionTimeline(), SegmentCache(), grace_ms=5, horizon_ms=10**6)
    span_arrivals = sorted(rng.randint(0, 100) for _ in spans)
    for offset, reload in enumerate(reloads):
        engine.add_reload(ReloadArrival(reload, arrival_ms=rng.randint(0, 120), partition=0, offset=offset))
    final: dict[int, tuple[int, Enrichment]] = {}
    for offset, (span, arrival) in enumerate(zip(spans, span_arrivals, strict=True)):
        engine.add_span(SpanArrival(0, offset, arrival, span["service_name"], span["service_instance_id"],
                                    span["start_time_unix_nano"], span["end_time_unix_nano"]))
        for emission in engine.advance(arrival, rng.randint(0, arrival + 1)):
            final[emission.span.offset] = (emission.revision, emission.answer)
    for emission in engine.drain():
        assert emission.revision >= final.get(emission.span.offset, (-1,))[0]
        final[emission.span.offset] = (emission.revision, emission.answer)
    assert set(final) == set(range(len(spans)))
    for offset, span in enumerate(spans):
        assert {**span, **final[offset][1].fields(0)} == oracle_enriched(reloads, span)


def test_a_span_straddling_two_reloads_is_mid_flight_with_both_sorted() -> None:
    def reload(reload_id: str, effective: int, version: str, component: str) -> ReloadEvent:
        return ReloadEvent(reload_id=reload_id, service_name="gw", component=component, new_version=version,
                           requested_time_unix_nano=effective, effective_time_unix_nano=effective,
                           status="SUCCEEDED", source="test")

    timeline = VersionTimeline()
    for event in (reload("z-model", 15, "m2", "model"), reload("a-model", 5, "m1", "model"), reload("b-prompt", 18, "p7", "prompt")):
        timeline.add(event)
    span = {"service_name": "gw", "service_instance_id": "i1", "start_time_unix_nano": 10, "end_time_unix_nano": 20}
    enriched = enrich(span, timeline)  # type: ignore[arg-type]
    assert enriched["versions"] == {"model": "m1"}  # prompt unknown at start: absent, not guessed
    assert enriched["versions_at_end"] == {"model": "m2", "prompt": "p7"}
    assert enriched["reload_ids"] == {"model": "a-model"}
    assert enriched["mid_flight"] is True and enriched["mid_flight_reload_ids"] == ["b-prompt", "z-model"]


def oracle_answer(timeline: engine_tests.ListTimeline, service: str, instance: str, start: int, end: int) -> Enrichment:
    """The full answer (reload_ids too) by brute force over the naive timeline's reloads."""
    reloads = list(timeline.reloads.values())
    at_start, at_end = oracle_versions(reloads, service, instance, start), oracle_versions(reloads, service, instance, end)
    return Enrichment(
        versions=tuple(sorted((c, v[0]) for c, v in at_start.items())),
        versions_at_end=tuple(sorted((c, v[0]) for c, v in at_end.items())),
        reload_ids=tuple(sorted((c, v[1]) for c, v in at_start.items())),
        mid_flight_reload_ids=tuple(oracle_between(reloads, service, instance, start, end)),
    )


@settings(max_examples=60)
@given(world=engine_tests.worlds(), seed=st.integers(0, 10**6), commit_pick=st.floats(0, 1))
def test_the_engine_emits_the_same_with_the_real_timeline_as_with_brute_force(world, seed, commit_pick) -> None:
    """Live runs and partition restores: VersionTimeline + SegmentCache == a brute-force answer, emission for emission."""
    def real_engine() -> EnrichmentEngine:
        return EnrichmentEngine(VersionTimeline(), SegmentCache(), grace_ms=engine_tests.GRACE, horizon_ms=engine_tests.HORIZON)

    def oracle_engine() -> EnrichmentEngine:
        return EnrichmentEngine(engine_tests.ListTimeline(), oracle_answer, grace_ms=engine_tests.GRACE,
                                horizon_ms=engine_tests.HORIZON)

    snapshots: list = []
    oracle, _, _, _ = engine_tests.run_live(world, random.Random(seed), engine=oracle_engine(), snapshots=snapshots)
    real, _, _, _ = engine_tests.run_live(world, random.Random(seed), engine=real_engine())
    assert [(e.span, e.revision, e.answer) for e in real] == [(e.span, e.revision, e.answer) for e in oracle]

    committed, applied = snapshots[int(commit_pick * (len(snapshots) - 1))] if snapshots else ({}, None)
    for partition, log in world.span_logs.items():
        position = committed.get(partition, 0)
        restored = [
            restore_partition(timeline_factory=factory, answer_fn=answer_fn, grace_ms=engine_tests.GRACE,
                              horizon_ms=engine_tests.HORIZON, reloads=world.reload_log, emitted=log[:position],
                              previous_applied_position=applied, unemitted=log[position:], applied_position=applied)
            for factory, answer_fn in ((engine_tests.ListTimeline, oracle_answer), (VersionTimeline, SegmentCache()))
        ]
        shapes = [(one.adopt, [(e.span, e.answer, e.revision) for e in one.emissions], one.hold) for one in restored]
        assert shapes[0] == shapes[1]
