"""`reloadtrace report`: version health, reloads and anomalies from ClickHouse, as tables and one HTML page.

Every figure comes from a named query of the analyst cookbook (``docs/queries.md``, see
:mod:`sinks.report.queries`), so the report shows exactly what the documented, tested SQL answers.
The HTML page needs no network: styles are inline and the charts are SVG generated here (one
latency-over-time chart per service, with a vertical marker at each reload — dashed red for a
FAILED attempt — and a triangle at each anomaly's detection time).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from schemas.errors import ReloadtraceError
from schemas.text import bounded_repr, safe_text
from sinks.report.queries import CookbookQuery, load_cookbook, run_query

_DEFAULT_MAX_POINTS = 60
_DEFAULT_WINDOW_SECONDS = 300
_BUCKET_CHOICES_SECONDS = (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2262, 4, 11, 23, 47, 16, tzinfo=UTC)
_RELATIVE = re.compile(r"^\s*(?P<amount>[0-9]+)\s*(?P<unit>s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

_CHART_WIDTH = 960
_CHART_HEIGHT = 340
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 64, 24, 76, 40
_LABEL_ROWS = 4
_SEVERITY_COLOURS = {"CRITICAL": "#b91c1c", "WARNING": "#ea580c", "INFO": "#6b7280"}


class ReportError(ReloadtraceError):
    """The report cannot be made: no reloadtrace data at the target, or a bad ``--since``."""


def parse_since(text: str | None, *, now: datetime) -> datetime:
    """``--since``: a duration back from ``now`` (``90s``, ``15m``, ``6h``, ``2d``, ``1w``) or an ISO 8601 time.

    An ISO time without a zone is UTC. ``None`` or ``""`` means everything (the Unix epoch); so does
    any time before the epoch (the store holds nothing earlier), however far back.

    Raises:
        ReportError: neither form, or a time after 2262-04-11 (the end of nanosecond time stamps).
    """
    if not text:
        return _EPOCH
    relative = _RELATIVE.match(text)
    if relative:
        seconds = int(relative["amount"]) * _UNIT_SECONDS[relative["unit"]]
        return max(_EPOCH, now - timedelta(seconds=min(seconds, int((now - _EPOCH).total_seconds()) + 1)))
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise ReportError(
            f"--since {bounded_repr(text)}: expected a duration like 15m, 6h, 2d or an ISO 8601 time"
        ) from error
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        moment = moment.astimezone(UTC)
    except (OverflowError, ValueError):  # year 1 with a positive offset, year 9999 with a negative one
        if moment.year > 1970:
            raise ReportError(f"--since {bounded_repr(text)}: after {_LATEST.isoformat()}, the last nanosecond time stamp") from None
        moment = _EPOCH
    if moment > _LATEST:
        raise ReportError(f"--since {bounded_repr(text)}: after {_LATEST.isoformat()}, the last nanosecond time stamp")
    return max(moment, _EPOCH)


def as_utc(value: datetime) -> datetime:
    """clickhouse-connect returns DateTime64(9, 'UTC') as naive UTC (or aware): make it aware."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def choose_bucket_seconds(first: datetime, last: datetime, max_points: int = _DEFAULT_MAX_POINTS) -> int:
    """The smallest usual bucket width giving at most ``max_points`` buckets between first and last."""
    span = max((last - first).total_seconds(), 1.0)
    for width in _BUCKET_CHOICES_SECONDS:
        if span / width <= max_points:
            return width
    return _BUCKET_CHOICES_SECONDS[-1]


