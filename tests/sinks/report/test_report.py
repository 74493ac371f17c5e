"""`reloadtrace report`: tables and HTML from the cookbook queries on chDB; the charts checked in headless Chromium."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from rich.console import Console
from typer.testing import CliRunner

from sinks.report import (
    Report,
    ReportError,
    as_utc,
    build_report,
    choose_bucket_seconds,
    parse_since,
    render_chart,
    render_html,
    render_terminal,
)
from tests.sinks.test_queries import open_database
from tests.sinks.test_queries_data import NS_PER_S, T0, AnalystDataset, build_reference_dataset, load_through_sink

CHROMIUM = Path("/usr/bin/chromium")
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
DATABASE = "report"
_SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def dataset() -> AnalystDataset:
    return build_reference_dataset()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, dataset: AnalystDataset) -> Iterator[tuple[str, Any]]:
    path = str(tmp_path_factory.mktemp("chdb_report"))
    client = open_database(path, DATABASE)
    load_through_sink(client, dataset)
    try:
        yield path, client
    finally:
        client.close()


@pytest.fixture(scope="module")
def report(engine: tuple[str, Any]) -> Report:
    return build_report(engine[1], since=as_utc(datetime(2026, 1, 1)), now=NOW, target="test engine")


def since_s(dataset: AnalystDataset, seconds: int) -> datetime:
    return datetime.fromtimestamp((dataset.start_unix_nano + seconds * NS_PER_S) / 1e9, tz=UTC)


def effective_text(unix_nano: int) -> str:
    return datetime.fromtimestamp(unix_nano / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", NOW - timedelta(minutes=15)),
        ("6h", NOW - timedelta(hours=6)),
        (" 2d ", NOW - timedelta(days=2)),
        ("1w", NOW - timedelta(weeks=1)),
        ("90s", NOW - timedelta(seconds=90)),
        ("2026-01-01T00:05:00Z", datetime(2026, 1, 1, 0, 5, tzinfo=UTC)),
        ("2026-01-01 00:05:00", datetime(2026, 1, 1, 0, 5, tzinfo=UTC)),
        ("2026-01-01T02:05:00+02:00", datetime(2026, 1, 1, 0, 5, tzinfo=UTC)),
        (None, datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_since_accepts_durations_and_iso_times(text: str | None, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "15 minutes", "-5m", "2026-13-01"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ReportError, match="--since"):
        parse_since(text, now=NOW)


def test_bucket_width_keeps_charts_readable() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert choose_bucket_seconds(start, start + timedelta(minutes=20)) == 30
    assert choose_bucket_seconds(start, start + timedelta(days=3)) == 7200
    assert choose_bucket_seconds(start, start) == 1
    for hours in (0.1, 1, 5, 24, 200):
        width = choose_bucket_seconds(start, start + timedelta(hours=hours))
        assert hours * 3600 / width <= 60


# ---------------------------------------------------------------- report content on the embedded engine


@pytest.mark.clickhouse
def test_report_holds_every_reload_anomaly_and_version(report: Report, dataset: AnalystDataset) -> None:
    assert report.services == sorted({s["service_name"] for s in dataset.final_spans})
    assert [r["reload_id"] for r in report.reloads] == [
        r.reload_id for r in sorted(dataset.reloads, key=lambda r: (r.effective_time_unix_nano, r.reload_id))
    ]
    assert {a["anomaly_id"] for a in report.anomalies} == {a["anomaly_id"] for a in dataset.anomalies}
    versions = {
        (s["service_name"], c, v)
        for s in dataset.final_spans
        if s["kind"] == "SERVER"
        for c, v in s["versions"].items()
    }
    assert {(r["service_name"], r["component"], r["version"]) for r in report.versions} == versions
    for reload in dataset.reloads:
        expected = sum(reload.reload_id in s["mid_flight_reload_ids"] for s in dataset.final_spans)
        assert report.mid_flight_spans(reload.reload_id) == (expected if reload.succeeded else None)
    requests = sum(s["kind"] == "SERVER" for s in dataset.final_spans)
    assert sum(p["requests"] for p in report.latency) == requests
    assert report.bucket_seconds == 30


@pytest.mark.clickhouse
def test_reload_tables_hold_the_cookbook_answers(engine: tuple[str, Any], dataset: AnalystDataset) -> None:
    from tests.sinks import test_queries as cookbook

    since_ns = dataset.start_unix_nano + 120 * NS_PER_S
    since = datetime.fromtimestamp(since_ns / 1e9, tz=UTC)
    report = build_report(engine[1], since=since, now=NOW, bucket_seconds=60, window_seconds=120)
    cookbook.assert_rows(
        report.before_after, cookbook.expect_latency_before_after_reload_window(dataset, since_ns, 120)
    )
    cookbook.assert_rows(report.reload_health, cookbook.expect_reload_failures_by_component(dataset, since_ns))
    cookbook.assert_rows(report.rollbacks, cookbook.expect_rollbacks(dataset, since_ns))
    cookbook.assert_rows(report.corrections, cookbook.expect_late_corrections_by_service(dataset, since_ns))
    assert report.rollbacks and report.before_after
    canaries = [
        row
        for row in cookbook.expect_canary_vs_peers_window(dataset, 120)
        if row["reload_id"] in {r["reload_id"] for r in report.reloads}
    ]
    cookbook.assert_rows(report.canaries, canaries)
    assert canaries

    console = Console(width=240, record=True, color_system=None)
    render_terminal(report, console)
    text = console.export_text()
    assert "Reload health by component" in text and "Rollbacks" in text and "Late corrections" in text
    assert "Before vs after each reload (requests started up to 2 min before / after" in text
    regression = next(r for r in report.before_after if r["reload_id"] == "r-llm-model-2")
    effective = effective_text(
        next(r.effective_time_unix_nano for r in dataset.reloads if r.reload_id == "r-llm-model-2")
    )
    line = next(line for line in text.splitlines() if line.startswith(f"│ {effective}") and "CRITICAL" in line)
    assert f"{regression['before_requests']:,} → {regression['after_requests']:,}" in line
    rollback = report.rollbacks[0]
    assert re.search(rf"{rollback['rolled_back_version']}\s+│ {rollback['restored_version']}\s+│", text)
    page = render_html(report)
    assert "Canary reloads: the instance against its peers (2 min after)" in text
    for title in ("Reload health by component", "Rollbacks", "Late corrections", "Canary reloads"):
        assert f"<h2>{title}" in page


@pytest.mark.clickhouse
def test_since_narrows_every_part_of_the_report(engine: tuple[str, Any], dataset: AnalystDataset) -> None:
    since = since_s(dataset, 500)
    narrowed = build_report(engine[1], since=since, now=NOW, bucket_seconds=60)
    cut = dataset.start_unix_nano + 500 * NS_PER_S
    assert [r["reload_id"] for r in narrowed.reloads] == [
        r.reload_id
        for r in sorted(dataset.reloads, key=lambda r: (r.effective_time_unix_nano, r.reload_id))
        if r.effective_time_unix_nano >= cut
    ]
    assert sum(p["requests"] for p in narrowed.latency) == sum(
        s["kind"] == "SERVER" and s["start_time_unix_nano"] >= cut for s in dataset.final_spans
    )
    assert all(as_utc(p["bucket_start"]) >= since - timedelta(seconds=60) for p in narrowed.latency)
    assert {a["anomaly_id"] for a in narrowed.anomalies} == {
        a["anomaly_id"] for a in dataset.anomalies if a["detected_time_unix_nano"] >= cut
    }


@pytest.mark.clickhouse
def test_terminal_tables_show_versions_reloads_and_anomalies(report: Report, dataset: AnalystDataset) -> None:
    console = Console(width=220, record=True, color_system=None)
    render_terminal(report, console)
    text = console.export_text()
    for service in report.services:
        assert f"{service}: requests by version" in text
    for row in report.versions:
        assert re.search(rf"{row['component']}\s+│ {re.escape(row['version'])}\s+│\s+{row['requests']:,} │", text)
    for reload in dataset.reloads:
        line = next(
            line
            for line in text.splitlines()
            if f"→ {reload.new_version}" in line
            and effective_text(reload.effective_time_unix_nano) in line
            and reload.component in line
            and reload.service_name in line
            and (reload.status in line)
        )
        assert f"{(reload.effective_time_unix_nano - reload.requested_time_unix_nano) / 1e6:,.1f}" in line
    for anomaly in report.anomalies:
        assert anomaly["reload_id"] in text
    assert "r-not-stored (not stored)" in text


def chart_tree(report: Report, service: str) -> ElementTree.Element:
    return ElementTree.fromstring(render_chart(report, service))


@pytest.mark.clickhouse
def test_charts_mark_each_reload_at_its_time_and_each_anomaly(report: Report, dataset: AnalystDataset) -> None:
    for service in report.services:
        svg = chart_tree(report, service)
        assert svg.get("class") == "latency-chart" and svg.get("data-service") == service
        reloads = sorted(
            (r for r in dataset.reloads if r.service_name == service), key=lambda r: r.effective_time_unix_nano
        )
        markers = {
            g.get("data-reload-id"): g for g in svg.iter(f"{_SVG}g") if "reload-marker" in (g.get("class") or "")
        }
        assert set(markers) == {r.reload_id for r in reloads}
        xs = [float(markers[r.reload_id].find(f"{_SVG}line").get("x1")) for r in reloads]
        assert xs == sorted(xs) and 0 < xs[0] and xs[-1] < float(svg.get("width"))
        for reload in reloads:
            marker = markers[reload.reload_id]
            assert marker.get("data-status") == reload.status
            assert ("failed" in marker.get("class")) == (not reload.succeeded)
            label = marker.get("data-label")
            assert label.startswith(f"{reload.component}:{reload.new_version}")
            assert ("FAILED" in label) == (not reload.succeeded)
            if not reload.succeeded:
                assert marker.find(f"{_SVG}line").get("stroke-dasharray")
        visible = [t.text for g in markers.values() for t in g.iter(f"{_SVG}text")]
        assert len(visible) >= len({(r.effective_time_unix_nano, r.status) for r in reloads}) - 1
        assert any(text.startswith(f"{reloads[-1].component}:{reloads[-1].new_version}") for text in visible)
        anomalies = {g.get("data-anomaly-id") for g in svg.iter(f"{_SVG}g") if g.get("class") == "anomaly-marker"}
        assert anomalies == {a["anomaly_id"] for a in dataset.anomalies if a["service_name"] == service}
        lines = {p.get("data-series"): p for p in svg.iter(f"{_SVG}polyline")}
        assert set(lines) == {"p95", "p50"}
        buckets = [p for p in report.latency if p["service_name"] == service]
        assert len(lines["p95"].get("points").split()) == len(buckets)


def test_html_is_self_contained_and_escapes_names() -> None:
    hostile = "<script>alert(1)</script>"
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    report = Report(
        since=moment,
        generated_at=moment,
        target="x",
        bucket_seconds=60,
        reloads=[
            {
                "reload_id": "r1",
                "service_name": hostile,
                "scope": "*",
                "component": "model",
                "old_version": None,
                "new_version": hostile,
                "status": "FAILED",
                "source": "op",
                "requested_time": moment,
                "effective_time": moment,
                "reload_duration_ms": 0.0,
            }
        ],
    )
    page = render_html(report)
    assert hostile not in page and "&lt;script&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "no external resource"
    assert "<script" not in page


def test_a_service_with_reloads_but_no_requests_still_gets_its_markers() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    reload = {
        "reload_id": "r1", "service_name": "quiet", "scope": "*", "component": "model", "old_version": None,
        "new_version": "v2", "status": "SUCCEEDED", "source": "op", "requested_time": moment - timedelta(seconds=1),
        "effective_time": moment, "reload_duration_ms": 1000.0,
    }  # fmt: skip
    report = Report(since=moment, generated_at=moment, target="x", bucket_seconds=60, reloads=[reload])
    svg = chart_tree(report, "quiet")
    assert [g.get("data-reload-id") for g in svg.iter(f"{_SVG}g")] == ["r1"]
    assert not list(svg.iter(f"{_SVG}polyline"))
    assert render_chart(report, "nobody") == ""


@pytest.mark.clickhouse
def test_empty_period_says_so(engine: tuple[str, Any]) -> None:
    empty = build_report(engine[1], since=datetime(2030, 1, 1, tzinfo=UTC), now=NOW, bucket_seconds=60)
    assert empty.services == []
    console = Console(width=120, record=True, color_system=None)
    render_terminal(empty, console)
    assert "No spans, reloads or anomalies in this period." in console.export_text()
    assert "No spans, reloads or anomalies in this period." in render_html(empty)


@pytest.mark.clickhouse
def test_a_database_without_the_tables_is_a_clear_error(engine: tuple[str, Any]) -> None:
    import clickhouse_connect

    other = clickhouse_connect.get_client(dsn=f"chdb://{engine[0]}")
    try:
        other.command("CREATE DATABASE IF NOT EXISTS bare")
        other.database = "bare"
        with pytest.raises(ReportError, match="nothing was written there yet"):
            build_report(other, since=NOW, now=NOW)
    finally:
        other.close()


# ---------------------------------------------------------------- the command


@pytest.mark.clickhouse
def test_report_command_prints_tables_and_writes_html(
    engine: tuple[str, Any], dataset: AnalystDataset, tmp_path: Path
) -> None:
    from streams.cli import app

    page = tmp_path / "report.html"
    url = f"chdb://{engine[0]}?database={DATABASE}"
    since = datetime.fromtimestamp((T0 + 500 * NS_PER_S) / 1e9, tz=UTC).isoformat()
    result = CliRunner().invoke(
        app, ["report", "--sink-url", url, "--html", str(page), "--since", since, "--width", "200"]
    )
    assert result.exit_code == 0, result.output
    assert "llm-gateway: requests by version" in result.output and "Reloads" in result.output
    assert "credentials" not in result.output  # its only reload (FAILED) was before --since
    assert "model-b2 → model-c3" in result.output and f"HTML report written to {page}" in result.output
    html = page.read_text()
    assert html.count('class="latency-chart"') == 2 and 'data-reload-id="r-llm-model-3"' in html
    assert 'data-reload-id="r-llm-model-2"' not in html

    missing = CliRunner().invoke(app, ["report", "--sink-url", f"chdb://{engine[0]}?database=nothing_here"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad_since = CliRunner().invoke(app, ["report", "--sink-url", url, "--since", "last tuesday"])
    assert bad_since.exit_code == 2 and "--since" in bad_since.output


@pytest.mark.clickhouse
def test_a_chdb_path_held_by_another_process_gives_a_hint(tmp_path: Path) -> None:
    import sys

    path = tmp_path / "held"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                f"import sys, clickhouse_connect; c = clickhouse_connect.get_client(dsn='chdb://{path}'); "
                "c.query('SELECT 1'); print('ready', flush=True); sys.stdin.read()"
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        # A process of its own: in this one, chDB may already be open on another path.
        result = subprocess.run(
            [sys.executable, "-m", "streams.cli", "report", "--sink-url", f"chdb://{path}"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert result.returncode == 2, result.stderr
    assert "stop it first, or report from a ClickHouse server" in result.stderr


# ---------------------------------------------------------------- headless Chromium


def chromium(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


@pytest.mark.clickhouse
@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="headless Chromium not installed: apt-get install -y chromium (Debian)"
)
def test_html_renders_in_headless_chromium_with_charts_and_markers(
    report: Report, dataset: AnalystDataset, tmp_path: Path
) -> None:
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    dumped = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    assert dom.count('class="latency-chart"') == len(report.services) == 2
    assert dom.count('class="reload-marker') == len(dataset.reloads)
    assert dom.count('class="reload-marker failed"') == sum(not r.succeeded for r in dataset.reloads) == 2
    assert dom.count('class="anomaly-marker"') == len({a["anomaly_id"] for a in dataset.anomalies})
    assert "model:model-c3 FAILED" in dom

    shot = tmp_path / "report.png"
    taken = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,1500", "--hide-scrollbars", page.as_uri())
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1100, 1500)
    colours = {colour for _, colour in image.getcolors(maxcolors=1_000_000)}

    def drawn(rgb: tuple[int, int, int], tolerance: int = 40) -> bool:
        return any(all(abs(c - r) <= tolerance for c, r in zip(colour, rgb, strict=True)) for colour in colours)

    assert drawn((0x7C, 0x3A, 0xED)), "p95 line (violet) is painted"
    assert drawn((0x25, 0x63, 0xEB)), "reload markers (blue) are painted"
    assert drawn((0xDC, 0x26, 0x26)), "FAILED markers / error points (red) are painted"
    assert drawn((0xEA, 0x58, 0x0C)), "WARNING anomaly marker (orange) is painted"
