"""VersionTimeline against a brute-force oracle: any insertion order, ties, canaries, FAILED reloads."""

from __future__ import annotations

from bisect import bisect_right

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import ReloadEvent
from streams.timeline import VersionTimeline

SERVICES = ("gw", "router")
INSTANCES = ("i1", "i2", "i3")
COMPONENTS = ("model", "config")
TIMES = range(-1, 23)


@st.composite
def reload_sets(draw: st.DrawFn, max_size: int = 14) -> list[ReloadEvent]:
    count = draw(st.integers(0, max_size))
    ids = draw(st.lists(st.text("abcdefgh", min_size=1, max_size=3), min_size=count, max_size=count, unique=True))
    reloads = []
    for reload_id in ids:
        effective = draw(st.integers(0, 20))  # a narrow range: many equal effective times
        reloads.append(
            ReloadEvent(
                reload_id=reload_id,
                service_name=draw(st.sampled_from(SERVICES)),
                component=draw(st.sampled_from(COMPONENTS)),
                new_version=draw(st.sampled_from(["v1", "v2", "v3", "v4"])),
                requested_time_unix_nano=max(0, effective - 1),
                effective_time_unix_nano=effective,
                status=draw(st.sampled_from(["SUCCEEDED", "SUCCEEDED", "FAILED"])),
                source="test",
                service_instance_id=draw(st.sampled_from([None, None, "i1", "i2"])),
            )
        )
    return reloads


def oracle_versions(reloads: list[ReloadEvent], service: str, instance: str, t: int) -> dict[str, tuple[str, str, int]]:
    """DESIGN.md read literally, by scanning every reload."""
    best: dict[str, tuple[tuple[int, bool, str], ReloadEvent]] = {}
    for reload in reloads:
        if reload.status != "SUCCEEDED" or reload.service_name != service:
            continue
        if reload.service_instance_id not in (None, instance) or reload.effective_time_unix_nano > t:
            continue
        rank = (reload.effective_time_unix_nano, reload.service_instance_id is not None, reload.reload_id)
        if reload.component not in best or rank > best[reload.component][0]:
            best[reload.component] = (rank, reload)
    return {c: (r.new_version, r.reload_id, r.effective_time_unix_nano) for c, (_, r) in best.items()}


def oracle_between(reloads: list[ReloadEvent], service: str, instance: str, start: int, end: int) -> list[str]:
    return sorted(
        r.reload_id
        for r in reloads
        if r.status == "SUCCEEDED" and r.service_name == service and r.service_instance_id in (None, instance)
        and start < r.effective_time_unix_nano <= end
    )


def build(reloads: list[ReloadEvent]) -> VersionTimeline:
    timeline = VersionTimeline()
    for reload in reloads:
        assert timeline.add(reload) is True
    return timeline


def as_tuples(active: dict) -> dict[str, tuple[str, str, int]]:
    return {c: (a.version, a.reload_id, a.effective_time_unix_nano) for c, a in active.items()}


@settings(max_examples=300)
@given(reloads=reload_sets(), order=st.randoms(use_true_random=False))
def test_versions_at_equal_the_oracle_in_any_insertion_order(reloads: list[ReloadEvent], order) -> None:
    shuffled = list(reloads)
    order.shuffle(shuffled)
    timeline = build(shuffled)
    for service in (*SERVICES, "unknown"):
        for instance in INSTANCES:
            for t in TIMES:
                expected = oracle_versions(reloads, service, instance, t)
                assert as_tuples(timeline.versions_at(service, instance, t)) == expected
                for component in (*COMPONENTS, "absent"):
                    one = timeline.version_at(service, instance, component, t)
                    assert (one and (one.version, one.reload_id, one.effective_time_unix_nano)) == expected.get(component)


@settings(max_examples=300)
@given(reloads=reload_sets(), order=st.randoms(use_true_random=False),
       windows=st.lists(st.tuples(st.integers(-1, 22), st.integers(-1, 22)), min_size=1, max_size=12))
def test_reloads_between_equal_the_oracle_and_are_time_ordered(reloads: list[ReloadEvent], order, windows) -> None:
    shuffled = list(reloads)
    order.shuffle(shuffled)
    timeline = build(shuffled)
    for service in SERVICES:
        for instance in INSTANCES:
            for start, end in windows:
                found = timeline.reloads_between(service, instance, start, end)
                assert sorted(r.reload_id for r in found) == oracle_between(reloads, service, instance, start, end)
                keys = [(r.effective_time_unix_nano, r.reload_id) for r in found]
                assert keys == sorted(keys)


