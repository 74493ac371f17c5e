"""`reloadtrace report`: version health, reloads and anomalies from ClickHouse, as tables and one HTML page.

The names the CLI, the demo, the tests and the benchmarks import; each lives in the module of its job.
"""

from __future__ import annotations

from sinks.report.chart import render_chart
from sinks.report.html import render_html
from sinks.report.model import (
    Report,
    ReportError,
    as_utc,
    build_report,
    choose_bucket_seconds,
    open_report_client,
    parse_since,
)
from sinks.report.tables import TableSpec, reload_tables
from sinks.report.terminal import render_terminal

__all__ = [
    "Report",
    "ReportError",
    "TableSpec",
    "as_utc",
    "build_report",
    "choose_bucket_seconds",
    "open_report_client",
    "parse_since",
    "reload_tables",
    "render_chart",
    "render_html",
    "render_terminal",
]
