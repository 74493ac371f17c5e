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
from sinks.report.tables import TableSpec, format_time, report_tables, version_table

_ROW_STYLES = {"failed": "red", "severity-CRITICAL": "bold red", "severity-WARNING": "yellow"}
_CELL_STYLES = {"": "green", "failed": "bold red", "severity-CRITICAL": "bold red", "severity-WARNING": "yellow"}
"""The emphasis cell's style by its row's emphasis (a reload SUCCEEDED or FAILED, an anomaly's severity)."""
_OTHER_CELL_STYLE = "dim"


def _text(value: Any, style: str = "") -> Text:
    """A terminal cell or line: the value as literal text (never markup), control characters made visible."""
    return Text(safe_text(value), style=style)


def _print_spec(spec: TableSpec, console: Console) -> None:
    if not spec.rows:
        console.print(_text(spec.empty, "dim"))
        return
    title = spec.title if spec.terminal_title is None else spec.terminal_title
    table = Table(title=_text(title, "table.title" if spec.italic_title else ""), title_justify="left")
    shown = [(index, column) for index, column in enumerate(spec.columns) if column.only != "html"]
    for _, column in shown:
        numeric = column.numeric if column.terminal_numeric is None else column.terminal_numeric
        table.add_column(column.terminal_header or column.header, justify="right" if numeric else "left")
    in_a_cell = any(column.emphasis for _, column in shown)
    for row_index, row in enumerate(spec.rows):
        emphasis = spec.row_classes[row_index] if row_index < len(spec.row_classes) else ""
        cell_style = _CELL_STYLES.get(emphasis, _OTHER_CELL_STYLE)
        cells = [_text(row[index], cell_style if column.emphasis else "") for index, column in shown]
        table.add_row(*cells, style=None if in_a_cell else _ROW_STYLES.get(emphasis))
    console.print(table)


def render_terminal(report: Report, console: Console) -> None:
    """Print the report's tables: versions per service, reloads (with mid-flight counts), anomalies, reload health."""
    console.print(
        Text.assemble(
            ("reloadtrace report", "bold"),
            _text(
                f" — {report.target or 'sink'} — since {format_time(report.since)} UTC, "
                f"generated {format_time(report.generated_at)} UTC"
            ),
        )
    )
    if not report.services:
        console.print(_text("No spans, reloads or anomalies in this period.", "yellow"))
        return
    for service in report.services:
        _print_spec(version_table(report, service), console)
    for spec in report_tables(report):
        _print_spec(spec, console)