@settings(max_examples=200)
@given(reloads=reload_sets())
def test_answers_are_constant_between_change_points(reloads: list[ReloadEvent]) -> None:
    timeline = build(reloads)
    for service in SERVICES:
        for instance in INSTANCES:
            points = timeline.change_points(service, instance)
            assert points == sorted(set(points))
            by_segment: dict[int, dict] = {}
            for t in TIMES:
                answer = as_tuples(timeline.versions_at(service, instance, t))
                assert by_segment.setdefault(bisect_right(points, t), answer) == answer
            for t in points:  # each change point is the effective time of an applying success
                assert oracle_between(reloads, service, instance, t - 1, t)


@settings(max_examples=100)
@given(reloads=reload_sets(), data=st.data())
def test_queries_interleaved_with_adds_see_exactly_what_was_added(reloads: list[ReloadEvent], data) -> None:
    timeline = VersionTimeline()
    added: list[ReloadEvent] = []
    for reload in reloads:
        timeline.add(reload)
        added.append(reload)
        service = data.draw(st.sampled_from(SERVICES))
        instance = data.draw(st.sampled_from(INSTANCES))
        t = data.draw(st.integers(-1, 22))
        timeline.change_points(service, instance)  # the cache must be invalidated by later adds
        assert as_tuples(timeline.versions_at(service, instance, t)) == oracle_versions(added, service, instance, t)
        points = timeline.change_points(service, instance)
        assert points == sorted({r.effective_time_unix_nano for r in added if r.status == "SUCCEEDED"
                                 and r.service_name == service and r.service_instance_id in (None, instance)})


@settings(max_examples=100)
@given(reloads=reload_sets())
def test_every_reload_is_listed_failed_ones_too_in_effective_order(reloads: list[ReloadEvent]) -> None:
    timeline = build(reversed(reloads))  # type: ignore[arg-type]
    assert timeline.services() == sorted({r.service_name for r in reloads})
    assert len(timeline) == len(reloads)
    for service in SERVICES:
        listed = timeline.reloads(service)
        expected = sorted((r for r in reloads if r.service_name == service),
                          key=lambda r: (r.effective_time_unix_nano, r.reload_id))
        assert listed == expected
    assert sorted(r.reload_id for r in timeline) == sorted(r.reload_id for r in reloads)


def _reload(reload_id: str, effective: int, version: str, *, instance: str | None = None,
            status: str = "SUCCEEDED") -> ReloadEvent:
    return ReloadEvent(reload_id=reload_id, service_name="gw", component="model", new_version=version,
                       requested_time_unix_nano=effective, effective_time_unix_nano=effective,
                       status=status, source="test", service_instance_id=instance)  # type: ignore[arg-type]


def test_worked_example_canary_ties_and_failures() -> None:
    timeline = build([
        _reload("r1", 10, "v1"),
        _reload("canary", 20, "v2-canary", instance="i1"),
        _reload("r2", 20, "v2"),  # same time as the canary: on i1 the canary wins
        _reload("broken", 25, "v3", status="FAILED"),
    ])
    assert timeline.versions_at("gw", "i1", 9) == {}
    assert timeline.versions_at("gw", "i1", 10)["model"].version == "v1"
    assert timeline.versions_at("gw", "i1", 20)["model"].version == "v2-canary"
    assert timeline.versions_at("gw", "i2", 20)["model"].version == "v2"
    assert timeline.versions_at("gw", "i2", 30)["model"].reload_id == "r2"  # FAILED changes nothing
    assert [r.reload_id for r in timeline.reloads_between("gw", "i1", 10, 30)] == ["canary", "r2"]
    assert [r.reload_id for r in timeline.reloads_between("gw", "i2", 10, 30)] == ["r2"]
    assert [r.reload_id for r in timeline.reloads("gw")] == ["r1", "canary", "r2", "broken"]


def test_duplicates_are_no_ops_and_conflicting_ids_are_refused() -> None:
    timeline = VersionTimeline()
    assert timeline.add(_reload("r1", 10, "v1"))
    assert not timeline.add(_reload("r1", 10, "v1"))
    with pytest.raises(ValueError, match="r1"):
        timeline.add(_reload("r1", 10, "v2"))
    assert len(timeline) == 1 and timeline.versions_at("gw", "i1", 10)["model"].version == "v1"
    assert "r1" in timeline and timeline.get("r1") == _reload("r1", 10, "v1")
