"""The report in the terminal, with rich: every value read from the store printed as literal text.

No value from the store is ever parsed as rich markup, and control characters and escape
sequences in it are made visible (:func:`schemas.text.safe_text`), so a hostile name cannot
style, link or clear the terminal.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from schemas.text import safe_text
from sinks.report.model import Report
from sinks.report.tables import TableSpec, format_change, format_ms, format_rate, format_time, reload_tables

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


def render_terminal(report: Report, console: Console) -> None:
    """Print the report's tables: versions per service, reloads (with mid-flight counts), anomalies."""
    console.print(
        Text.assemble(
            ("reloadtrace report", "bold"),
            _text(
                f" — {report.target or 'sink'} — since {format_time(report.since)} UTC, generated {format_time(report.generated_at)} UTC"
            ),
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
                format_rate(row["error_rate"]),
                format_ms(row["p50_ms"]),
                format_ms(row["p95_ms"]),
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
            format_time(row["effective_time"]),
            _text(row["service_name"]),
            _text(row["scope"]),
            _text(row["component"]),
            _text(format_change(row)),
            status,
            format_ms(row["reload_duration_ms"]),
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
            format_time(row["detected_time"]),
            _text(row["service_name"]),
            _text(row["reload_id"] + ("" if row["reload_status"] is not None else " (not stored)")),
            _text(f"{row['component']}: {format_change(row)}"),
            _text(row["metric"]),
            f"{row['baseline_value']:.4g} → {row['observed_value']:.4g}",
            f"{row['p_value']:.2g}",
            _text(row["severity"], colour),
            "–" if after is None else f"{after / 1000:,.1f} s",
        )
    console.print(anomalies if anomalies.row_count else _text("No anomalies in this period.", "dim"))
    for spec in reload_tables(report):
        _print_spec(spec, console)
