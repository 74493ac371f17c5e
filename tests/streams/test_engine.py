"""The arrival-ordered engine: answers depend only on the logs, never on batching, lag or restarts."""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import ReloadEvent
from streams.engine import (
    Emission,
    EnrichmentEngine,
    ReloadArrival,
    SpanArrival,
    restore_partition,
)

GRACE = 100
HORIZON = 1_000


class ListTimeline:
    """A deliberately naive timeline: the engine must not care how versions are computed."""

    def __init__(self) -> None:
        self.reloads: dict[str, ReloadEvent] = {}

    def add(self, reload: ReloadEvent) -> bool:
        if reload.reload_id in self.reloads:
            if self.reloads[reload.reload_id] != reload:
                raise ValueError(f"reload {reload.reload_id} known with other content")
            return False
        self.reloads[reload.reload_id] = reload
        return True


def naive_answer(timeline: ListTimeline, service: str, instance: str, start: int, end: int) -> Hashable:
    def versions(at: int) -> tuple:
        best: dict[str, tuple] = {}
        for reload in timeline.reloads.values():
            if reload.succeeded and reload.applies_to(service, instance) and reload.effective_time_unix_nano <= at:
                rank = (reload.effective_time_unix_nano, reload.service_instance_id is not None, reload.reload_id)
                if reload.component not in best or rank > best[reload.component][0]:
                    best[reload.component] = (rank, reload.new_version)
        return tuple(sorted((component, value[1]) for component, value in best.items()))

    mid = tuple(
        sorted(
            r.reload_id
            for r in timeline.reloads.values()
            if r.succeeded and r.applies_to(service, instance) and start < r.effective_time_unix_nano <= end
        )
    )
    return versions(start), versions(end), mid


def make_engine(grace: int = GRACE, horizon: int = HORIZON) -> EnrichmentEngine:
    return EnrichmentEngine(ListTimeline(), naive_answer, grace_ms=grace, horizon_ms=horizon)


def reload_at(reload_id: str, effective: int, arrival: int, *, version: str = "v", component: str = "model",
              instance: str | None = None, status: str = "SUCCEEDED", service: str = "gw", offset: int = 0) -> ReloadArrival:
    event = ReloadEvent(
        reload_id=reload_id, service_name=service, component=component, new_version=version,
        requested_time_unix_nano=effective, effective_time_unix_nano=effective, status=status,  # type: ignore[arg-type]
        source="test", service_instance_id=instance,
    )
    return ReloadArrival(event, arrival_ms=arrival, partition=0, offset=offset)


def span_at(offset: int, arrival: int, start: int, end: int, *, partition: int = 0, service: str = "gw",
            instance: str = "gw-1") -> SpanArrival:
    return SpanArrival(partition, offset, arrival, service, instance, start, end)


# --- worked examples ---------------------------------------------------------------------------

def test_span_waits_for_its_grace_period_then_takes_reloads_that_arrived_in_it() -> None:
    engine = make_engine()
    engine.add_span(span_at(0, arrival=1_000, start=10, end=20))
    assert engine.advance(span_progress_ms=1_001, reload_progress_ms=1_050) == []  # grace not over
    engine.add_reload(reload_at("r1", effective=5, arrival=1_080, version="v2"))
    out = engine.advance(span_progress_ms=1_200, reload_progress_ms=1_200)
    assert [(e.revision, e.answer) for e in out] == [(0, ((("model", "v2"),), (("model", "v2"),), ()))]


def test_grace_is_inclusive_a_reload_arriving_exactly_at_the_deadline_counts() -> None:
    engine = make_engine()
    engine.add_span(span_at(0, arrival=1_000, start=10, end=20))
    engine.add_reload(reload_at("r1", effective=5, arrival=1_100, version="v2"))
    (first,) = engine.advance(2_000, 2_000)
    assert first.revision == 0 and first.answer[0] == (("model", "v2"),)


def test_late_reload_corrects_with_revision_plus_one_and_unchanged_spans_stay_quiet() -> None:
    engine = make_engine()
    engine.add_span(span_at(0, arrival=1_000, start=10, end=20))
    engine.add_span(span_at(1, arrival=1_000, start=1, end=2))  # ends before the reload: never changes
    assert {e.span.offset for e in engine.advance(1_200, 1_200)} == {0, 1}
    engine.add_reload(reload_at("late", effective=15, arrival=1_500, version="v2"))
    (correction,) = engine.advance(1_600, 1_600)
    assert correction.span.offset == 0 and correction.revision == 1
    assert correction.caused_by_reload_id == "late"
    assert correction.answer == ((), (("model", "v2"),), ("late",))
    assert engine.stats.corrections == 1