@dataclass(frozen=True)
class Report:
    """What the report shows: rows of the cookbook queries it runs, by query name.

    Attributes:
        since: start of the reported period (UTC).
        generated_at: when the report was made (UTC), as given by the caller.
        target: where the data came from, without secrets (for the page header).
        bucket_seconds: width of the latency chart's buckets.
        versions: rows of ``error_rate_p95_by_version``.
        reloads: rows of ``reload_durations``.
        mid_flight: rows of ``mid_flight_spans_per_reload``.
        anomalies: rows of ``anomalies_by_reload``.
        latency: rows of ``latency_over_time``.
        window_seconds: width of the before/after windows of ``before_after``.
        before_after: rows of ``latency_before_after_reload``.
        reload_health: rows of ``reload_failures_by_component``.
        rollbacks: rows of ``rollbacks``.
        corrections: rows of ``late_corrections_by_service``.
        canaries: rows of ``canary_vs_peers``.
    """

    since: datetime
    generated_at: datetime
    target: str
    bucket_seconds: int
    versions: list[dict[str, Any]] = field(default_factory=list)
    reloads: list[dict[str, Any]] = field(default_factory=list)
    mid_flight: list[dict[str, Any]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    latency: list[dict[str, Any]] = field(default_factory=list)
    window_seconds: int = _DEFAULT_WINDOW_SECONDS
    before_after: list[dict[str, Any]] = field(default_factory=list)
    reload_health: list[dict[str, Any]] = field(default_factory=list)
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    corrections: list[dict[str, Any]] = field(default_factory=list)
    canaries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def services(self) -> list[str]:
        """Every service with requests, reloads or anomalies in the period, sorted."""
        names = {
            row["service_name"] for rows in (self.versions, self.reloads, self.anomalies, self.latency) for row in rows
        }
        return sorted(names)

    def mid_flight_spans(self, reload_id: str) -> int | None:
        """Requests in flight when ``reload_id`` took effect (None: FAILED, or outside the period)."""
        return next((row["mid_flight_spans"] for row in self.mid_flight if row["reload_id"] == reload_id), None)


def build_report(
    client: Any,
    *,
    since: datetime,
    now: datetime,
    target: str = "",
    bucket_seconds: int | None = None,
    window_seconds: int = _DEFAULT_WINDOW_SECONDS,
    cookbook: Mapping[str, CookbookQuery] | None = None,
) -> Report:
    """Run the report's cookbook queries through ``client`` (a clickhouse-connect client on the reloadtrace database).

    Args:
        since: report data from this time on.
        now: the report's generation time (injected; the CLI passes the wall clock).
        bucket_seconds: latency chart bucket width; None chooses one giving at most 60 points.
        window_seconds: width of the windows before and after each reload that are compared.

    Raises:
        ReportError: the database has no ``spans_enriched`` table (nothing was ever written there).
        CookbookError: the cookbook is missing or lacks a query the report needs.
    """
    queries = cookbook if cookbook is not None else load_cookbook()
    tables = {row[0] for row in client.query("SHOW TABLES").result_rows}
    missing = {"spans_enriched", "reload_events", "anomalies"} - tables
    if missing:
        raise ReportError(
            f"no reloadtrace tables {sorted(missing)} in database {client.database!r} of {target or 'the sink'}: "
            "nothing was written there yet (run the worker or the sink first)"
        )
    since = as_utc(since)
    if bucket_seconds is None:
        first, last = client.query(
            "SELECT min(start_time), max(start_time) FROM spans_enriched"
            " WHERE start_time >= {since:DateTime64(9, 'UTC')}",
            parameters={"since": since},
        ).result_rows[0]
        bucket_seconds = choose_bucket_seconds(as_utc(first), as_utc(last))
    if bucket_seconds < 1:
        raise ReportError(f"bucket width must be >= 1 second, got {bucket_seconds}")
    if window_seconds < 1:
        raise ReportError(f"window must be >= 1 second, got {window_seconds}")

    def rows(name: str, **parameters: Any) -> list[dict[str, Any]]:
        if name not in queries:
            from sinks.report.queries import CookbookError

            raise CookbookError(f"the cookbook has no query {name!r}, which the report needs")
        query = queries[name]
        given = {"since": since, **parameters}
        return run_query(client, query, {k: v for k, v in given.items() if k in query.parameters})

    reloads = rows("reload_durations")
    return Report(
        since=since,
        generated_at=as_utc(now),
        target=target,
        bucket_seconds=bucket_seconds,
        versions=rows("error_rate_p95_by_version"),
        reloads=reloads,
        mid_flight=rows("mid_flight_spans_per_reload"),
        anomalies=rows("anomalies_by_reload"),
        latency=rows("latency_over_time", bucket_seconds=bucket_seconds),
        window_seconds=window_seconds,
        before_after=rows("latency_before_after_reload", window_seconds=window_seconds),
        reload_health=rows("reload_failures_by_component"),
        rollbacks=rows("rollbacks"),
        corrections=rows("late_corrections_by_service"),
        canaries=[
            row
            for row in rows("canary_vs_peers", window_seconds=window_seconds)
            if any(r["reload_id"] == row["reload_id"] for r in reloads)
        ],
    )


# ---------------------------------------------------------------- formatting


def _time(value: datetime | None) -> str:
    return "" if value is None else as_utc(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.1f}"


def _rate(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * 100:.2f}%"


def _change(row: Mapping[str, Any]) -> str:
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
                _rate(r["failure_rate"]),
                _ms(r["p50_duration_ms"]),
                _ms(r["max_duration_ms"]),
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
                _time(r["effective_time"]),
                r["service_name"],
                r["component"],
                _change(r),
                f"{r['before_requests']:,} → {r['after_requests']:,}",
                f"{_rate(r['before_error_rate'])} → {_rate(r['after_error_rate'])}",
                f"{_ms(r['before_p95_ms'])} → {_ms(r['after_p95_ms'])}",
                _ms(r["p95_change_ms"]),
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
                _time(r["rolled_back_at"]),
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
                _rate(r["corrected_share"]),
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
                f"{_rate(r['canary_error_rate'])} vs {_rate(r['peer_error_rate'])}",
                f"{_ms(r['canary_p95_ms'])} vs {_ms(r['peer_p95_ms'])}",
            )
            for r in report.canaries
        ],
        frozenset({4, 5, 6}),
        [f"severity-{severity[r['reload_id']]}" if r["reload_id"] in severity else "" for r in report.canaries],
        "No canary reloads in this period.",
    )
    return [health, before_after, canaries, rollbacks, corrections]


