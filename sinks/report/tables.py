"""The report's tables, each defined once: title, columns, cell text and row emphasis.

A :class:`TableSpec` holds only text; :mod:`sinks.report.terminal` and :mod:`sinks.report.html`
render the same spec, each escaping every cell for its medium. The ``format_*`` functions are the
report's one way of writing times, milliseconds, rates and version changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sinks.report.model import Report, as_utc


def format_time(value: datetime | None) -> str:
    return "" if value is None else as_utc(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def format_ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.1f}"


def format_rate(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * 100:.2f}%"


def format_change(row: Mapping[str, Any]) -> str:
    return f"{row['old_version'] or '∅'} → {row['new_version']}"


@dataclass(frozen=True)
class TableSpec:
    """One table of the report, rendered alike in the terminal and in HTML.

    ``row_classes`` name a row's emphasis: ``failed``, ``severity-CRITICAL``, ``severity-WARNING``.
    """

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    numeric: frozenset[int]
    row_classes: list[str] = field(default_factory=list)
    empty: str = ""


def _strongest_severity(report: Report) -> dict[str, str]:
    rank = {"INFO": 1, "WARNING": 2, "CRITICAL": 3}
    strongest: dict[str, str] = {}
    for row in report.anomalies:
        held = strongest.get(row["reload_id"])
        if held is None or rank.get(row["severity"], 0) > rank.get(held, 0):
            strongest[row["reload_id"]] = row["severity"]
    return strongest


def reload_tables(report: Report) -> list[TableSpec]:
    """Reload health by component, before vs after each reload, canaries, rollbacks, late corrections."""
    severity = _strongest_severity(report)
    health = TableSpec(
        "Reload health by component",
        ("service", "component", "attempts", "failed", "failure rate", "p50 duration ms", "max duration ms"),
        [
            (
                r["service_name"],
                r["component"],
                f"{r['attempts']:,}",
                f"{r['failed']:,}",
                format_rate(r["failure_rate"]),
                format_ms(r["p50_duration_ms"]),
                format_ms(r["max_duration_ms"]),
            )
            for r in report.reload_health
        ],
        frozenset({2, 3, 4, 5, 6}),
        ["failed" if r["failed"] else "" for r in report.reload_health],
        "No reload attempts in this period.",
    )
    minutes = f"{report.window_seconds / 60:g} min"
    before_after = TableSpec(
        f"Before vs after each reload (requests started up to {minutes} before / after, cut at the next reload)",
        (
            "effective (UTC)",
            "service",
            "component",
            "change",
            "requests",
            "error rate",
            "p95 ms",
            "Δ p95 ms",
            "anomaly",
        ),
        [
            (
                format_time(r["effective_time"]),
                r["service_name"],
                r["component"],
                format_change(r),
                f"{r['before_requests']:,} → {r['after_requests']:,}",
                f"{format_rate(r['before_error_rate'])} → {format_rate(r['after_error_rate'])}",
                f"{format_ms(r['before_p95_ms'])} → {format_ms(r['after_p95_ms'])}",
                format_ms(r["p95_change_ms"]),
                severity.get(r["reload_id"], ""),
            )
            for r in report.before_after
        ],
        frozenset({4, 5, 6, 7}),
        [f"severity-{severity[r['reload_id']]}" if r["reload_id"] in severity else "" for r in report.before_after],
        "No service-wide reload with requests around it in this period.",
    )
    rollbacks = TableSpec(
        "Rollbacks",
        ("service", "scope", "component", "rolled back", "restored", "served", "rolled back at (UTC)", "by reload"),
        [
            (
                r["service_name"],
                r["scope"],
                r["component"],
                r["rolled_back_version"],
                r["restored_version"],
                f"{r['served_ms'] / 1000:,.1f} s",
                format_time(r["rolled_back_at"]),
                r["rollback_reload_id"],
            )
            for r in report.rollbacks
        ],
        frozenset({5}),
        empty="No rollbacks in this period.",
    )
    corrections = TableSpec(
        "Late corrections (spans whose versions a late reload changed)",
        ("service", "spans", "corrected", "share", "max revision"),
        [
            (
                r["service_name"],
                f"{r['spans']:,}",
                f"{r['corrected']:,}",
                format_rate(r["corrected_share"]),
                str(r["max_revision"]),
            )
            for r in report.corrections
        ],
        frozenset({1, 2, 3, 4}),
        empty="No spans in this period.",
    )
    canaries = TableSpec(
        f"Canary reloads: the instance against its peers ({minutes} after)",
        ("service", "canary", "component", "new version", "requests", "error rate", "p95 ms"),
        [
            (
                r["service_name"],
                r["canary_instance"],
                r["component"],
                r["new_version"],
                f"{r['canary_requests']:,} vs {r['peer_requests']:,}",
                f"{format_rate(r['canary_error_rate'])} vs {format_rate(r['peer_error_rate'])}",
                f"{format_ms(r['canary_p95_ms'])} vs {format_ms(r['peer_p95_ms'])}",
            )
            for r in report.canaries
        ],
        frozenset({4, 5, 6}),
        [f"severity-{severity[r['reload_id']]}" if r["reload_id"] in severity else "" for r in report.canaries],
        "No canary reloads in this period.",
    )
    return [health, before_after, canaries, rollbacks, corrections]
