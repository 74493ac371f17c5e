"""The report's query model: the cookbook queries it runs, their rows by name, and the store it reads.

Every figure comes from a named query of the analyst cookbook (``docs/queries.md``, see
:mod:`sinks.report.queries`), so the report shows exactly what the documented, tested SQL answers.
Rows stay as the driver returns them, one dict per row keyed by column name; times are UTC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schemas.errors import ReloadtraceError
from schemas.text import bounded_repr, safe_text
from sinks.report.queries import CookbookError, CookbookQuery, load_cookbook, run_query

_DEFAULT_MAX_POINTS = 60
_DEFAULT_WINDOW_SECONDS = 300
BUCKET_CHOICES_SECONDS = (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
"""The usual widths of a time bucket (and of a chart's time ticks), in seconds."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2262, 4, 11, 23, 47, 16, tzinfo=UTC)
_RELATIVE = re.compile(r"^\s*(?P<amount>[0-9]+)\s*(?P<unit>s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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
        return EPOCH
    relative = _RELATIVE.match(text)
    if relative:
        seconds = int(relative["amount"]) * _UNIT_SECONDS[relative["unit"]]
        return max(EPOCH, now - timedelta(seconds=min(seconds, int((now - EPOCH).total_seconds()) + 1)))
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
            raise ReportError(
                f"--since {bounded_repr(text)}: after {_LATEST.isoformat()}, the last nanosecond time stamp"
            ) from None
        moment = EPOCH
    if moment > _LATEST:
        raise ReportError(f"--since {bounded_repr(text)}: after {_LATEST.isoformat()}, the last nanosecond time stamp")
    return max(moment, EPOCH)


def as_utc(value: datetime) -> datetime:
    """clickhouse-connect returns DateTime64(9, 'UTC') as naive UTC (or aware): make it aware."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def choose_bucket_seconds(first: datetime, last: datetime, max_points: int = _DEFAULT_MAX_POINTS) -> int:
    """The smallest usual bucket width giving at most ``max_points`` buckets between first and last."""
    span = max((last - first).total_seconds(), 1.0)
    for width in BUCKET_CHOICES_SECONDS:
        if span / width <= max_points:
            return width
    return BUCKET_CHOICES_SECONDS[-1]


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
