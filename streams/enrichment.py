"""The version rules of enrichment and their one segment cache: the same answers for the worker and replay.

:func:`enrichment_of` is a span's :class:`Enrichment` by DESIGN.md "Enrichment semantics";
:func:`enrich` the EnrichedSpan record. :class:`SegmentCache` memoises it: a (service, instance)'s
answer can only change at the effective times of the reloads that apply to it
(:meth:`VersionTimeline.change_points`), so a span's answer is a function of the two segments its
start and end fall in, and a million spans between a handful of reloads need a handful of real
computations. Each cached answer carries a value derived from it once (its encoded form).
"""

from __future__ import annotations

import weakref
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from schemas.records import EnrichedSpan, Span

_SEGMENT_CACHE_LIMIT = 4_096
"""Answers kept per (service, instance) before its cache is cleared (bounded memory)."""


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
    def versions_at(
        self, service_name: str, service_instance_id: str, time_unix_nano: int
    ) -> Mapping[str, _ActiveVersion]: ...

    def reloads_between(
        self, service_name: str, service_instance_id: str, start_exclusive: int, end_inclusive: int
    ) -> list[Any]: ...


class _SegmentedTimeline(_Timeline, Protocol):
    def change_points(self, service_name: str, service_instance_id: str) -> list[int]: ...

    def revision(self, service_name: str) -> int: ...


def enrichment_of(timeline: _Timeline, service_name: str, service_instance_id: str, start: int, end: int) -> Enrichment:
    """The answer for a span of (service, instance) running from ``start`` to ``end`` (ns)."""
    at_start = timeline.versions_at(service_name, service_instance_id, start)
    at_end = timeline.versions_at(service_name, service_instance_id, end)
    return Enrichment(
        versions=tuple(sorted((component, active.version) for component, active in at_start.items())),
        versions_at_end=tuple(sorted((component, active.version) for component, active in at_end.items())),
        reload_ids=tuple(sorted((component, active.reload_id) for component, active in at_start.items())),
        mid_flight_reload_ids=tuple(
            sorted(
                reload.reload_id for reload in timeline.reloads_between(service_name, service_instance_id, start, end)
            )
        ),
    )


def enrich(span: Span, timeline: _Timeline, revision: int = 0) -> EnrichedSpan:
    """The enriched span: every field of ``span`` plus the enrichment fields at ``revision``.

    The span is not validated here (callers dead-letter invalid spans first).
    """
    answer = enrichment_of(
        timeline,
        span["service_name"],
        span["service_instance_id"],
        span["start_time_unix_nano"],
        span["end_time_unix_nano"],
    )
    return {**span, **answer.fields(revision)}  # type: ignore[typeddict-item]


class CachedAnswer(NamedTuple):
    """An answer and the value derived from it; equal exactly when the answers are (``derived`` is a function of it)."""

    enrichment: Enrichment
    derived: Any


class _InstanceCache:
    __slots__ = ("answers", "points", "revision")

    def __init__(self, revision: int, points: list[int]) -> None:
        self.revision = revision
        self.points = points
        self.answers: dict[tuple[int, int], CachedAnswer] = {}


class SegmentCache:
    """:func:`enrichment_of` memoised per (timeline, service, instance, start segment, end segment).

    Guarantees the same :class:`Enrichment` as :func:`enrichment_of` for the timeline's current
    content: a (service, instance)'s entries are dropped when a reload of the service is added.
    Memory is bounded (at most 4,096 answers per (service, instance)). Not thread-safe.

    Args:
        derive: function of an :class:`Enrichment` computed once per cached answer (e.g. its
            encoded form); None: ``derived`` is None.
    """

    def __init__(self, derive: Callable[[Enrichment], Any] | None = None) -> None:
        self._caches: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], _InstanceCache]] = (
            weakref.WeakKeyDictionary()
        )
        self._derive = derive
        self._last_timeline: Callable[[], Any] = lambda: None
        self._last_caches: dict[tuple[str, str], _InstanceCache] = {}
        self.computed = 0
        """Answers computed (cache misses)."""

    def lookup(
        self, timeline: _SegmentedTimeline, service_name: str, service_instance_id: str, start: int, end: int
    ) -> CachedAnswer:
        """The (answer, derived value) of a span of (service, instance) from ``start`` to ``end`` (ns)."""
        # The hot path of the enricher and of replay: one timeline in a row, one dict look-up, two bisections.
        per_timeline = self._last_caches if timeline is self._last_timeline() else self._select(timeline)
        cache = per_timeline.get((service_name, service_instance_id))
        if cache is None or cache.revision != timeline.revision(service_name):
            cache = per_timeline[(service_name, service_instance_id)] = _InstanceCache(
                timeline.revision(service_name), timeline.change_points(service_name, service_instance_id)
            )
        points = cache.points
        key = (bisect_right(points, start), bisect_right(points, end))
        found = cache.answers.get(key)
        if found is None:
            answer = enrichment_of(timeline, service_name, service_instance_id, start, end)
            if len(cache.answers) >= _SEGMENT_CACHE_LIMIT:
                cache.answers.clear()
            found = cache.answers[key] = CachedAnswer(
                answer, self._derive(answer) if self._derive is not None else None
            )
            self.computed += 1
        return found

    def _select(self, timeline: _SegmentedTimeline) -> dict[tuple[str, str], _InstanceCache]:
        per_timeline = self._caches.get(timeline)
        if per_timeline is None:
            per_timeline = self._caches[timeline] = {}
        self._last_timeline, self._last_caches = weakref.ref(timeline), per_timeline
        return per_timeline

    def __call__(
        self, timeline: _SegmentedTimeline, service_name: str, service_instance_id: str, start: int, end: int
    ) -> Enrichment:
        """The answer alone (an engine ``answer_fn``)."""
        return self.lookup(timeline, service_name, service_instance_id, start, end).enrichment

    def derived(
        self, timeline: _SegmentedTimeline, service_name: str, service_instance_id: str, start: int, end: int
    ) -> Any:
        """The derived value alone."""
        return self.lookup(timeline, service_name, service_instance_id, start, end).derived
