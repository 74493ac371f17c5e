"""When a regression's alert is over (pure): a later clean reload of the same component supersedes it.

Reload B supersedes reload A when both are of the same service and component, B took effect after A,
B SUCCEEDED and applies to A's instances (B service-wide, or the same canary instance), and B's
final look is in with no metric emitted at or above the alert threshold. A's alerts (each metric A
emitted at or above the threshold) then resolve, ending at B's effective time. Looks may arrive in
any order across reloads: a supersession is found whichever of A's and B's looks comes last, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.records import SEVERITIES
from streams.alertmanager import AlertFacts

_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass
class _Reload:
    reload_id: str
    service_name: str
    component: str
    instance: str | None
    old_version: str | None
    new_version: str
    succeeded: bool
    effective_time_unix_nano: int
    final: bool = False
    emitted: dict[str, str] = field(default_factory=dict)
    values: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    published_unix_nano: int = 0


@dataclass(frozen=True, slots=True)
class Resolution:
    """A's alerts resolved by B: every (metric, severity) A fired, ending at B's effective time."""

    reload_id: str
    by_reload_id: str
    ends_at_unix_nano: int
    alerts: tuple[AlertFacts, ...]
    decided_unix_nano: int
    """When the later of the two looks that decided it was published."""


class Supersessions:
    """Follows every reload's looks (ReloadVerdict records) and says which fired reloads are superseded."""

    def __init__(self, min_severity: str) -> None:
        self._min_rank = _RANK[min_severity]
        self._reloads: dict[str, _Reload] = {}
        self._by_component: dict[tuple[str, str], list[str]] = {}
        self._resolved: dict[str, Resolution] = {}

    def add_look(self, verdict: Mapping[str, Any], published_unix_nano: int) -> list[Resolution]:
        """Take one look; returns the supersessions it decided (each at most once ever)."""
        reload = self._reloads.get(verdict["reload_id"])
        if reload is None:
            reload = _Reload(
                verdict["reload_id"],
                verdict["service_name"],
                verdict["component"],
                verdict.get("service_instance_id"),
                verdict.get("old_version"),
                verdict["new_version"],
                verdict.get("status") == "SUCCEEDED",
                int(verdict["effective_time_unix_nano"]),
            )
            self._reloads[reload.reload_id] = reload
            self._by_component.setdefault((reload.service_name, reload.component), []).append(reload.reload_id)
        reload.published_unix_nano = max(reload.published_unix_nano, published_unix_nano)
        reload.final = reload.final or bool(verdict["final"])
        for metric in verdict["metrics"]:
            severity = metric.get("emitted_severity")
            if severity is not None and _RANK.get(severity, -1) > _RANK.get(
                reload.emitted.get(metric["metric"], ""), -1
            ):
                reload.emitted[metric["metric"]] = severity
            reload.values[metric["metric"]] = (
                float(metric["baseline_value"]),
                float(metric["observed_value"]),
                float(metric["p_value"]),
            )
        decided = []
        peers = [self._reloads[rid] for rid in self._by_component[(reload.service_name, reload.component)]]
        if self._fired(reload):
            later = sorted((p for p in peers if self._supersedes(p, reload)), key=lambda p: p.effective_time_unix_nano)
            if later:
                decided += self._resolve(reload, later[0])
        elif self._clean(reload):
            for earlier in peers:
                if self._fired(earlier) and self._supersedes(reload, earlier):
                    decided += self._resolve(earlier, reload)
        return decided

    def superseded(self, reload_id: str) -> Resolution | None:
        return self._resolved.get(reload_id)

    def decided_since(self, since_unix_nano: int) -> list[Resolution]:
        """Supersessions decided by looks published at or after ``since_unix_nano`` (re-posted after a restart)."""
        return sorted(
            (r for r in self._resolved.values() if r.decided_unix_nano >= since_unix_nano),
            key=lambda r: r.decided_unix_nano,
        )

    def _fired(self, reload: _Reload) -> bool:
        return any(_RANK.get(severity, -1) >= self._min_rank for severity in reload.emitted.values())

    def _clean(self, reload: _Reload) -> bool:
        return reload.final and reload.succeeded and not self._fired(reload)

    def _supersedes(self, later: _Reload, earlier: _Reload) -> bool:
        return (
            self._clean(later)
            and later.effective_time_unix_nano > earlier.effective_time_unix_nano
            and (later.instance is None or later.instance == earlier.instance)
        )

    def _resolve(self, earlier: _Reload, later: _Reload) -> list[Resolution]:
        if earlier.reload_id in self._resolved:
            return []
        alerts = []
        for metric, severity in sorted(earlier.emitted.items()):
            baseline, observed, p_value = earlier.values.get(metric, (0.0, 0.0, 1.0))
            top = AlertFacts(
                earlier.reload_id,
                earlier.service_name,
                earlier.component,
                earlier.old_version,
                earlier.new_version,
                metric,
                severity,
                baseline,
                observed,
                p_value,
                earlier.effective_time_unix_nano,
            )
            alerts += [top.at_severity(name) for name in SEVERITIES[self._min_rank : _RANK[severity] + 1]]
        resolution = Resolution(
            earlier.reload_id,
            later.reload_id,
            later.effective_time_unix_nano,
            tuple(alerts),
            max(earlier.published_unix_nano, later.published_unix_nano),
        )
        self._resolved[earlier.reload_id] = resolution
        return [resolution]
