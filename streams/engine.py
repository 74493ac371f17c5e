"""Arrival-ordered merge of spans and reloads: grace-period holding, first answers, late-reload corrections.

Every output is a pure function of the two logs ordered by *arrival time* (the broker's durable
log-append timestamp), so a restarted or rebalanced worker agrees with one that never stopped:

* A span X that arrived at ``a(X)`` gets its first answer (revision 0) from exactly the reloads
  that arrived at or before ``a(X) + grace``.
* A later reload R of X's service, applied in arrival order, re-answers X while
  ``a(R) - a(X) <= horizon``; a changed answer is re-emitted with revision + 1. One that would
  change X later than that is counted in :attr:`EngineStats.beyond_horizon`, never applied silently.

Events are processed in the order span X at ``a(X) + grace``, reload R at ``a(R)`` (a reload wins
a tie), each once the caller's two *progress* values say nothing earlier can still arrive. Pure: no
Kafka, no clock; the answer function is injected (:class:`streams.enrichment.SegmentCache`).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.records import ReloadEvent

NEVER = -(2**63)
FOREVER = 2**63 - 1
_EVICTED_SECONDS_KEPT = 86_400

ArrivalPosition = tuple[int, int, int]
"""(arrival_ms, partition, offset) of a reload message: the total order in which reloads are applied."""


class Timeline(Protocol):
    """What the engine needs of a version timeline (see :class:`streams.timeline.VersionTimeline`)."""

    def add(self, reload: ReloadEvent) -> bool: ...


AnswerFn = Callable[[Any, str, str, int, int], Hashable]
"""answer_fn(timeline, service_name, service_instance_id, start_unix_nano, end_unix_nano) -> answer."""


@dataclass(frozen=True, slots=True)
class SpanArrival:
    """A decoded, valid span as the engine sees it: where it came from, when, and what it needs.

    ``partition`` is the caller's number of the span's source partition; ``index`` tells apart the
    spans of one message (an OTLP message holds many; an Avro message one, index 0), so a span is
    ``(partition, offset, index)``. ``payload`` is opaque to the engine (for re-emission by the caller).
    """

    partition: int
    offset: int
    arrival_ms: int
    service_name: str
    service_instance_id: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    payload: Any = None
    index: int = 0

    @property
    def position(self) -> tuple[int, int, int]:
        """(partition, offset, index): the span's identity."""
        return (self.partition, self.offset, self.index)


@dataclass(frozen=True, slots=True)
class ReloadArrival:
    """A reload event with the position and arrival time of its message."""

    reload: ReloadEvent
    arrival_ms: int
    partition: int = 0
    offset: int = 0

    @property
    def arrival_position(self) -> ArrivalPosition:
        return (self.arrival_ms, self.partition, self.offset)


@dataclass(frozen=True, slots=True)
class Emission:
    """An answer to publish: the first one (revision 0) or a correction caused by ``reload_id``."""

    span: SpanArrival
    answer: Hashable
    revision: int
    caused_by_reload_id: str | None = None


@dataclass
class EngineStats:
    """Counters a worker reports; every late reload is accounted for here."""

    spans_added: int = 0
    first_answers: int = 0
    corrections: int = 0
    reloads_applied: int = 0
    duplicate_reloads: int = 0
    conflicting_reloads: int = 0
    """Reloads whose reload_id was already applied with different content (refused)."""
    conflicting_reload_ids: set[str] = field(default_factory=set)
    beyond_horizon: int = 0
    """Spans a reload would have changed but that arrived more than the horizon before it."""
    beyond_horizon_reload_ids: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Indexed:
    span: SpanArrival
    answer: Hashable
    revision: int