def test_reload_beyond_the_horizon_is_counted_not_applied() -> None:
    engine = make_engine()
    engine.add_span(span_at(0, arrival=1_000, start=10, end=20))
    engine.advance(1_200, 1_200)
    engine.add_reload(reload_at("too-late", effective=15, arrival=1_000 + HORIZON + 1))
    assert engine.advance(5_000, 5_000) == []
    assert engine.stats.beyond_horizon == 1 and engine.stats.beyond_horizon_reload_ids == {"too-late"}


def test_failed_reloads_and_other_services_and_other_instances_change_nothing() -> None:
    engine = make_engine()
    engine.add_span(span_at(0, arrival=1_000, start=10, end=20, instance="gw-1"))
    engine.advance(1_200, 1_200)
    engine.add_reload(reload_at("failed", effective=15, arrival=1_300, status="FAILED", offset=1))
    engine.add_reload(reload_at("other-svc", effective=15, arrival=1_300, service="other", offset=2))
    engine.add_reload(reload_at("canary-2", effective=15, arrival=1_300, instance="gw-2", offset=3))
    assert engine.advance(1_400, 1_400) == []
    engine.add_reload(reload_at("canary-1", effective=15, arrival=1_500, instance="gw-1", offset=4))
    assert [e.caused_by_reload_id for e in engine.advance(1_600, 1_600)] == ["canary-1"]


def test_reload_waits_for_spans_that_could_precede_it() -> None:
    engine = make_engine()
    engine.add_reload(reload_at("r1", effective=15, arrival=1_000, version="v2"))
    # Spans up to arrival 900 have been seen on every partition: a span that arrives at 899 may
    # still come (deadline 999 < 1000), so the reload must wait.
    assert engine.advance(span_progress_ms=899, reload_progress_ms=5_000) == []
    engine.add_span(span_at(0, arrival=899, start=10, end=20))
    first, correction = engine.advance(span_progress_ms=900, reload_progress_ms=5_000)
    assert first.answer[0] == () and first.revision == 0  # answered before the reload applied
    assert correction.revision == 1 and correction.caused_by_reload_id == "r1"


def test_duplicate_reload_ids_apply_once_and_out_of_order_spans_are_refused() -> None:
    engine = make_engine()
    assert engine.add_reload(reload_at("r1", effective=15, arrival=10, offset=0))
    assert not engine.add_reload(reload_at("r1", effective=15, arrival=10, offset=0))
    engine.add_reload(reload_at("r1", effective=15, arrival=20, offset=1))  # same id republished
    engine.add_reload(reload_at("r1", effective=99, arrival=30, offset=2))  # same id, other content
    engine.drain()
    assert engine.stats.reloads_applied == 1 and engine.stats.duplicate_reloads == 1
    assert engine.stats.conflicting_reloads == 1 and engine.stats.conflicting_reload_ids == {"r1"}
    engine.add_span(span_at(0, arrival=500, start=1, end=2))
    with pytest.raises(ValueError, match="back in time"):
        engine.add_span(span_at(1, arrival=499, start=1, end=2))


def test_eviction_keeps_only_what_a_future_reload_may_correct() -> None:
    engine = make_engine()
    for offset in range(10):
        engine.add_span(span_at(offset, arrival=offset * 100, start=1, end=2))
    engine.advance(span_progress_ms=5_000, reload_progress_ms=5_000)
    # The next reload arrives at >= 5000; spans that arrived before 5000 - 1000 can't be corrected.
    assert engine.indexed_count() == 0
    engine.add_span(span_at(10, arrival=4_500, start=1, end=2))
    engine.advance(span_progress_ms=5_000, reload_progress_ms=5_000)
    assert engine.indexed_count() == 1


def test_forget_partitions_drops_held_and_indexed_spans() -> None:
    engine = make_engine()
    engine.add_span(span_at(0, arrival=10, start=1, end=2, partition=0))
    engine.add_span(span_at(0, arrival=10, start=1, end=2, partition=1))
    engine.advance(200, 200)
    engine.add_span(span_at(1, arrival=150, start=1, end=2, partition=1))
    engine.forget_partitions([1])
    assert engine.held_count() == 0
    assert [span.partition for span, _, _ in engine.indexed()] == [0]


# --- a simulated worker: random lag and batching over the same logs ----------------------------

@dataclass
class World:
    span_logs: dict[int, list[SpanArrival]]
    reload_log: list[ReloadArrival]
    end_ms: int


