"""The latency-over-time SVG chart of one service, with a marker at each reload and each anomaly.

The chart needs no network and no script: p50/p95 lines per bucket, a vertical marker at each
reload's effective time (dashed red for a FAILED attempt, dotted for a canary) and a triangle at
each anomaly's detection time. Every value read from the store is escaped (:func:`escape`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from schemas.text import safe_text
from sinks.report.model import BUCKET_CHOICES_SECONDS, EPOCH, Report, as_utc
from sinks.report.tables import format_change, format_ms, format_time

_CHART_WIDTH = 960
_CHART_HEIGHT = 340
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 64, 24, 76, 40
_LABEL_ROWS = 4
_SEVERITY_COLOURS = {"CRITICAL": "#b91c1c", "WARNING": "#ea580c", "INFO": "#6b7280"}


def escape(value: Any) -> str:
    """Text for HTML and SVG: escaped, control characters made visible."""
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
            f'<svg class="latency-chart" data-service="{escape(service)}" xmlns="http://www.w3.org/2000/svg" '
            f'viewBox="0 0 {_CHART_WIDTH} {_CHART_HEIGHT}" width="{_CHART_WIDTH}" height="{_CHART_HEIGHT}" role="img" '
            f'aria-label="Latency of {escape(service)} over time, with reloads and anomalies">'
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
    step = next((width for width in BUCKET_CHOICES_SECONDS if total / width <= 8), BUCKET_CHOICES_SECONDS[-1])
    tick = EPOCH + timedelta(seconds=math.ceil((start - EPOCH).total_seconds() / step) * step)
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
            f"{format_time(p['bucket_start'])} +{report.bucket_seconds}s: {p['requests']} requests, {p['errors']} errors, "
            f"p50 {format_ms(p['p50_ms'])} ms, p95 {format_ms(p['p95_ms'])} ms"
        )
        parts.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{fill}"><title>{escape(tip)}</title></circle>'
        )

    parts.extend(_reload_markers(reloads, x_of, left=left, right=right, bottom=bottom))
    for row in anomalies:
        x, y = x_of(row["detected_time"]), top + 2
        colour = _SEVERITY_COLOURS.get(row["severity"], "#6b7280")
        tip = (
            f"{row['severity']} {row['metric']} after {row['reload_id']} ({row['component']} {format_change(row)}): "
            f"{row['baseline_value']:.4g} → {row['observed_value']:.4g}, p={row['p_value']:.2g}, "
            f"detected {format_time(row['detected_time'])}"
        )
        parts.append(
            f'<g class="anomaly-marker" data-anomaly-id="{escape(row["anomaly_id"])}" '
            f'data-severity="{escape(row["severity"])}">'
            f"<title>{escape(tip)}</title>"
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
                f"{row['reload_id']} {row['status']}: {row['component']} {format_change(row)} on {row['service_name']}"
                f" ({'every instance' if row['scope'] == '*' else row['scope']}),"
                f" requested {format_time(row['requested_time'])}, effective {format_time(row['effective_time'])}"
                f" ({format_ms(row['reload_duration_ms'])} ms), source {row['source']}"
            )
            visible = ""
            if position == 0:
                weight = ' font-weight="bold"' if failed else ""
                visible = (
                    f'<text x="{x + (3 if anchor == "start" else -3):.1f}" y="{label_y}" text-anchor="{anchor}" '
                    f'font-size="11" fill="{colour}"{weight}>{escape(text)}</text>'
                )
            parts.append(
                f'<g class="reload-marker{" failed" if failed else ""}" data-reload-id="{escape(row["reload_id"])}" '
                f'data-status="{escape(row["status"])}" data-label="{escape(_reload_label(row))}"><title>{escape(tip)}</title>'
                f'<line x1="{x_of(row["effective_time"]):.1f}" x2="{x_of(row["effective_time"]):.1f}" '
                f'y1="{label_y + 4}" '
                f'y2="{bottom}" stroke="{colour}" stroke-width="1.5"{dash}/>{visible}</g>'
            )
    return parts