class EnrichmentEngine:
    """Holds spans for the grace period, answers them, and corrects them when reloads arrive late.

    Args:
        timeline: the version timeline reloads are applied to (owned by the engine from now on).
        answer_fn: computes a span's answer from the timeline.
        grace_ms: how long (in arrival time) a span waits for reloads before its first answer.
        horizon_ms: how much later (in arrival time) a reload may still correct a span.

    Not thread-safe: one engine per worker thread.
    """

    def __init__(self, timeline: Timeline, answer_fn: AnswerFn, *, grace_ms: int, horizon_ms: int) -> None:
        if grace_ms < 0:
            raise ValueError(f"grace_ms must be >= 0, got {grace_ms}")
        if horizon_ms < grace_ms:
            raise ValueError(f"horizon_ms ({horizon_ms}) must be >= grace_ms ({grace_ms})")
        self.timeline = timeline
        self._answer_fn = answer_fn
        self.grace_ms = grace_ms
        self.horizon_ms = horizon_ms
        self._pending: list[tuple[ArrivalPosition, ReloadArrival]] = []
        self._pending_positions: set[ArrivalPosition] = set()
        self._held: dict[int, deque[SpanArrival]] = {}
        self._held_starts: dict[int, deque[tuple[int, int, int]]] = {}
        """Per partition, (offset, index, start) of held spans whose start no later-held span undercuts:
        a monotonic queue whose head is the least start held (sliding-window minimum)."""
        self._index: dict[str, deque[_Indexed]] = {}
        self._applied_position: ArrivalPosition | None = None
        self._evicted_end_seconds: dict[str, dict[int, int]] = {}
        self._applied_log: list[ReloadArrival] = []
        self.stats = EngineStats()

    # --- input -----------------------------------------------------------------------------

    def add_span(self, span: SpanArrival) -> None:
        """Hold a span until its grace period has passed. Spans of one partition must come in order."""
        held = self._held.setdefault(span.partition, deque())
        if held and span.arrival_ms < held[-1].arrival_ms:
            raise ValueError(
                f"span arrivals must not go back in time within partition {span.partition}: "
                f"{span.arrival_ms} after {held[-1].arrival_ms}"
            )
        held.append(span)
        starts = self._held_starts.setdefault(span.partition, deque())
        start = span.start_time_unix_nano
        while starts and starts[-1][2] >= start:
            starts.pop()
        starts.append((span.offset, span.index, start))
        self.stats.spans_added += 1

    def add_reload(self, reload: ReloadArrival) -> bool:
        """Queue a reload for application in arrival order. False when its position was already applied or queued."""
        position = reload.arrival_position
        if position in self._pending_positions or (
            self._applied_position is not None and position <= self._applied_position
        ):
            return False
        heapq.heappush(self._pending, (position, reload))
        self._pending_positions.add(position)
        return True

    # --- processing ------------------------------------------------------------------------

    @property
    def applied_position(self) -> ArrivalPosition | None:
        """Arrival position of the last reload applied (every reload before it is applied too), or None."""
        return self._applied_position

    def held_count(self) -> int:
        return sum(len(held) for held in self._held.values())

    def indexed_count(self) -> int:
        return sum(len(entries) for entries in self._index.values())

    def least_held_start(self, partition: int) -> int | None:
        """The least start time of the spans of ``partition`` still held (None when none is held)."""
        starts = self._held_starts.get(partition)
        return starts[0][2] if starts else None

    def oldest_held_offsets(self) -> dict[int, int]:
        """partition -> offset of its oldest span still held (nothing below it is pending)."""
        return {partition: held[0].offset for partition, held in self._held.items() if held}

    def advance(self, span_progress_ms: int, reload_progress_ms: int, *, evict: bool = True) -> list[Emission]:
        """Process everything that can no longer be affected by messages still to come.

        Args:
            span_progress_ms: every span that arrived before this has been added.
            reload_progress_ms: every reload that arrived before this has been added.
            evict: forget answered spans that no future reload may correct.

        Returns:
            First answers and corrections, in processing order.
        """
        out: list[Emission] = []
        grace = self.grace_ms
        while self._pending:
            position, reload = self._pending[0]
            arrival = position[0]
            if not (reload_progress_ms > arrival and span_progress_ms >= arrival - grace):
                break
            self._emit_held(before_ms=arrival, out=out)
            heapq.heappop(self._pending)
            self._pending_positions.discard(position)
            self._apply(reload, out)
        limit = reload_progress_ms if not self._pending else min(reload_progress_ms, self._pending[0][0][0])
        self._emit_held(before_ms=limit, out=out)
        if evict:
            next_reload_ms = min(reload_progress_ms, self._pending[0][0][0]) if self._pending else reload_progress_ms
            self._evict(next_reload_ms - self.horizon_ms)
        return out

    def drain(self) -> list[Emission]:
        """Process everything: no more spans or reloads will come (offline runs, restores, tests)."""
        return self.advance(FOREVER, FOREVER, evict=False)

    def apply_through(self, position: ArrivalPosition | None) -> None:
        """Apply every queued reload up to ``position`` at once (start-up, before any span is held).

        Raises:
            RuntimeError: spans are held or answered already; their answers would be skipped.
        """
        if self.held_count() or self.indexed_count():
            raise RuntimeError("apply_through is only for an engine that holds no spans yet")
        while position is not None and self._pending and self._pending[0][0] <= position:
            queued, reload = heapq.heappop(self._pending)
            self._pending_positions.discard(queued)
            self._apply(reload, [])

    def _emit_held(self, *, before_ms: int, out: list[Emission]) -> None:
        deadline_offset = self.grace_ms
        for partition, held in self._held.items():
            starts = self._held_starts[partition]
            while held and held[0].arrival_ms + deadline_offset < before_ms:
                span = held.popleft()
                if starts and starts[0][0] == span.offset and starts[0][1] == span.index:
                    starts.popleft()
                answer = self._answer(span)
                self._index.setdefault(span.service_name, deque()).append(_Indexed(span, answer, 0))
                out.append(Emission(span, answer, 0))
                self.stats.first_answers += 1

    def take_applied(self) -> list[ReloadArrival]:
        """Reloads applied (new to the timeline) since the last call, in application order."""
        applied, self._applied_log = self._applied_log, []
        return applied

    def _apply(self, arrival: ReloadArrival, out: list[Emission]) -> None:
        self._applied_position = arrival.arrival_position
        reload = arrival.reload
        try:
            added = self.timeline.add(reload)
        except ValueError:
            # The same reload_id again with other content: the first one (in arrival order) stays.
            self.stats.conflicting_reloads += 1
            self.stats.conflicting_reload_ids.add(reload.reload_id)
            return
        if not added:
            self.stats.duplicate_reloads += 1
            return
        self._applied_log.append(arrival)
        self.stats.reloads_applied += 1
        if not reload.succeeded:
            return
        effective = reload.effective_time_unix_nano
        oldest_correctable = arrival.arrival_ms - self.horizon_ms
        instance = reload.service_instance_id
        for entry in self._index.get(reload.service_name, ()):
            span = entry.span
            if span.end_time_unix_nano < effective:
                continue
            if instance is not None and span.service_instance_id != instance:
                continue
            answer = self._answer(span)
            if answer == entry.answer:
                continue
            if span.arrival_ms < oldest_correctable:
                self.stats.beyond_horizon += 1
                self.stats.beyond_horizon_reload_ids.add(reload.reload_id)
                continue
            entry.answer = answer
            entry.revision += 1
            out.append(Emission(span, answer, entry.revision, reload.reload_id))
            self.stats.corrections += 1
        evicted = self._evicted_end_seconds.get(reload.service_name)
        if evicted:
            stale = sum(count for second, count in evicted.items() if second >= effective // 1_000_000_000)
            if stale:
                self.stats.beyond_horizon += stale
                self.stats.beyond_horizon_reload_ids.add(reload.reload_id)

    def _answer(self, span: SpanArrival) -> Hashable:
        return self._answer_fn(
            self.timeline,
            span.service_name,
            span.service_instance_id,
            span.start_time_unix_nano,
            span.end_time_unix_nano,
        )

    def _evict(self, cutoff_arrival_ms: int) -> None:
        """Forget answered spans no future reload may correct (arrived before the cutoff).

        Their end times are kept per second, per service, so a reload arriving later still
        reports how many spans it would have had to correct (an upper bound).
        """
        for service, entries in self._index.items():
            if not entries or entries[0].span.arrival_ms >= cutoff_arrival_ms:
                continue
            buckets = self._evicted_end_seconds.setdefault(service, {})
            while entries and entries[0].span.arrival_ms < cutoff_arrival_ms:
                second = entries.popleft().span.end_time_unix_nano // 1_000_000_000
                buckets[second] = buckets.get(second, 0) + 1
            if len(buckets) > _EVICTED_SECONDS_KEPT:
                for second in sorted(buckets)[: len(buckets) - _EVICTED_SECONDS_KEPT]:
                    del buckets[second]

    # --- state for restarts ----------------------------------------------------------------

    def indexed(self) -> Iterable[tuple[SpanArrival, Hashable, int]]:
        """Every answered span still correctable, with its current answer and revision."""
        for entries in self._index.values():
            for entry in entries:
                yield entry.span, entry.answer, entry.revision

    def adopt(self, span: SpanArrival, answer: Hashable, revision: int) -> None:
        """Index a span answered elsewhere (by a previous owner of its partition) as correctable."""
        self._index.setdefault(span.service_name, deque()).append(_Indexed(span, answer, revision))

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop the held and answered spans of partitions this worker no longer owns."""
        gone = set(partitions)
        for partition in gone:
            self._held.pop(partition, None)
            self._held_starts.pop(partition, None)
        for entries in self._index.values():
            if any(entry.span.partition in gone for entry in entries):
                kept = [entry for entry in entries if entry.span.partition not in gone]
                entries.clear()
                entries.extend(kept)


@dataclass(frozen=True)
class RestoredPartition:
    """What :func:`restore_partition` hands back to the live engine."""

    adopt: list[tuple[SpanArrival, Hashable, int]]
    """Answered spans (answer and revision as of ``applied_position``) to index as correctable."""
    emissions: list[Emission]
    """Answers the previous owner never published: changed states and overdue first answers."""
    hold: list[SpanArrival]
    """Spans still inside their grace period relative to ``applied_position``: add them to the live engine."""


def restore_partition(
    *,
    timeline_factory: Callable[[], Timeline],
    answer_fn: AnswerFn,
    grace_ms: int,
    horizon_ms: int,
    reloads: Iterable[ReloadArrival],
    emitted: Iterable[SpanArrival],
    previous_applied_position: ArrivalPosition | None,
    unemitted: Iterable[SpanArrival],
    applied_position: ArrivalPosition | None,
) -> RestoredPartition:
    """Rebuild, deterministically, a partition's state for a worker that has applied reloads up to ``applied_position``.

    The previous owner published answers for ``emitted`` (offsets below its commit) as of
    ``previous_applied_position`` (of the last reload it had applied when it committed). Replaying the
    same arrival-ordered rules gives the exact (answer, revision) of every span at both positions; what
    changed in between, and spans whose grace period ended before ``applied_position``, are emitted now.

    Args:
        timeline_factory: builds an empty timeline for the replay.
        reloads: every known reload (any order); only those up to the two positions are used.
        emitted: spans the previous owner answered, in offset order.
        unemitted: spans after the committed offset, in offset order.
    """
    ordered = sorted(reloads, key=lambda reload: reload.arrival_position)
    replay = EnrichmentEngine(timeline_factory(), answer_fn, grace_ms=grace_ms, horizon_ms=horizon_ms)

    def feed_reloads(low: ArrivalPosition | None, high: ArrivalPosition | None) -> None:
        for reload in ordered:
            if high is None or reload.arrival_position > high:
                break
            if low is None or reload.arrival_position > low:
                replay.add_reload(reload)

    feed_reloads(None, previous_applied_position)
    emitted_spans = list(emitted)
    for span in emitted_spans:
        replay.add_span(span)
    replay.drain()
    before = {span.position: (answer, revision) for span, answer, revision in replay.indexed()}

    applied_ms = applied_position[0] if applied_position is not None else NEVER

    def due(span: SpanArrival) -> bool:
        # The grace period of a due span ended before the last reload applied was.
        return span.arrival_ms + grace_ms < applied_ms

    hold = [span for span in unemitted if not due(span)]
    behind = [span for span in unemitted if due(span)]
    previous_is_ahead = previous_applied_position is not None and (
        applied_position is None or previous_applied_position > applied_position
    )
    if previous_is_ahead:
        # The previous owner applied reloads this worker has not reached yet. Replay the spans
        # that were due at this worker's applied position; the others wait here like new ones. The live
        # engine then re-applies the rest and republishes states identical to those published.
        replay = EnrichmentEngine(timeline_factory(), answer_fn, grace_ms=grace_ms, horizon_ms=horizon_ms)
        feed_reloads(None, applied_position)
        for span in emitted_spans:
            if due(span):
                replay.add_span(span)
            else:
                hold.append(span)
        hold.sort(key=lambda span: (span.offset, span.index))
    else:
        feed_reloads(previous_applied_position, applied_position)
    for span in behind:
        replay.add_span(span)
    replay.drain()

    adopt, emissions = [], []
    for span, answer, revision in replay.indexed():
        adopt.append((span, answer, revision))
        previous = before.get(span.position)
        if previous is None or (not previous_is_ahead and previous != (answer, revision)):
            emissions.append(Emission(span, answer, revision))
    return RestoredPartition(adopt=adopt, emissions=emissions, hold=hold)