def run_live(world: World, rng: random.Random, engine: EnrichmentEngine | None = None,
             start_positions: dict[int, int] | None = None, stop_at_ms: int | None = None,
             reload_position: int = 0, snapshots: list | None = None,
             ) -> tuple[list[Emission], EnrichmentEngine, dict[int, int], int]:
    """Drive the engine the way the Kafka service does: messages become visible at their arrival
    time, the consumer lags by a random amount, progress is computed per partition."""
    engine = engine or make_engine()
    positions = dict(start_positions or {p: 0 for p in world.span_logs})
    out: list[Emission] = []
    wall = 0
    stop = world.end_ms + 3 * HORIZON if stop_at_ms is None else stop_at_ms
    while wall < stop:
        wall += rng.randint(1, 60)
        for partition, log in world.span_logs.items():
            take = rng.randint(0, 6)
            while take and positions[partition] < len(log) and log[positions[partition]].arrival_ms <= wall:
                engine.add_span(log[positions[partition]])
                positions[partition] += 1
                take -= 1
        take = rng.randint(0, 3)
        while take and reload_position < len(world.reload_log) and world.reload_log[reload_position].arrival_ms <= wall:
            engine.add_reload(world.reload_log[reload_position])
            reload_position += 1
            take -= 1

        def progress(log: list, position: int) -> int:
            if position < len(log) and log[position].arrival_ms <= wall:
                return log[position].arrival_ms  # lagging: everything before the next message is in
            return wall + 1  # caught up: what arrives later arrives after `wall`

        span_progress = min(progress(log, positions[p]) for p, log in world.span_logs.items())
        reload_progress = progress(world.reload_log, reload_position)
        out.extend(engine.advance(span_progress, reload_progress))
        if snapshots is not None:  # what a commit at this moment would store
            held = engine.oldest_held_offsets()
            snapshots.append(({p: held.get(p, positions[p]) for p in world.span_logs}, engine.applied_position))
    return out, engine, positions, reload_position


@st.composite
def worlds(draw: st.DrawFn) -> World:
    partitions = draw(st.integers(min_value=1, max_value=3))
    services = ["gw", "router"]
    instances = ["i1", "i2"]
    span_logs: dict[int, list[SpanArrival]] = {}
    for partition in range(partitions):
        arrivals = sorted(draw(st.lists(st.integers(min_value=0, max_value=3_000), max_size=25)))
        log = []
        for offset, arrival in enumerate(arrivals):
            start = draw(st.integers(min_value=0, max_value=3_000))
            log.append(span_at(offset, arrival, start, start + draw(st.integers(min_value=0, max_value=400)),
                               partition=partition, service=draw(st.sampled_from(services)),
                               instance=draw(st.sampled_from(instances))))
        span_logs[partition] = log
    reload_arrivals = sorted(draw(st.lists(st.integers(min_value=0, max_value=4_000), max_size=10)))
    reload_log = [
        reload_at(
            draw(st.sampled_from(["a", "b", "c", "d", "e", "f"])) + str(offset),
            effective=draw(st.integers(min_value=0, max_value=3_000)),
            arrival=arrival,
            version=draw(st.sampled_from(["v1", "v2", "v3"])),
            component=draw(st.sampled_from(["model", "config"])),
            instance=draw(st.sampled_from([None, None, "i1", "i2"])),
            status=draw(st.sampled_from(["SUCCEEDED", "SUCCEEDED", "FAILED"])),
            service=draw(st.sampled_from(services)),
            offset=offset,
        )
        for offset, arrival in enumerate(reload_arrivals)
    ]
    return World(span_logs, reload_log, end_ms=4_000)


def final_states(emissions: list[Emission]) -> dict[tuple[int, int], tuple[int, Hashable]]:
    final: dict[tuple[int, int], tuple[int, Hashable]] = {}
    for emission in emissions:
        key = (emission.span.partition, emission.span.offset)
        if key not in final or emission.revision >= final[key][0]:
            final[key] = (emission.revision, emission.answer)
    return final


def revision_answers(emissions: list[Emission]) -> dict[tuple[int, int, int], Hashable]:
    answers: dict[tuple[int, int, int], Hashable] = {}
    for emission in emissions:
        key = (emission.span.partition, emission.span.offset, emission.revision)
        assert answers.setdefault(key, emission.answer) == emission.answer, "one revision, two answers"
    return answers


def expected_rev0(world: World, span: SpanArrival) -> Hashable:
    timeline = ListTimeline()
    for reload in sorted(world.reload_log, key=lambda r: r.arrival_position):
        if reload.arrival_ms <= span.arrival_ms + GRACE:
            timeline.add(reload.reload)
    return naive_answer(timeline, span.service_name, span.service_instance_id,
                        span.start_time_unix_nano, span.end_time_unix_nano)


