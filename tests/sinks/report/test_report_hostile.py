"""The report prints values from Kafka as literal text: no markup, no escape sequence, no traceback."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from sinks.report import Report, parse_since, render_html, render_terminal

MOMENT = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
HOSTILE = [
    "[/bold]evil",
    "latency[/]",
    "[link=https://evil.example]click[/link]",
    "\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\",
    "\x1b[2J\x1b[31mred",
    "v\x9b31m",
    "nul\x00",
    "rtl\u202eexe.txt",
]


def hostile_report(text: str) -> Report:
    reload = {
        "reload_id": f"r-{text}", "service_name": text, "scope": text, "component": text, "old_version": text,
        "new_version": text, "status": "FAILED", "source": text, "requested_time": MOMENT - timedelta(seconds=1),
        "effective_time": MOMENT, "reload_duration_ms": 1000.0,
    }  # fmt: skip
    anomaly = {
        "anomaly_id": text, "reload_id": f"r-{text}", "service_name": text, "component": text, "old_version": text,
        "new_version": text, "metric": text, "baseline_value": 1.0, "observed_value": 2.0, "p_value": 0.001,
        "baseline_count": 40, "observed_count": 30, "detected_time": MOMENT, "severity": text,
        "time_to_detect_ms": 5.0, "reload_status": "FAILED",
    }  # fmt: skip
    version = {
        "service_name": text, "component": text, "version": text, "requests": 3, "errors": 1, "error_rate": 0.3,
        "p50_ms": 1.0, "p95_ms": 2.0,
    }  # fmt: skip
    health = {
        "service_name": text, "component": text, "attempts": 1, "failed": 1, "failure_rate": 1.0,
        "p50_duration_ms": 1.0, "max_duration_ms": 1.0,
    }  # fmt: skip
    return Report(
        since=MOMENT, generated_at=MOMENT, target=text, bucket_seconds=60, reloads=[reload], anomalies=[anomaly],
        versions=[version], reload_health=[health],
    )


@pytest.mark.parametrize("text", HOSTILE)
def test_terminal_shows_hostile_names_literally(text: str) -> None:
    console = Console(width=400, record=True, color_system="truecolor", force_terminal=True)
    render_terminal(hostile_report(text), console)
    out = console.export_text(styles=False)
    raw = console.export_text(styles=True)
    visible = text.replace("\x1b", "\\x1b").replace("\x9b", "\\x9b").replace("\x00", "\\x00").replace("\u202e", "\\u202e")
    assert visible in out  # the name as written, markup brackets included
    assert "\x1b]8;" not in raw and "\x00" not in raw and "\x9b" not in raw and "\u202e" not in raw
    assert "https://evil.example" not in raw.replace(visible, "")  # never a link target


@pytest.mark.parametrize("text", HOSTILE)
def test_html_shows_hostile_names_escaped_and_visible(text: str) -> None:
    page = render_html(hostile_report(text))
    assert "\x1b" not in page and "\x00" not in page and "\x9b" not in page and "\u202e" not in page
    assert "<script" not in page


def test_a_severity_cannot_break_out_of_its_class_attribute() -> None:
    page = render_html(hostile_report('x" onmouseover="alert(1)'))
    assert 'onmouseover="alert(1)' not in page


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("99999999999999999999d", datetime(1970, 1, 1, tzinfo=UTC)),
        ("0001-01-01", datetime(1970, 1, 1, tzinfo=UTC)),
        ("0001-01-01T00:00:00+05:00", datetime(1970, 1, 1, tzinfo=UTC)),
        ("1969-12-31T23:59:59Z", datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_since_before_the_epoch_means_everything(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


def test_since_after_the_last_nanosecond_time_is_a_clear_error() -> None:
    from sinks.report import ReportError

    with pytest.raises(ReportError, match="2262"):
        parse_since("9999-12-31T23:59:59-05:00", now=NOW)


def test_report_on_a_missing_chdb_path_does_not_create_it(tmp_path: Path) -> None:
    from streams.cli import app

    missing = tmp_path / "nothing" / "here"
    result = CliRunner().invoke(app, ["report", "--sink-url", f"chdb://{missing}"])
    assert result.exit_code == 2 and "no such data directory" in result.output
    assert not missing.exists() and not missing.parent.exists()
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store with the schema and no rows, made in a process of its own (chDB opens one path per process)."""
    url = f"chdb://{tmp_path_factory.mktemp('empty_store') / 'chdb'}"
    code = f"from sinks.clickhouse import ClickHouseSink; from sinks.settings import SinkSettings; ClickHouseSink(SinkSettings(url={url!r})).close()"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3])
    return url


@pytest.mark.clickhouse
@pytest.mark.parametrize(
    ("args", "exit_code"),
    [
        (["--since", "99999999999999999999d"], 0),  # everything
        (["--since", "0001-01-01"], 0),
        (["--since", "9999-12-31T23:59:59-05:00"], 2),
        (["--html", "/nonexistent/dir/r.html"], 2),
    ],
)
def test_report_arguments_give_one_line_errors_not_tracebacks(args: list[str], exit_code: int, empty_store: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "report", "--sink-url", empty_store, *args],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[3], timeout=120,
    )
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr
    if exit_code:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