_TERMINAL_STYLES = {"failed": "red", "severity-CRITICAL": "bold red", "severity-WARNING": "yellow"}


def _text(value: Any, style: str = "") -> Text:
    """A terminal cell or line: the value as literal text (never markup), control characters made visible."""
    return Text(safe_text(value), style=style)


def _print_spec(spec: TableSpec, console: Console) -> None:
    if not spec.rows:
        console.print(_text(spec.empty, "dim"))
        return
    table = Table(title=_text(spec.title), title_justify="left")
    for index, header in enumerate(spec.headers):
        table.add_column(header, justify="right" if index in spec.numeric else "left")
    for index, row in enumerate(spec.rows):
        css = spec.row_classes[index] if index < len(spec.row_classes) else ""
        table.add_row(*(_text(cell) for cell in row), style=_TERMINAL_STYLES.get(css))
    console.print(table)


# ---------------------------------------------------------------- terminal


def render_terminal(report: Report, console: Console) -> None:
    """Print the report's tables: versions per service, reloads (with mid-flight counts), anomalies."""
    console.print(
        Text.assemble(
            ("reloadtrace report", "bold"),
            _text(f" — {report.target or 'sink'} — since {_time(report.since)} UTC, generated {_time(report.generated_at)} UTC"),
        )
    )
    if not report.services:
        console.print(_text("No spans, reloads or anomalies in this period.", "yellow"))
        return
    for service in report.services:
        table = Table(title=_text(f"{service}: requests by version"), title_justify="left")
        for column in ("component", "version", "requests", "errors", "error rate", "p50 ms", "p95 ms"):
            table.add_column(column, justify="left" if column in ("component", "version") else "right")
        for row in (r for r in report.versions if r["service_name"] == service):
            table.add_row(
                _text(row["component"]),
                _text(row["version"]),
                f"{row['requests']:,}",
                f"{row['errors']:,}",
                _rate(row["error_rate"]),
                _ms(row["p50_ms"]),
                _ms(row["p95_ms"]),
            )
        if table.row_count:
            console.print(table)
        else:
            console.print(_text(f"{service}: no requests with a known version in this period", "dim"))

    reloads = Table(title="Reloads", title_justify="left")
    for column in ("effective (UTC)", "service", "scope", "component", "change", "status", "duration ms", "mid-flight"):
        reloads.add_column(column, justify="right" if column in ("duration ms", "mid-flight") else "left")
    for row in report.reloads:
        mid_flight = report.mid_flight_spans(row["reload_id"])
        status = _text(row["status"], "bold red" if row["status"] == "FAILED" else "green")
        reloads.add_row(
            _time(row["effective_time"]),
            _text(row["service_name"]),
            _text(row["scope"]),
            _text(row["component"]),
            _text(_change(row)),
            status,
            _ms(row["reload_duration_ms"]),
            "–" if mid_flight is None else f"{mid_flight:,}",
        )
    console.print(reloads if reloads.row_count else _text("No reloads in this period.", "dim"))

    anomalies = Table(title="Anomalies", title_justify="left")
    for column in (
        "detected (UTC)",
        "service",
        "reload",
        "change",
        "metric",
        "baseline → observed",
        "p-value",
        "severity",
        "detected after",
    ):
        anomalies.add_column(column)
    for row in report.anomalies:
        colour = {"CRITICAL": "bold red", "WARNING": "yellow"}.get(row["severity"], "dim")
        after = row["time_to_detect_ms"]
        anomalies.add_row(
            _time(row["detected_time"]),
            _text(row["service_name"]),
            _text(row["reload_id"] + ("" if row["reload_status"] is not None else " (not stored)")),
            _text(f"{row['component']}: {_change(row)}"),
            _text(row["metric"]),
            f"{row['baseline_value']:.4g} → {row['observed_value']:.4g}",
            f"{row['p_value']:.2g}",
            _text(row["severity"], colour),
            "–" if after is None else f"{after / 1000:,.1f} s",
        )
    console.print(anomalies if anomalies.row_count else _text("No anomalies in this period.", "dim"))
    for spec in reload_tables(report):
        _print_spec(spec, console)


