"""The report as one self-contained HTML page: inline styles, SVG charts, every value escaped.

The page loads nothing from the network and runs no script; every value read from the store is
HTML-escaped with its control characters made visible (:func:`sinks.report.chart.escape`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sinks.report.chart import escape, render_chart
from sinks.report.model import Report
from sinks.report.tables import format_change, format_ms, format_rate, format_time, reload_tables

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
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{escape(row_classes[index])}"' if index < len(row_classes) and row_classes[index] else ""
        cells = "".join(
            f'<td class="number">{escape(cell)}</td>' if column in numeric else f"<td>{escape(cell)}</td>"
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
        f"<title>reloadtrace report — {escape(format_time(report.generated_at))} UTC</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>reloadtrace report</h1>",
        (
            f'<p class="meta">Data: {escape(report.target or "sink")} · since {escape(format_time(report.since))} UTC · '
            f"generated {escape(format_time(report.generated_at))} UTC · latency buckets of {report.bucket_seconds} s · "
            "requests are SERVER spans</p>"
        ),
    ]
    if not report.services:
        sections.append("<p>No spans, reloads or anomalies in this period.</p>")
    for service in report.services:
        sections.append(f'<section class="service" data-service="{escape(service)}"><h2>{escape(service)}</h2>')
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
                            format_rate(r["error_rate"]),
                            format_ms(r["p50_ms"]),
                            format_ms(r["p95_ms"]),
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
                        format_time(a["detected_time"]),
                        a["service_name"],
                        a["reload_id"] + ("" if a["reload_status"] is not None else " (not stored)"),
                        f"{a['component']}: {format_change(a)}",
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
        sections.append(f"<h2>{escape(spec.title)}</h2>")
        if spec.rows:
            sections.append(_html_table(spec.headers, spec.rows, set(spec.numeric), row_classes=spec.row_classes))
        else:
            sections.append(f"<p>{escape(spec.empty)}</p>")
    sections.append("</body></html>")
    return "\n".join(sections)
