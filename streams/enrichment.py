"""Enrichment of spans from a version timeline: one code path for the streaming worker and replay.

:func:`enrich` turns a Span into an EnrichedSpan (DESIGN.md field names). :class:`SegmentAnswers`
is the same answer, memoised: a (service, instance)'s answer can only change at the effective
times of the reloads that apply to it (:meth:`VersionTimeline.change_points`), so a span's answer
is a function of the two segments its start and end fall in, and a million spans between a
handful of reloads need only a handful of real computations.
"""

from __future__ import annotations

import weakref
from bisect import bisect_right
from typing import Any

from schemas.records import EnrichedSpan, Span
from streams.enriched_wire import Enrichment, enrichment_of
from streams.timeline import VersionTimeline

_SEGMENT_CACHE_LIMIT = 4_096
"""Answers kept per (service, instance) before its cache is cleared (bounded memory)."""


def enrich(span: Span, timeline: VersionTimeline, revision: int = 0) -> EnrichedSpan:
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


class _InstanceCache:
    __slots__ = ("answers", "points", "revision")

    def __init__(self, revision: int, points: list[int]) -> None:
        self.revision = revision
        self.points = points
        self.answers: dict[tuple[int, int], Any] = {}


class SegmentAnswers:
    """``enrichment_of`` with answers memoised per (service, instance, start segment, end segment).

    Callable as an engine ``answer_fn``: ``answers(timeline, service, instance, start, end)``.
    Guarantees the same :class:`Enrichment` as :func:`enrichment_of` for the timeline's current
    content; entries are dropped when a reload of the service is added. Not thread-safe.

    Args:
        derive: optional function of an :class:`Enrichment` cached alongside it (e.g. its encoded
            form), returned by :meth:`derived`.
    """

    def __init__(self, derive: Any = None) -> None:
        self._caches: weakref.WeakKeyDictionary[VersionTimeline, dict[tuple[str, str], _InstanceCache]] = (
            weakref.WeakKeyDictionary()
        )
        self._derive = derive
        self.computed = 0

    def _cache(self, timeline: VersionTimeline, service_name: str, service_instance_id: str) -> _InstanceCache:
        per_timeline = self._caches.get(timeline)
        if per_timeline is None:
            per_timeline = self._caches[timeline] = {}
        key = (service_name, service_instance_id)
        cache = per_timeline.get(key)
        revision = timeline.revision(service_name)
        if cache is None or cache.revision != revision or len(cache.answers) >= _SEGMENT_CACHE_LIMIT:
            cache = per_timeline[key] = _InstanceCache(revision, timeline.change_points(service_name, service_instance_id))
        return cache

    def __call__(self, timeline: VersionTimeline, service_name: str, service_instance_id: str, start: int, end: int) -> Enrichment:
        return self.lookup(timeline, service_name, service_instance_id, start, end)[0]

    def derived(self, timeline: VersionTimeline, service_name: str, service_instance_id: str, start: int, end: int) -> Any:
        """The value ``derive`` computed from this span's answer (computed once per segment pair)."""
        return self.lookup(timeline, service_name, service_instance_id, start, end)[1]

    def lookup(
        self, timeline: VersionTimeline, service_name: str, service_instance_id: str, start: int, end: int
    ) -> tuple[Enrichment, Any]:
        """(answer, derived value) for a span of (service, instance) from ``start`` to ``end``."""
        cache = self._cache(timeline, service_name, service_instance_id)
        points = cache.points
        key = (bisect_right(points, start), bisect_right(points, end))
        found = cache.answers.get(key)
        if found is None:
            answer = enrichment_of(timeline, service_name, service_instance_id, start, end)
            found = cache.answers[key] = (answer, self._derive(answer) if self._derive is not None else None)
            self.computed += 1
        return found