# ---------------------------------------------------------------- HTML


def _e(value: Any) -> str:
    """Text for HTML: escaped, control characters made visible."""
    return html.escape(safe_text(value), quote=True)


def _nice_ceiling(value: float) -> float:
    if value <= 0 or math.isnan(value):
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def render_chart(report: Report, service: str) -> str:
    """The latency-over-time SVG of one service: p50/p95 lines, reload markers, anomaly markers."""
    points = [row for row in report.latency if row["service_name"] == service]
    reloads = [row for row in report.reloads if row["service_name"] == service]
    anomalies = [row for row in report.anomalies if row["service_name"] == service]
    bucket = timedelta(seconds=report.bucket_seconds)
    times = [as_utc(p["bucket_start"]) + bucket / 2 for p in points]
    times += [as_utc(r["effective_time"]) for r in reloads] + [as_utc(a["detected_time"]) for a in anomalies]
    if not times:
        return ""
    start, end = min(times), max(times)
    if end <= start:
        start, end = start - bucket, end + bucket
    pad = (end - start) * 0.02
    start, end = start - pad, end + pad
    p95s = [p["p95_ms"] for p in points if _finite(p["p95_ms"])]
    y_max = _nice_ceiling(max(p95s, default=1.0) * 1.05)
    left, right = _MARGIN_LEFT, _CHART_WIDTH - _MARGIN_RIGHT
    top, bottom = _MARGIN_TOP, _CHART_HEIGHT - _MARGIN_BOTTOM
    total = (end - start).total_seconds()

    def x_of(moment: datetime) -> float:
        return left + (as_utc(moment) - start).total_seconds() / total * (right - left)

    def y_of(value: float) -> float:
        return bottom - value / y_max * (bottom - top)

    parts = [
        (
            f'<svg class="latency-chart" data-service="{_e(service)}" xmlns="http://www.w3.org/2000/svg" '
            f'viewBox="0 0 {_CHART_WIDTH} {_CHART_HEIGHT}" width="{_CHART_WIDTH}" height="{_CHART_HEIGHT}" role="img" '
            f'aria-label="Latency of {_e(service)} over time, with reloads and anomalies">'
        ),
        (
            f'<rect class="plot-area" x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
            'fill="#fafafa" stroke="#d4d4d8"/>'
        ),
    ]
    for index in range(6):
        value = y_max * index / 5
        y = y_of(value)
        parts.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e7"/>')
        parts.append(
            f'<text class="y-tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{value:,.0f}</text>'
        )
    parts.append(
        f'<text x="14" y="{(top + bottom) / 2:.0f}" transform="rotate(-90 14 {(top + bottom) / 2:.0f})" '
        'text-anchor="middle" font-size="11">latency (ms)</text>'
    )
    step = next((width for width in _BUCKET_CHOICES_SECONDS if total / width <= 8), _BUCKET_CHOICES_SECONDS[-1])
    tick = _EPOCH + timedelta(seconds=math.ceil((start - _EPOCH).total_seconds() / step) * step)
    while tick <= end:
        x = x_of(tick)
        label = (
            tick.strftime("%H:%M:%S" if step < 60 else "%H:%M") if total < 2 * 86400 else tick.strftime("%m-%d %H:%M")
        )
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#71717a"/>')
        parts.append(
            f'<text class="x-tick" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" font-size="11">{label}</text>'
        )
        tick += timedelta(seconds=step)
    parts.append(f'<text x="{right}" y="{bottom + 32}" text-anchor="end" font-size="11">time (UTC)</text>')

    for row in reloads:
        requested, effective = as_utc(row["requested_time"]), as_utc(row["effective_time"])
        if requested < effective and requested >= start:
            x0, x1 = x_of(requested), x_of(effective)
            parts.append(
                f'<rect class="reload-duration" x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 0.5):.1f}" '
                f'height="{bottom - top}" fill="#93c5fd" fill-opacity="0.25"/>'
            )
    for series, colour, width in (("p95_ms", "#7c3aed", 2), ("p50_ms", "#0d9488", 1.5)):
        coordinates = [
            f"{x_of(as_utc(p['bucket_start']) + bucket / 2):.1f},{y_of(p[series]):.1f}"
            for p in points
            if _finite(p[series])
        ]
        if coordinates:
            parts.append(
                f'<polyline class="series" data-series="{series[:3]}" fill="none" stroke="{colour}" '
                f'stroke-width="{width}" points="{" ".join(coordinates)}"/>'
            )
    for p in points:
        if not _finite(p["p95_ms"]):
            continue
        x, y = x_of(as_utc(p["bucket_start"]) + bucket / 2), y_of(p["p95_ms"])
        fill = "#dc2626" if p["errors"] else "#7c3aed"
        tip = (
            f"{_time(p['bucket_start'])} +{report.bucket_seconds}s: {p['requests']} requests, {p['errors']} errors, "
            f"p50 {_ms(p['p50_ms'])} ms, p95 {_ms(p['p95_ms'])} ms"
        )
        parts.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{fill}"><title>{_e(tip)}</title></circle>'
        )

    parts.extend(_reload_markers(reloads, x_of, left=left, right=right, bottom=bottom))
    for row in anomalies:
        x, y = x_of(row["detected_time"]), top + 2
        colour = _SEVERITY_COLOURS.get(row["severity"], "#6b7280")
        tip = (
            f"{row['severity']} {row['metric']} after {row['reload_id']} ({row['component']} {_change(row)}): "
            f"{row['baseline_value']:.4g} → {row['observed_value']:.4g}, p={row['p_value']:.2g}, "
            f"detected {_time(row['detected_time'])}"
        )
        parts.append(
            f'<g class="anomaly-marker" data-anomaly-id="{_e(row["anomaly_id"])}" '
            f'data-severity="{_e(row["severity"])}">'
            f"<title>{_e(tip)}</title>"
            f'<path d="M{x - 7:.1f},{y:.1f} L{x + 7:.1f},{y:.1f} L{x:.1f},{y + 12:.1f} Z" '
            f'fill="{colour}" stroke="white"/></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _reload_label(row: Mapping[str, Any]) -> str:
    label = f"{row['component']}:{row['new_version']}" + (" FAILED" if row["status"] == "FAILED" else "")
    return label + (f" @{row['scope']}" if row["scope"] != "*" else "")


def _reload_markers(
    reloads: Sequence[Mapping[str, Any]], x_of: Any, *, left: float, right: float, bottom: float
) -> list[str]:
    """One ``g.reload-marker`` per reload: a vertical line at its effective time and a label.

    Reloads of the same status closer than a few pixels (the initial versions of every component,
    a batch rollout) share one visible label, "first (+N)"; each still has its own element, whose
    ``data-label`` and tooltip name it. Labels go to the first of the label rows where they do not
    overlap the previous one (width estimated from the text length).
    """
    ordered = sorted(reloads, key=lambda r: (r["effective_time"], r["status"] == "FAILED", r["reload_id"]))
    clusters: list[list[Mapping[str, Any]]] = []
    for row in ordered:
        last = clusters[-1] if clusters else None
        if (
            last
            and last[0]["status"] == row["status"]
            and x_of(row["effective_time"]) - x_of(last[0]["effective_time"]) < 4
        ):
            last.append(row)
        else:
            clusters.append([row])
    row_ends = [-math.inf] * _LABEL_ROWS
    parts: list[str] = []
    for cluster in clusters:
        first = cluster[0]
        x = x_of(first["effective_time"])
        failed = first["status"] == "FAILED"
        colour = "#dc2626" if failed else "#2563eb"
        text = _reload_label(first) + (f" (+{len(cluster) - 1})" if len(cluster) > 1 else "")
        width = 6.3 * len(text)
        anchor = "end" if x + width > right else "start"
        span = (x - width - 3, x) if anchor == "end" else (x, x + width + 3)
        free = [index for index, end in enumerate(row_ends) if end < span[0] - 6]
        label_row = free[0] if free else min(range(_LABEL_ROWS), key=lambda index: row_ends[index])
        row_ends[label_row] = max(row_ends[label_row], span[1])
        label_y = 16 + label_row * 16
        for position, row in enumerate(cluster):
            dash = ' stroke-dasharray="6 4"' if failed else (' stroke-dasharray="2 3"' if row["scope"] != "*" else "")
            tip = (
                f"{row['reload_id']} {row['status']}: {row['component']} {_change(row)} on {row['service_name']}"
                f" ({'every instance' if row['scope'] == '*' else row['scope']}),"
                f" requested {_time(row['requested_time'])}, effective {_time(row['effective_time'])}"
                f" ({_ms(row['reload_duration_ms'])} ms), source {row['source']}"
            )
            visible = ""
            if position == 0:
                weight = ' font-weight="bold"' if failed else ""
                visible = (
                    f'<text x="{x + (3 if anchor == "start" else -3):.1f}" y="{label_y}" text-anchor="{anchor}" '
                    f'font-size="11" fill="{colour}"{weight}>{_e(text)}</text>'
                )
            parts.append(
                f'<g class="reload-marker{" failed" if failed else ""}" data-reload-id="{_e(row["reload_id"])}" '
                f'data-status="{_e(row["status"])}" data-label="{_e(_reload_label(row))}"><title>{_e(tip)}</title>'
                f'<line x1="{x_of(row["effective_time"]):.1f}" x2="{x_of(row["effective_time"]):.1f}" '
                f'y1="{label_y + 4}" '
                f'y2="{bottom}" stroke="{colour}" stroke-width="1.5"{dash}/>{visible}</g>'
            )
    return parts


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #18181b; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 32px; } h3 { font-size: 15px; }
.meta { color: #52525b; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0 16px; }
th, td { border-bottom: 1px solid #e4e4e7; padding: 4px 10px; text-align: left; white-space: nowrap; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { color: #b91c1c; font-weight: 600; }
.table-wrap { overflow-x: auto; max-width: 100%; }
.legend { font-size: 12px; color: #3f3f46; margin: 4px 0 12px; }
.legend span { margin-right: 16px; white-space: nowrap; }
.swatch { display: inline-block; width: 18px; height: 0; border-top: 2px solid; vertical-align: middle;
  margin-right: 4px; }
.severity-CRITICAL { color: #b91c1c; font-weight: 600; } .severity-WARNING { color: #c2410c; }
"""

_LEGEND = (
    '<div class="legend">'
    '<span><i class="swatch" style="border-color:#7c3aed"></i>p95</span>'
    '<span><i class="swatch" style="border-color:#0d9488"></i>p50</span>'
    '<span><i class="swatch" style="border-color:#2563eb"></i>reload (effective time)</span>'
    '<span><i class="swatch" style="border-color:#2563eb;border-top-style:dotted"></i>canary reload</span>'
    '<span><i class="swatch" style="border-color:#dc2626;border-top-style:dashed"></i>FAILED reload</span>'
    '<span style="color:#b91c1c">▼</span> anomaly (detection time) '
    '<span style="color:#dc2626">●</span> bucket with errors'
    "</div>"
)


def _html_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: set[int], row_classes: Sequence[str] = ()
) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{_e(row_classes[index])}"' if index < len(row_classes) and row_classes[index] else ""
        cells = "".join(
            f'<td class="number">{_e(cell)}</td>' if column in numeric else f"<td>{_e(cell)}</td>"
            for column, cell in enumerate(row)
        )
        body.append(f"<tr{css}>{cells}</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="table-wrap">{table}</div>'


def render_html(report: Report) -> str:
    """The whole report as one HTML document with no external resources."""
    sections = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>reloadtrace report — {_e(_time(report.generated_at))} UTC</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>reloadtrace report</h1>",
        (
            f'<p class="meta">Data: {_e(report.target or "sink")} · since {_e(_time(report.since))} UTC · '
            f"generated {_e(_time(report.generated_at))} UTC · latency buckets of {report.bucket_seconds} s · "
            "requests are SERVER spans</p>"
        ),
    ]
    if not report.services:
        sections.append("<p>No spans, reloads or anomalies in this period.</p>")
    for service in report.services:
        sections.append(f'<section class="service" data-service="{_e(service)}"><h2>{_e(service)}</h2>')
        chart = render_chart(report, service)
        if chart:
            sections.append(_LEGEND + chart)
        rows = [r for r in report.versions if r["service_name"] == service]
        if rows:
            sections.append("<h3>Requests by version</h3>")
            sections.append(
                _html_table(
                    ("component", "version", "requests", "errors", "error rate", "p50 ms", "p95 ms"),
                    [
                        (
                            r["component"],
                            r["version"],
                            f"{r['requests']:,}",
                            f"{r['errors']:,}",
                            _rate(r["error_rate"]),
                            _ms(r["p50_ms"]),
                            _ms(r["p95_ms"]),
                        )
                        for r in rows
                    ],
                    numeric={2, 3, 4, 5, 6},
                )
            )
        sections.append("</section>")
    sections.append("<h2>Reloads</h2>")
    if report.reloads:
        rows_out, classes = [], []
        for r in report.reloads:
            mid_flight = report.mid_flight_spans(r["reload_id"])
            rows_out.append(
                (
                    _time(r["effective_time"]),
                    r["service_name"],
                    r["scope"],
                    r["component"],
                    _change(r),
                    r["status"],
                    _ms(r["reload_duration_ms"]),
                    "–" if mid_flight is None else f"{mid_flight:,}",
                    r["source"],
                    r["reload_id"],
                )
            )
            classes.append("failed" if r["status"] == "FAILED" else "")
        sections.append(
            _html_table(
                (
                    "effective (UTC)",
                    "service",
                    "scope",
                    "component",
                    "change",
                    "status",
                    "duration ms",
                    "mid-flight requests",
                    "source",
                    "reload id",
                ),
                rows_out,
                numeric={6, 7},
                row_classes=classes,
            )
        )
    else:
        sections.append("<p>No reloads in this period.</p>")
    sections.append("<h2>Anomalies</h2>")
    if report.anomalies:
        sections.append(
            _html_table(
                (
                    "detected (UTC)",
                    "service",
                    "reload",
                    "change",
                    "metric",
                    "baseline",
                    "observed",
                    "p-value",
                    "severity",
                    "detected after",
                ),
                [
                    (
                        _time(a["detected_time"]),
                        a["service_name"],
                        a["reload_id"] + ("" if a["reload_status"] is not None else " (not stored)"),
                        f"{a['component']}: {_change(a)}",
                        a["metric"],
                        f"{a['baseline_value']:.4g}",
                        f"{a['observed_value']:.4g}",
                        f"{a['p_value']:.2g}",
                        a["severity"],
                        "–" if a["time_to_detect_ms"] is None else f"{a['time_to_detect_ms'] / 1000:,.1f} s",
                    )
                    for a in report.anomalies
                ],
                numeric={5, 6, 7, 9},
                row_classes=[f"severity-{a['severity']}" for a in report.anomalies],
            )
        )
    else:
        sections.append("<p>No anomalies in this period.</p>")
    for spec in reload_tables(report):
        sections.append(f"<h2>{_e(spec.title)}</h2>")
        if spec.rows:
            sections.append(_html_table(spec.headers, spec.rows, set(spec.numeric), row_classes=spec.row_classes))
        else:
            sections.append(f"<p>{_e(spec.empty)}</p>")
    sections.append("</body></html>")
    return "\n".join(sections)


# ---------------------------------------------------------------- the command's edge


def open_report_client(sink_url: str | None) -> tuple[Any, str]:
    """A clickhouse-connect client on the sink's database (the sink's own settings and client), and its description.

    ``sink_url`` None uses ``RELOADTRACE_SINK_URL`` (default ``chdb://./data/chdb``).

    Raises:
        ReportError: no data directory (chdb), or the database does not exist there.
        SinkConfigError: bad URL (from :mod:`sinks.settings`).
    """
    from sinks.clickhouse import open_client
    from sinks.errors import SinkConfigError
    from sinks.settings import SinkSettings

    settings = SinkSettings(**({"url": sink_url} if sink_url else {}))
    target = settings.target()
    if target.embedded and not Path(target.path).is_dir():  # opening it would create an empty store
        raise ReportError(f"{safe_text(target.describe())}: no such data directory (run the worker or the sink first)")
    try:
        client = open_client(target)  # on the default database: the sink's may not exist
    except SinkConfigError as error:
        if not target.embedded:
            raise
        raise ReportError(
            f"{error} — chDB lets one process open a data directory: if a worker or sink runs on "
            f"{target.path}, stop it first, or report from a ClickHouse server"
        ) from error
    exists = client.query(
        "SELECT count() FROM system.databases WHERE name = {database:String}", parameters={"database": target.database}
    ).result_rows[0][0]
    if not exists:
        client.close()
        raise ReportError(
            f"{target.describe()}: database {target.database!r} does not exist (run the worker or the sink first)"
        )
    client.database = target.database
    return client, target.describe()
