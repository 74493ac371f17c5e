"""The version timeline: which version of each component served (service, instance) at time t.

Pure and in memory. Per (service, component), SUCCEEDED reloads are kept sorted by
(effective time, reload_id) twice over: service-wide ones in one list, instance-scoped ones in one
list per instance, so "version at t" is two binary searches and "reloads between" is a binary
search into a per-(service, instance) list of change points. Semantics (DESIGN.md, "Enrichment
semantics"): the active version of (S, I, C) at t is the ``new_version`` of the SUCCEEDED reload
of (S, C) with the greatest ``effective_time_unix_nano`` <= t among those whose instance is I or
null; on equal effective times an instance-specific reload wins over a service-wide one, and any
remaining tie goes to the greatest ``reload_id`` — so the answer never depends on the order in
which reloads were added. FAILED reloads are stored (see :meth:`VersionTimeline.reloads`) but never
change a version.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from schemas.records import ReloadEvent
from schemas.text import bounded_repr

_EMPTY: Mapping[str, ActiveVersion] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ActiveVersion:
    """The version of one component serving at some time, and the reload that set it."""

    component: str
    version: str
    reload_id: str
    effective_time_unix_nano: int
    service_instance_id: str | None
    """None when the reload that set it was service-wide."""


@dataclass(slots=True)
class _Sorted:
    """SUCCEEDED reloads of one scope sorted by (effective time, reload_id); parallel arrays."""

    keys: list[tuple[int, str]] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    entries: list[ActiveVersion] = field(default_factory=list)

    def add(self, entry: ActiveVersion) -> None:
        key = (entry.effective_time_unix_nano, entry.reload_id)
        index = bisect_right(self.keys, key)
        self.keys.insert(index, key)
        self.times.insert(index, key[0])
        self.entries.insert(index, entry)

    def at(self, time_unix_nano: int) -> ActiveVersion | None:
        """The entry with the greatest (effective, reload_id) among effective <= t, or None."""
        index = bisect_right(self.times, time_unix_nano)
        return self.entries[index - 1] if index else None


@dataclass(slots=True)
class _Component:
    service_wide: _Sorted = field(default_factory=_Sorted)
    by_instance: dict[str, _Sorted] = field(default_factory=dict)


@dataclass(slots=True)
class _Service:
    components: dict[str, _Component] = field(default_factory=dict)
    all_reloads: list[tuple[int, str, ReloadEvent]] = field(default_factory=list)
    """Every reload (FAILED too) sorted by (effective time, reload_id)."""
    wide_succeeded: list[tuple[int, str, ReloadEvent]] = field(default_factory=list)
    instance_succeeded: dict[str, list[tuple[int, str, ReloadEvent]]] = field(default_factory=dict)
    change_points: dict[str, list[int]] = field(default_factory=dict)
    """Cache: instance -> sorted distinct effective times of the SUCCEEDED reloads applying to it."""
    revision: int = 0


class VersionTimeline:
    """Every reload seen so far, answering version queries in O(log n) per component.

    Guarantees: answers depend only on the set of reloads added, never on their order; adding
    the identical reload twice is a no-op. Non-guarantees: not thread-safe; nothing is ever
    forgotten (memory grows with the number of reloads, which is small next to spans).
    """

    def __init__(self) -> None:
        self._services: dict[str, _Service] = {}
        self._by_id: dict[str, ReloadEvent] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, reload_id: object) -> bool:
        return reload_id in self._by_id

    def add(self, reload: ReloadEvent) -> bool:
        """Store a reload. True when it is new, False when this exact reload was already stored.

        Raises:
            ValueError: its reload_id is already stored with different content.
        """
        known = self._by_id.get(reload.reload_id)
        if known is not None:
            if known != reload:
                raise ValueError(f"reload {bounded_repr(reload.reload_id)} is already known with different content")
            return False
        self._by_id[reload.reload_id] = reload
        service = self._services.get(reload.service_name)
        if service is None:
            service = self._services[reload.service_name] = _Service()
        row = (reload.effective_time_unix_nano, reload.reload_id, reload)
        insort(service.all_reloads, row, key=_row_key)
        service.revision += 1
        if not reload.succeeded:
            return True
        component = service.components.get(reload.component)
        if component is None:
            component = service.components[reload.component] = _Component()
        entry = ActiveVersion(
            reload.component,
            reload.new_version,
            reload.reload_id,
            reload.effective_time_unix_nano,
            reload.service_instance_id,
        )
        instance = reload.service_instance_id
        if instance is None:
            component.service_wide.add(entry)
            insort(service.wide_succeeded, row, key=_row_key)
            service.change_points.clear()
        else:
            component.by_instance.setdefault(instance, _Sorted()).add(entry)
            insort(service.instance_succeeded.setdefault(instance, []), row, key=_row_key)
            service.change_points.pop(instance, None)
        return True

    def get(self, reload_id: str) -> ReloadEvent | None:
        """The stored reload with this id, or None."""
        return self._by_id.get(reload_id)

    # --- queries -------------------------------------------------------------------------------

    def version_at(self, service_name: str, service_instance_id: str, component: str, time_unix_nano: int) -> ActiveVersion | None:
        """The version of one component active at ``time_unix_nano``, or None when none is known."""
        service = self._services.get(service_name)
        if service is None:
            return None
        history = service.components.get(component)
        if history is None:
            return None
        return _best(history, service_instance_id, time_unix_nano)

    def versions_at(self, service_name: str, service_instance_id: str, time_unix_nano: int) -> Mapping[str, ActiveVersion]:
        """component -> version active at ``time_unix_nano``; components with none known are absent."""
        service = self._services.get(service_name)
        if service is None:
            return _EMPTY
        active = {}
        for name, history in service.components.items():
            best = _best(history, service_instance_id, time_unix_nano)
            if best is not None:
                active[name] = best
        return active

    def reloads_between(
        self, service_name: str, service_instance_id: str, start_exclusive: int, end_inclusive: int
    ) -> list[ReloadEvent]:
        """SUCCEEDED reloads applying to (service, instance) with start < effective <= end.

        In (effective time, reload_id) order; service-wide and instance-scoped ones merged.
        """
        service = self._services.get(service_name)
        if service is None or end_inclusive <= start_exclusive:
            return []
        found = _window(service.wide_succeeded, start_exclusive, end_inclusive)
        scoped = service.instance_succeeded.get(service_instance_id)
        if scoped:
            found += _window(scoped, start_exclusive, end_inclusive)
            found.sort(key=_row_key)
        return [row[2] for row in found]

    def change_points(self, service_name: str, service_instance_id: str) -> list[int]:
        """Sorted distinct effective times at which (service, instance)'s answer may change.

        Between two consecutive change points (``bisect_right(points, t)`` equal) every query of
        this class gives the same answer, which lets callers memoise by segment. The list is
        shared: do not modify it; it is rebuilt after the next :meth:`add` touching the service.
        """
        service = self._services.get(service_name)
        if service is None:
            return []
        points = service.change_points.get(service_instance_id)
        if points is None:
            times = {row[0] for row in service.wide_succeeded}
            times.update(row[0] for row in service.instance_succeeded.get(service_instance_id, ()))
            points = service.change_points[service_instance_id] = sorted(times)
        return points

    def revision(self, service_name: str) -> int:
        """A counter that grows whenever a reload of ``service_name`` is added (cache invalidation)."""
        service = self._services.get(service_name)
        return service.revision if service is not None else 0

    # --- listing -------------------------------------------------------------------------------

    def reloads(self, service_name: str) -> list[ReloadEvent]:
        """Every stored reload of a service, FAILED ones too, in (effective time, reload_id) order."""
        service = self._services.get(service_name)
        return [row[2] for row in service.all_reloads] if service is not None else []

    def services(self) -> list[str]:
        """Names of the services with at least one stored reload, sorted."""
        return sorted(self._services)

    def __iter__(self) -> Iterator[ReloadEvent]:
        """Every stored reload, by service then effective time."""
        for name in self.services():
            yield from self.reloads(name)


def _row_key(row: tuple[int, str, ReloadEvent]) -> tuple[int, str]:
    return row[0], row[1]


def _window(rows: list[tuple[int, str, ReloadEvent]], start_exclusive: int, end_inclusive: int) -> list:
    low = bisect_right(rows, start_exclusive, key=_time_of)
    high = bisect_right(rows, end_inclusive, key=_time_of)
    return rows[low:high]


def _time_of(row: tuple[int, str, ReloadEvent]) -> int:
    return row[0]


def _best(history: _Component, service_instance_id: str, time_unix_nano: int) -> ActiveVersion | None:
    wide = history.service_wide.at(time_unix_nano) if history.service_wide.entries else None
    scoped_history = history.by_instance.get(service_instance_id)
    scoped = scoped_history.at(time_unix_nano) if scoped_history is not None else None
    if scoped is None:
        return wide
    if wide is None or scoped.effective_time_unix_nano >= wide.effective_time_unix_nano:
        return scoped
    return wide
