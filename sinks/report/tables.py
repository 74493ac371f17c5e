"""The report's tables, each defined once: title, columns, cell text and row emphasis.

A :class:`TableSpec` holds only text; :mod:`sinks.report.terminal` and :mod:`sinks.report.html`
render the same spec, each escaping every cell for its medium. The ``format_*`` functions are the
report's one way of writing times, milliseconds, rates and version changes.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
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


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a report table.

    Attributes:
        header: its heading.
        numeric: right-aligned (in HTML a ``td.number``).
        only: ``"terminal"`` or ``"html"`` for a column one medium leaves out; None: both show it.
        terminal_header: a shorter heading in the terminal (None: ``header``).
        terminal_numeric: the terminal's alignment where it differs from ``numeric`` (None: the same).
        emphasis: in the terminal this cell alone shows the row's emphasis (a reload's status, an anomaly's
            severity); in a table without such a column the whole row does.
    """

    header: str
    numeric: bool = False
    only: str | None = None
    terminal_header: str | None = None
    terminal_numeric: bool | None = None
    emphasis: bool = False


@dataclass(frozen=True)
class TableSpec:
    """One table of the report, rendered alike in the terminal and in HTML.

    Attributes:
        title: its heading.
        columns: its columns; each row has one cell per column, in this order.
        rows: the cells, as text.
        row_classes: each row's emphasis ("" for none): ``failed`` or ``severity-<severity>``; in HTML the
            row's class.
        empty: what is said instead of a table without rows.
        terminal_title: the title in the terminal, which has no section headings (None: ``title``).
        italic_title: the terminal prints the title in rich's table-title style (italic).
    """

    title: str
    columns: tuple[Column, ...]
    rows: list[tuple[str, ...]]
    row_classes: list[str] = field(default_factory=list)
    empty: str = ""
    terminal_title: str | None = None
    italic_title: bool = False


def _columns(headers: Sequence[str], numeric: Collection[int]) -> tuple[Column, ...]:
    return tuple(Column(header, numeric=index in numeric) for index, header in enumerate(headers))


def _outcome(total: int, failed: int, failure_rate: float | None, *durations_ms: float | None) -> tuple[str, ...]:
    """The cells of how a group fared: how many, how many failed, their share, then durations in ms."""
    return (f"{total:,}", f"{failed:,}", format_rate(failure_rate), *(format_ms(value) for value in durations_ms))


def report_tables(report: Report) -> list[TableSpec]:
    """The tables after the per-service ones, in the order both media show them."""
    return [reloads_table(report), anomalies_table(report), *reload_tables(report)]


_VERSION_COLUMNS = _columns(
    ("component", "version", "requests", "errors", "error rate", "p50 ms", "p95 ms"), {2, 3, 4, 5, 6}
)


def version_table(report: Report, service: str) -> TableSpec:
    """Requests, errors, error rate, p50 and p95 of one service, by component version."""
    return TableSpec(
        "Requests by version",
        _VERSION_COLUMNS,
        [
            (
                r["component"],
                r["version"],
                *_outcome(r["requests"], r["errors"], r["error_rate"], r["p50_ms"], r["p95_ms"]),
            )
            for r in report.versions
            if r["service_name"] == service
        ],
        empty=f"{service}: no requests with a known version in this period",
        terminal_title=f"{service}: requests by version",
    )


_RELOAD_COLUMNS = (
    Column("effective (UTC)"),
    Column("service"),
    Column("scope"),
    Column("component"),
    Column("change"),
    Column("status", emphasis=True),
    Column("duration ms", numeric=True),
    Column("mid-flight requests", numeric=True, terminal_header="mid-flight"),
    Column("source", only="html"),
    Column("reload id", only="html"),
)