@settings(max_examples=150)
@given(world=worlds(), seed_a=st.integers(0, 10**6), seed_b=st.integers(0, 10**6))
def test_output_depends_only_on_the_logs_not_on_lag_or_batching(world: World, seed_a: int, seed_b: int) -> None:
    first, engine_a, _, _ = run_live(world, random.Random(seed_a))
    second, _, _, _ = run_live(world, random.Random(seed_b))
    assert revision_answers(first) == revision_answers(second)
    every_span = {(s.partition, s.offset) for log in world.span_logs.values() for s in log}
    assert set(final_states(first)) == every_span
    for log in world.span_logs.values():
        for span in log:
            assert revision_answers(first)[(span.partition, span.offset, 0)] == expected_rev0(world, span)
    # Revisions count up by one.
    for (partition, offset), (revision, _) in final_states(first).items():
        for lower in range(revision):
            assert (partition, offset, lower) in revision_answers(first)
    # Without spans beyond the horizon, the final answer is the answer with every reload known.
    if engine_a.stats.beyond_horizon == 0:
        everything = ListTimeline()
        for reload in world.reload_log:
            everything.add(reload.reload)
        for log in world.span_logs.values():
            for span in log:
                assert final_states(first)[(span.partition, span.offset)][1] == naive_answer(
                    everything, span.service_name, span.service_instance_id,
                    span.start_time_unix_nano, span.end_time_unix_nano)


@settings(max_examples=150)
@given(world=worlds(), seed=st.integers(0, 10**6), crash_at=st.integers(0, 5_000), applied_shift=st.integers(-3, 3),
       commit_pick=st.floats(0, 1), read_ahead=st.integers(0, 30))
def test_a_restart_from_committed_state_agrees_with_a_worker_that_never_stopped(
    world: World, seed: int, crash_at: int, applied_shift: int, commit_pick: float, read_ahead: int
) -> None:
    reference, _, _, _ = run_live(world, random.Random(seed))

    # Worker A runs until it crashes. Its last commit, taken at some earlier step, stored per
    # partition the offset below which everything was answered, and the last reload applied.
    snapshots: list = [({p: 0 for p in world.span_logs}, None)]
    before_crash, _, _, _ = run_live(world, random.Random(seed + 1), stop_at_ms=crash_at, snapshots=snapshots)
    committed, previous_applied = snapshots[int(commit_pick * (len(snapshots) - 1))]
    positions = dict(committed)  # the restarted consumer resumes at the committed offsets

    # Worker B takes over with its own applied position: behind A's (a restart, or a worker further back)
    # or ahead of it (a worker further along, after a rebalance).
    engine_b = make_engine()
    for reload in world.reload_log:
        engine_b.add_reload(reload)
    positions_applied = sorted(r.arrival_position for r in world.reload_log)
    at = sum(1 for key in positions_applied if previous_applied is not None and key <= previous_applied)
    at += applied_shift - 1
    applied = positions_applied[min(at, len(positions_applied) - 1)] if positions_applied and at >= 0 else None
    engine_b.apply_through(applied)
    applied_ms = applied[0] if applied is not None else -1
    after_restart: list[Emission] = []
    for partition, log in world.span_logs.items():
        # B reads the partition past the commit: at least every span already due at its applied position.
        due = sum(1 for span in log if span.arrival_ms + GRACE < applied_ms)
        positions[partition] = min(len(log), max(committed[partition], due) + read_ahead)
        restored = restore_partition(
            timeline_factory=ListTimeline, answer_fn=naive_answer, grace_ms=GRACE, horizon_ms=HORIZON,
            reloads=world.reload_log, emitted=log[: committed[partition]], previous_applied_position=previous_applied,
            unemitted=log[committed[partition]: positions[partition]], applied_position=applied,
        )
        for span, answer, revision in restored.adopt:
            engine_b.adopt(span, answer, revision)
        for span in restored.hold:
            engine_b.add_span(span)
        after_restart.extend(restored.emissions)
    rest, _, _, _ = run_live(world, random.Random(seed + 2), engine=engine_b,
                             start_positions=positions, reload_position=len(world.reload_log))
    after_restart.extend(rest)

    combined = before_crash + after_restart
    assert final_states(combined) == final_states(reference)
    reference_answers = revision_answers(reference)
    for key, answer in revision_answers(combined).items():
        assert reference_answers[key] == answer, "a revision number came back with another answer"
