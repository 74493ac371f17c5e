"""The report as one self-contained HTML page: inline styles, SVG charts, every value escaped.

The page loads nothing from the network and runs no script; every value read from the store is
HTML-escaped with its control characters made visible (:func:`sinks.report.chart.escape`).
"""

from __future__ import annotations

from sinks.report.chart import escape, render_chart
from sinks.report.model import Report
from sinks.report.tables import TableSpec, format_time, report_tables, version_table

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


def _html_table(spec: TableSpec) -> str:
    shown = [(index, column) for index, column in enumerate(spec.columns) if column.only != "terminal"]
    head = "".join(f"<th>{escape(column.header)}</th>" for _, column in shown)
    body = []
    for row_index, row in enumerate(spec.rows):
        emphasis = spec.row_classes[row_index] if row_index < len(spec.row_classes) else ""
        css = f' class="{escape(emphasis)}"' if emphasis else ""
        cells = "".join(
            f'<td class="number">{escape(row[index])}</td>' if column.numeric else f"<td>{escape(row[index])}</td>"
            for index, column in shown
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
        versions = version_table(report, service)
        if versions.rows:  # a service without requests has its chart only
            sections.append(f"<h3>{escape(versions.title)}</h3>")
            sections.append(_html_table(versions))
        sections.append("</section>")
    for spec in report_tables(report):
        sections.append(f"<h2>{escape(spec.title)}</h2>")
        sections.append(_html_table(spec) if spec.rows else f"<p>{escape(spec.empty)}</p>")
    sections.append("</body></html>")
    return "\n".join(sections)