def reloads_table(report: Report) -> TableSpec:
    """Every reload of the period: its change, status, duration and the requests in flight at it."""
    rows = []
    for r in report.reloads:
        mid_flight = report.mid_flight_spans(r["reload_id"])
        rows.append(
            (
                format_time(r["effective_time"]),
                r["service_name"],
                r["scope"],
                r["component"],
                format_change(r),
                r["status"],
                format_ms(r["reload_duration_ms"]),
                "–" if mid_flight is None else f"{mid_flight:,}",
                r["source"],
                r["reload_id"],
            )
        )
    return TableSpec(
        "Reloads",
        _RELOAD_COLUMNS,
        rows,
        ["failed" if r["status"] == "FAILED" else "" for r in report.reloads],
        "No reloads in this period.",
        italic_title=True,
    )


_ANOMALY_COLUMNS = (
    Column("detected (UTC)"),
    Column("service"),
    Column("reload"),
    Column("change"),
    Column("metric"),
    Column("baseline", numeric=True, only="html"),
    Column("observed", numeric=True, only="html"),
    Column("baseline → observed", only="terminal"),
    Column("p-value", numeric=True, terminal_numeric=False),
    Column("severity", emphasis=True),
    Column("detected after", numeric=True, terminal_numeric=False),
)


def anomalies_table(report: Report) -> TableSpec:
    """Every anomaly of the period, with its reload, its figures and how long detection took."""
    return TableSpec(
        "Anomalies",
        _ANOMALY_COLUMNS,
        [
            (
                format_time(a["detected_time"]),
                a["service_name"],
                a["reload_id"] + ("" if a["reload_status"] is not None else " (not stored)"),
                f"{a['component']}: {format_change(a)}",
                a["metric"],
                f"{a['baseline_value']:.4g}",
                f"{a['observed_value']:.4g}",
                f"{a['baseline_value']:.4g} → {a['observed_value']:.4g}",
                f"{a['p_value']:.2g}",
                a["severity"],
                "–" if a["time_to_detect_ms"] is None else f"{a['time_to_detect_ms'] / 1000:,.1f} s",
            )
            for a in report.anomalies
        ],
        [f"severity-{a['severity']}" for a in report.anomalies],
        "No anomalies in this period.",
        italic_title=True,
    )


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
        _columns(
            ("service", "component", "attempts", "failed", "failure rate", "p50 duration ms", "max duration ms"),
            {2, 3, 4, 5, 6},
        ),
        [
            (
                r["service_name"],
                r["component"],
                *_outcome(r["attempts"], r["failed"], r["failure_rate"], r["p50_duration_ms"], r["max_duration_ms"]),
            )
            for r in report.reload_health
        ],
        ["failed" if r["failed"] else "" for r in report.reload_health],
        "No reload attempts in this period.",
    )
    minutes = f"{report.window_seconds / 60:g} min"
    before_after = TableSpec(
        f"Before vs after each reload (requests started up to {minutes} before / after, cut at the next reload)",
        _columns(
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
            {4, 5, 6, 7},
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
        [f"severity-{severity[r['reload_id']]}" if r["reload_id"] in severity else "" for r in report.before_after],
        "No service-wide reload with requests around it in this period.",
    )
    rollbacks = TableSpec(
        "Rollbacks",
        _columns(
            ("service", "scope", "component", "rolled back", "restored", "served", "rolled back at (UTC)", "by reload"),
            {5},
        ),
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
        empty="No rollbacks in this period.",
    )
    corrections = TableSpec(
        "Late corrections (spans whose versions a late reload changed)",
        _columns(("service", "spans", "corrected", "share", "max revision"), {1, 2, 3, 4}),
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
        empty="No spans in this period.",
    )
    canaries = TableSpec(
        f"Canary reloads: the instance against its peers ({minutes} after)",
        _columns(("service", "canary", "component", "new version", "requests", "error rate", "p95 ms"), {4, 5, 6}),
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
        [f"severity-{severity[r['reload_id']]}" if r["reload_id"] in severity else "" for r in report.canaries],
        "No canary reloads in this period.",
    )
    return [health, before_after, canaries, rollbacks, corrections]
