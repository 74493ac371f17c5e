"""Every query of docs/queries.md, run on the embedded engine and checked against Python over the same records.

The SQL is parsed out of the cookbook itself (``sinks.report.queries``), so the document cannot
drift from what is tested. Each expected answer is recomputed here from the contract records
(``test_queries_data``), never typed in. Background merges are stopped, so revision-0 rows stay
beside their corrections and only queries that really read the latest revision pass.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy
import pytest

from schemas.records import ReloadEvent
from sinks.report.queries import COOKBOOK_PATH, CookbookError, load_cookbook, parse_cookbook, run_query
from tests.sinks.test_queries_data import (
    NS_PER_S,
    AnalystDataset,
    build_reference_dataset,
    build_simulated_dataset,
    load_through_sink,
    reference_enrich,
)

COOKBOOK = load_cookbook()
LATER_S = 60
"""The ``since`` of most checks: this long after the data starts, so the filter really drops rows."""
BUCKET_SECONDS = 60
WINDOW_SECONDS = 300
_EPOCH = datetime(1970, 1, 1)
_SEVERITY_RANK = {"INFO": 1, "WARNING": 2, "CRITICAL": 3}


def as_datetime(unix_nano: int) -> datetime:
    """Naive UTC datetime, microseconds truncated, as clickhouse-connect returns DateTime64(9, 'UTC')."""
    return _EPOCH + timedelta(microseconds=unix_nano // 1000)


def since_parameter(unix_nano: int) -> datetime:
    return as_datetime(unix_nano).replace(tzinfo=UTC)


def open_database(path: str, database: str = "analyst") -> Any:
    """A chDB client at ``path`` with the project's schema applied in ``database``, merges stopped."""
    import clickhouse_connect

    from sinks.ddl import apply_schema

    client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    apply_schema(client, database)
    for table in ("spans_enriched", "reload_events", "anomalies", "dead_letters"):
        client.command(f"SYSTEM STOP MERGES {table}")
    return client


@pytest.fixture(scope="module")
def engine_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One chDB data directory for the module (a process can open one path only); a database per data set."""
    return str(tmp_path_factory.mktemp("chdb_queries"))


@pytest.fixture(scope="module", params=["planted", "simulated"])
def dataset(request: pytest.FixtureRequest) -> AnalystDataset:
    if request.param == "planted":
        return build_reference_dataset()
    simulated = build_simulated_dataset()
    if simulated is None:
        pytest.skip("gateway.simulation.simulator is not importable")
    return simulated


@pytest.fixture(scope="module")
def client(engine_path: str, dataset: AnalystDataset) -> Iterator[Any]:
    """The embedded engine loaded with the data set, in a database of its own."""
    client = open_database(engine_path, "planted" if dataset.source.startswith("planted") else "simulated")
    load_through_sink(client, dataset)
    try:
        yield client
    finally:
        client.close()


def since_of(dataset: AnalystDataset, kind: str) -> int:
    return dataset.start_unix_nano + (LATER_S * NS_PER_S if kind == "later" else 0)


# ---------------------------------------------------------------- helpers of the independent answers


def duration_ms(span: dict[str, Any]) -> float:
    return (span["end_time_unix_nano"] - span["start_time_unix_nano"]) / 1e6


def percentile(values: list[float], level: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, ClickHouse's quantileExactInclusive)."""
    return float(numpy.percentile(values, level * 100)) if values else math.nan


def ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def requests(dataset: AnalystDataset, since_ns: int = 0) -> list[dict[str, Any]]:
    return [s for s in dataset.final_spans if s["kind"] == "SERVER" and s["start_time_unix_nano"] >= since_ns]


def health(spans: list[dict[str, Any]]) -> dict[str, Any]:
    errors = sum(s["status_code"] == "ERROR" for s in spans)
    latencies = [duration_ms(s) for s in spans]
    return {
        "requests": len(spans),
        "errors": errors,
        "error_rate": ratio(errors, len(spans)),
        "p50_ms": percentile(latencies, 0.5),
        "p95_ms": percentile(latencies, 0.95),
    }


def grouped(items: list[Any], key: Callable[[Any], tuple]) -> list[tuple[tuple, list[Any]]]:
    groups: dict[tuple, list[Any]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return sorted(groups.items())


def succeeded(dataset: AnalystDataset) -> list[ReloadEvent]:
    return [r for r in dataset.reloads if r.succeeded]


def same_value(actual: Any, expected: Any) -> bool:
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(actual, float) and math.isnan(actual)
    if isinstance(expected, float):
        return isinstance(actual, int | float) and actual == pytest.approx(expected, rel=1e-9, abs=1e-9)
    if isinstance(expected, datetime):
        return isinstance(actual, datetime) and abs(actual.replace(tzinfo=None) - expected) <= timedelta(microseconds=1)
    return actual == expected


def assert_rows(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Same rows in the same order; every expected column present with the same value."""
    assert len(actual) == len(expected), f"{len(actual)} rows, expected {len(expected)}"
    for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert list(got) == list(want), f"row {index}: columns {list(got)}, expected {list(want)}"
        wrong = {k: (got[k], v) for k, v in want.items() if not same_value(got[k], v)}
        assert not wrong, f"row {index}: (got, expected) {wrong}"


def run(client: Any, name: str, **parameters: Any) -> list[dict[str, Any]]:
    return run_query(client, COOKBOOK[name], parameters)


# ---------------------------------------------------------------- the independent answers, one per query


def expect_error_rate_p95_by_model_version(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    spans = [s for s in requests(d, since_ns) if s["versions"].get("model")]
    return [
        {"service_name": service, "model_version": model, **health(group)}
        for (service, model), group in grouped(spans, lambda s: (s["service_name"], s["versions"]["model"]))
    ]


def expect_error_rate_p95_by_version(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    pairs = [(s, c, v) for s in requests(d, since_ns) for c, v in s["versions"].items()]
    return [
        {"service_name": service, "component": component, "version": version, **health([p[0] for p in group])}
        for (service, component, version), group in grouped(pairs, lambda p: (p[0]["service_name"], p[1], p[2]))
    ]


def expect_version_coverage(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    components = sorted({(r.service_name, r.component) for r in succeeded(d)})
    rows = []
    for service, component in components:
        spans = [s for s in d.final_spans if s["service_name"] == service]
        if not spans:
            continue
        known = sum(component in s["versions"] for s in spans)
        rows.append(
            {
                "service_name": service,
                "component": component,
                "spans": len(spans),
                "spans_with_version": known,
                "coverage": known / len(spans),
            }
        )
    return rows


def expect_latency_over_time(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    width = BUCKET_SECONDS * NS_PER_S

    def key(s: dict[str, Any]) -> tuple:
        return s["service_name"], s["start_time_unix_nano"] // width * width

    return [
        {
            "service_name": service,
            "bucket_start": as_datetime(bucket),
            **{k: v for k, v in health(group).items() if k != "error_rate"},
        }
        for (service, bucket), group in grouped(requests(d, since_ns), key)
    ]


def expect_per_minute_by_version(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    # The view counts every revision delivered (schemas/clickhouse/030_span_minutes.sql), so: all rows.
    minute = 60 * NS_PER_S
    spans = [
        s
        for s in d.all_span_rows
        if s["kind"] == "SERVER"
        and "model" in s["versions"]
        and s["start_time_unix_nano"] // minute * minute >= since_ns
    ]

    def key(s: dict[str, Any]) -> tuple:
        return s["service_name"], s["start_time_unix_nano"] // minute * minute, s["versions"]["model"]

    rows = []
    for (service, start, version), group in grouped(spans, key):
        latencies = [duration_ms(s) for s in group]
        rows.append(
            {
                "service_name": service,
                "minute": as_datetime(start),
                "version": version,
                "requests": len(group),
                "errors": sum(s["status_code"] == "ERROR" for s in group),
                "mid_flight": sum(s["mid_flight"] for s in group),
                "mean_ms": sum(latencies) / len(latencies),
                "p95_ms_approx": percentile(latencies, 0.95),
            }
        )
    return rows


def expect_reload_durations(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    chosen = sorted(
        (r for r in d.reloads if r.effective_time_unix_nano >= since_ns),
        key=lambda r: (r.effective_time_unix_nano, r.reload_id),
    )
    return [
        {
            "reload_id": r.reload_id,
            "service_name": r.service_name,
            "scope": r.service_instance_id or "*",
            "component": r.component,
            "old_version": r.old_version,
            "new_version": r.new_version,
            "status": r.status,
            "source": r.source,
            "requested_time": as_datetime(r.requested_time_unix_nano),
            "effective_time": as_datetime(r.effective_time_unix_nano),
            "reload_duration_ms": (r.effective_time_unix_nano - r.requested_time_unix_nano) / 1e6,
        }
        for r in chosen
    ]


def expect_reload_failures_by_component(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    rows = []
    chosen = [r for r in d.reloads if r.effective_time_unix_nano >= since_ns]
    for (service, component), group in grouped(chosen, lambda r: (r.service_name, r.component)):
        failed = sum(not r.succeeded for r in group)
        durations = [(r.effective_time_unix_nano - r.requested_time_unix_nano) / 1e6 for r in group if r.succeeded]
        rows.append(
            {
                "service_name": service,
                "component": component,
                "attempts": len(group),
                "failed": failed,
                "failure_rate": failed / len(group),
                "p50_duration_ms": percentile(durations, 0.5) if durations else None,
                "max_duration_ms": max(durations) if durations else None,
            }
        )
    return rows


def expect_version_history(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    rows = []
    scopes = grouped(succeeded(d), lambda r: (r.service_name, r.service_instance_id or "*", r.component))
    for (service, scope, component), group in scopes:
        ordered = sorted(group, key=lambda r: (r.effective_time_unix_nano, r.reload_id))
        for reload, following in zip(ordered, [*ordered[1:], None], strict=True):
            rows.append(
                {
                    "service_name": service,
                    "scope": scope,
                    "component": component,
                    "version": reload.new_version,
                    "reload_id": reload.reload_id,
                    "serving_from": as_datetime(reload.effective_time_unix_nano),
                    "serving_until": None if following is None else as_datetime(following.effective_time_unix_nano),
                }
            )
    return rows


def expect_mid_flight_spans_per_reload(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    chosen = sorted(
        (r for r in succeeded(d) if r.effective_time_unix_nano >= since_ns),
        key=lambda r: (r.effective_time_unix_nano, r.reload_id),
    )
    rows = []
    for r in chosen:
        spans = [s for s in d.final_spans if r.reload_id in s["mid_flight_reload_ids"]]
        rows.append(
            {
                "reload_id": r.reload_id,
                "service_name": r.service_name,
                "scope": r.service_instance_id or "*",
                "component": r.component,
                "old_version": r.old_version,
                "new_version": r.new_version,
                "effective_time": as_datetime(r.effective_time_unix_nano),
                "mid_flight_spans": len(spans),
                "mid_flight_traces": len({s["trace_id"] for s in spans}),
                "mid_flight_errors": sum(s["status_code"] == "ERROR" for s in spans),
            }
        )
    return rows


def expect_version_changed_mid_flight(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    changes = [
        (s["service_name"], component, s["versions"].get(component, ""), at_end)
        for s in d.final_spans
        for component, at_end in s["versions_at_end"].items()
        if s["versions"].get(component, "") != at_end
    ]
    return [
        {"service_name": k[0], "component": k[1], "version_at_start": k[2], "version_at_end": k[3], "spans": len(g)}
        for k, g in grouped(changes, lambda change: change)
    ]


def expect_latency_before_after_reload(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    return expect_latency_before_after_reload_window(d, since_ns, WINDOW_SECONDS)


def expect_latency_before_after_reload_window(
    d: AnalystDataset, since_ns: int, window_seconds: int
) -> list[dict[str, Any]]:
    window = window_seconds * NS_PER_S
    rows = []
    reloads = sorted(
        (r for r in succeeded(d) if r.is_service_wide and r.effective_time_unix_nano >= since_ns),
        key=lambda r: (r.effective_time_unix_nano, r.reload_id),
    )
    for r in reloads:
        effective = r.effective_time_unix_nano
        later = [
            o.effective_time_unix_nano
            for o in succeeded(d)
            if o.service_name == r.service_name and o.effective_time_unix_nano > effective
        ]
        after_end = min([*later, effective + window])
        spans = [
            s
            for s in requests(d)
            if s["service_name"] == r.service_name and effective - window <= s["start_time_unix_nano"] < after_end
        ]
        if not spans:
            continue
        before = health([s for s in spans if s["start_time_unix_nano"] < effective])
        after = health([s for s in spans if s["start_time_unix_nano"] >= effective])
        rows.append(
            {
                "reload_id": r.reload_id,
                "service_name": r.service_name,
                "component": r.component,
                "old_version": r.old_version,
                "new_version": r.new_version,
                "effective_time": as_datetime(effective),
                "before_requests": before["requests"],
                "after_requests": after["requests"],
                "before_error_rate": before["error_rate"],
                "after_error_rate": after["error_rate"],
                "before_p50_ms": before["p50_ms"],
                "after_p50_ms": after["p50_ms"],
                "before_p95_ms": before["p95_ms"],
                "after_p95_ms": after["p95_ms"],
                "p95_change_ms": after["p95_ms"] - before["p95_ms"],
            }
        )
    return rows


def expect_canary_vs_peers(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    return expect_canary_vs_peers_window(d, WINDOW_SECONDS)


def expect_canary_vs_peers_window(d: AnalystDataset, window_seconds: int) -> list[dict[str, Any]]:
    window = window_seconds * NS_PER_S
    rows = []
    for r in sorted((r for r in succeeded(d) if not r.is_service_wide), key=lambda r: r.reload_id):
        spans = [
            s
            for s in requests(d)
            if s["service_name"] == r.service_name
            and r.effective_time_unix_nano <= s["start_time_unix_nano"] < r.effective_time_unix_nano + window
        ]
        if not spans:
            continue
        canary = health([s for s in spans if s["service_instance_id"] == r.service_instance_id])
        peers = health([s for s in spans if s["service_instance_id"] != r.service_instance_id])
        rows.append(
            {
                "reload_id": r.reload_id,
                "service_name": r.service_name,
                "canary_instance": r.service_instance_id,
                "component": r.component,
                "new_version": r.new_version,
                "canary_requests": canary["requests"],
                "peer_requests": peers["requests"],
                "canary_error_rate": canary["error_rate"],
                "peer_error_rate": peers["error_rate"],
                "canary_p95_ms": canary["p95_ms"],
                "peer_p95_ms": peers["p95_ms"],
            }
        )
    return rows


def strongest_anomalies(d: AnalystDataset) -> list[dict[str, Any]]:
    """One verdict per anomaly_id: the highest severity, the last inserted on a tie."""
    kept: dict[str, dict[str, Any]] = {}
    for anomaly in d.anomalies:
        held = kept.get(anomaly["anomaly_id"])
        if held is None or _SEVERITY_RANK[anomaly["severity"]] >= _SEVERITY_RANK[held["severity"]]:
            kept[anomaly["anomaly_id"]] = anomaly
    return list(kept.values())


def expect_anomalies_by_reload(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    reloads = {r.reload_id: r for r in d.reloads}
    chosen = sorted(
        (a for a in strongest_anomalies(d) if a["detected_time_unix_nano"] >= since_ns),
        key=lambda a: (a["detected_time_unix_nano"], a["anomaly_id"]),
    )
    rows = []
    for a in chosen:
        reload = reloads.get(a["reload_id"])
        rows.append(
            {
                **{
                    k: a[k]
                    for k in ("anomaly_id", "reload_id", "service_name", "component", "old_version", "new_version")
                },
                **{k: a[k] for k in ("metric", "baseline_value", "observed_value", "p_value", "baseline_count")},
                "observed_count": a["observed_count"],
                "severity": a["severity"],
                "detected_time": as_datetime(a["detected_time_unix_nano"]),
                "reload_status": None if reload is None else reload.status,
                "effective_time": None if reload is None else as_datetime(reload.effective_time_unix_nano),
                "time_to_detect_ms": None
                if reload is None
                else (a["detected_time_unix_nano"] - reload.effective_time_unix_nano) / 1e6,
            }
        )
    return rows


def expect_traces_mixing_versions(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    spans = [
        (s, c, v) for s in d.final_spans if s["start_time_unix_nano"] >= since_ns for c, v in s["versions"].items()
    ]
    rows = []
    for (trace_id, service, component), group in grouped(
        spans, lambda p: (p[0]["trace_id"], p[0]["service_name"], p[1])
    ):
        seen = sorted({version for _, _, version in group})
        if len(seen) > 1:
            rows.append(
                {
                    "trace_id": trace_id,
                    "service_name": service,
                    "component": component,
                    "versions_seen": seen,
                    "spans": len(group),
                    "trace_start": min(s["start_time_unix_nano"] for s, _, _ in group),
                }
            )
    rows.sort(key=lambda row: (row["trace_start"], row["trace_id"], row["service_name"], row["component"]))
    return [{**row, "trace_start": as_datetime(row["trace_start"])} for row in rows]


def expect_trace_lookup(d: AnalystDataset, trace_id: str) -> list[dict[str, Any]]:
    spans = sorted(
        (s for s in d.final_spans if s["trace_id"] == trace_id), key=lambda s: (s["start_time_unix_nano"], s["span_id"])
    )
    return [
        {
            "start_time": as_datetime(s["start_time_unix_nano"]),
            "span_id": s["span_id"],
            "parent_span_id": s["parent_span_id"] or "",
            "service_name": s["service_name"],
            "service_instance_id": s["service_instance_id"],
            "name": s["name"],
            "kind": s["kind"],
            "status_code": s["status_code"],
            "duration_ms": duration_ms(s),
            "versions": s["versions"],
            "mid_flight": s["mid_flight"],
            "mid_flight_reload_ids": s["mid_flight_reload_ids"],
            "enrichment_revision": s["enrichment_revision"],
        }
        for s in spans
    ]


def expect_errors_for_model_at_temperature(d: AnalystDataset, model: str, temperature: float) -> list[dict[str, Any]]:
    spans = sorted(
        (
            s
            for s in d.final_spans
            if s["status_code"] == "ERROR"
            and s["attributes"].get("gen_ai.request.model") == model
            and isinstance(s["attributes"].get("gen_ai.request.temperature"), float)
            and s["attributes"]["gen_ai.request.temperature"] == temperature
        ),
        key=lambda s: (s["start_time_unix_nano"], s["span_id"]),
    )
    return [
        {
            "start_time": as_datetime(s["start_time_unix_nano"]),
            "trace_id": s["trace_id"],
            "span_id": s["span_id"],
            "service_name": s["service_name"],
            "service_instance_id": s["service_instance_id"],
            "name": s["name"],
            "status_message": s["status_message"] or "",
            "model_version": s["versions"].get("model", ""),
            "config_version": s["versions"].get("config", ""),
            "temperature": s["attributes"]["gen_ai.request.temperature"],
        }
        for s in spans
    ]


def spans_per_model_version(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with_model = [s for s in rows if s["versions"].get("model")]
    return [
        {"service_name": service, "model_version": model, "spans": len(group)}
        for (service, model), group in grouped(with_model, lambda s: (s["service_name"], s["versions"]["model"]))
    ]


def expect_rollbacks(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    rows = []
    scopes = grouped(succeeded(d), lambda r: (r.service_name, r.service_instance_id or "*", r.component))
    for (service, scope, component), group in scopes:
        ordered = sorted(group, key=lambda r: (r.effective_time_unix_nano, r.reload_id))
        for before, reload, after in zip(ordered, ordered[1:], ordered[2:], strict=False):
            if after.new_version == before.new_version and reload.effective_time_unix_nano >= since_ns:
                rows.append(
                    {
                        "service_name": service,
                        "scope": scope,
                        "component": component,
                        "reload_id": reload.reload_id,
                        "restored_version": before.new_version,
                        "rolled_back_version": reload.new_version,
                        "effective_time": as_datetime(reload.effective_time_unix_nano),
                        "rollback_reload_id": after.reload_id,
                        "rolled_back_at": as_datetime(after.effective_time_unix_nano),
                        "served_ms": (after.effective_time_unix_nano - reload.effective_time_unix_nano) / 1e6,
                    }
                )
    return sorted(rows, key=lambda row: (row["effective_time"], row["reload_id"]))


def expect_late_corrections_by_service(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    spans = [s for s in d.final_spans if s["start_time_unix_nano"] >= since_ns]
    rows = []
    for (service,), group in grouped(spans, lambda s: (s["service_name"],)):
        corrected = sum(s["enrichment_revision"] > 0 for s in group)
        rows.append(
            {
                "service_name": service,
                "spans": len(group),
                "corrected": corrected,
                "corrected_share": corrected / len(group),
                "max_revision": max(s["enrichment_revision"] for s in group),
            }
        )
    return rows


def expect_dead_letters_by_kind(d: AnalystDataset, since_ns: int) -> list[dict[str, Any]]:
    return [
        {
            "stage": stage,
            "source_topic": topic,
            "error_kind": kind,
            "messages": len(group),
            "first_seen": as_datetime(min(x["dead_lettered_time_unix_nano"] for x in group)),
            "last_seen": as_datetime(max(x["dead_lettered_time_unix_nano"] for x in group)),
        }
        for (stage, topic, kind), group in grouped(
            d.dead_letters, lambda x: (x["stage"], x["source_topic"], x["error_kind"])
        )
    ]


# ---------------------------------------------------------------- the tests

ONLY_PLANTED = {"rollbacks"}
"""Queries whose subject only the planted data set is sure to contain (the simulator never rolls back)."""

CASES = [
    ("error_rate_p95_by_model_version", "later"),
    ("error_rate_p95_by_version", "later"),
    ("version_coverage", "later"),
    ("latency_over_time", "later"),
    ("per_minute_by_version", "later"),
    ("reload_durations", "later"),
    ("reload_durations", "start"),
    ("reload_failures_by_component", "later"),
    ("version_history", "later"),
    ("mid_flight_spans_per_reload", "later"),
    ("mid_flight_spans_per_reload", "start"),  # the initial reloads had nothing in flight
    ("version_changed_mid_flight", "later"),
    ("canary_vs_peers", "later"),
    ("anomalies_by_reload", "later"),
    ("traces_mixing_versions", "later"),
    ("dead_letters_by_kind", "later"),
    ("rollbacks", "start"),
    ("late_corrections_by_service", "later"),
]
"""(query, since) pairs checked by test_query_answers_what_python_computes (also on a server)."""


CHECKED: set[str] = set()


def checks(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    CHECKED.update(names)
    return lambda test: test


def test_every_cookbook_query_is_checked_by_a_test() -> None:
    assert set(COOKBOOK) == CHECKED, (
        f"untested: {sorted(set(COOKBOOK) - CHECKED)}; gone: {sorted(CHECKED - set(COOKBOOK))}"
    )


def test_the_cookbook_index_lists_every_query_with_its_question() -> None:
    text = COOKBOOK_PATH.read_text(encoding="utf-8")
    index = text[text.index("## Index") : text.index("\n## ", text.index("## Index") + 1)]
    listed = dict(re.findall(r"^\| `(\w+)` \| (.+?) \|$", index, re.MULTILINE))
    assert listed == {name: query.title for name, query in COOKBOOK.items()}


def test_the_data_set_plants_what_the_queries_look_for(dataset: AnalystDataset) -> None:
    finals = dataset.final_spans
    assert sum(s["enrichment_revision"] for s in finals) >= 5, "late corrections"
    assert sum(s["mid_flight"] for s in finals) >= 5, "mid-flight spans"
    assert len(expect_traces_mixing_versions(dataset, dataset.start_unix_nano)) >= 3, "traces mixing versions"
    assert any(not r.succeeded for r in dataset.reloads) and any(not r.is_service_wide for r in dataset.reloads)
    reference = [reference_enrich(s, dataset.reloads) for s in finals]
    assert [{**r, "enrichment_revision": 0} for r in reference] == [{**s, "enrichment_revision": 0} for s in finals]


def check_query(client: Any, dataset: AnalystDataset, name: str, since: str) -> None:
    """Run cookbook query ``name`` on ``client`` and compare it with its independent answer."""
    since_ns = since_of(dataset, since)
    given = {
        "since": since_parameter(since_ns),
        "bucket_seconds": BUCKET_SECONDS,
        "window_seconds": WINDOW_SECONDS,
        "component": "model",
    }
    actual = run(client, name, **{k: v for k, v in given.items() if k in COOKBOOK[name].parameters})
    expected = globals()[f"expect_{name}"](dataset, since_ns)
    assert expected or (name in ONLY_PLANTED and not dataset.source.startswith("planted")), f"{name}: nothing to find"
    assert_rows(actual, expected)


@pytest.mark.clickhouse
@checks(*(name for name, _ in CASES))
@pytest.mark.parametrize(("name", "since"), CASES)
def test_query_answers_what_python_computes(client: Any, dataset: AnalystDataset, name: str, since: str) -> None:
    check_query(client, dataset, name, since)


@pytest.mark.clickhouse
@checks("latency_before_after_reload")
@pytest.mark.parametrize("since", ["start", "later"], ids=["with-empty-baselines", "later"])
def test_latency_before_after_each_reload(client: Any, dataset: AnalystDataset, since: str) -> None:
    since_ns = since_of(dataset, since)
    actual = run(client, "latency_before_after_reload", since=since_parameter(since_ns), window_seconds=WINDOW_SECONDS)
    expected = expect_latency_before_after_reload(dataset, since_ns)
    assert_rows(actual, expected)
    regression = next(row for row in actual if row["reload_id"] == dataset.regression_reload_id)
    assert regression["after_p95_ms"] > regression["before_p95_ms"], "the injected slowdown shows up"


@pytest.mark.clickhouse
@checks("trace_lookup")
def test_trace_lookup_through_the_time_range_table(client: Any, dataset: AnalystDataset) -> None:
    corrected = next(s["trace_id"] for s in dataset.final_spans if s["enrichment_revision"] > 0)
    mixed = expect_traces_mixing_versions(dataset, dataset.start_unix_nano)[0]["trace_id"]
    for trace_id in (corrected, mixed):
        expected = expect_trace_lookup(dataset, trace_id)
        assert len(expected) >= 2
        assert_rows(run(client, "trace_lookup", trace_id=trace_id), expected)
    assert run(client, "trace_lookup", trace_id="f" * 32) == []


@pytest.mark.clickhouse
@checks("errors_for_model_at_temperature")
def test_every_error_for_a_model_at_a_temperature(client: Any, dataset: AnalystDataset) -> None:
    asked = {
        (s["attributes"]["gen_ai.request.model"], s["attributes"]["gen_ai.request.temperature"])
        for s in dataset.final_spans
        if isinstance(s["attributes"].get("gen_ai.request.temperature"), float)
        and "gen_ai.request.model" in s["attributes"]
    }
    found = 0
    for model, temperature in sorted(asked):
        actual = run(client, "errors_for_model_at_temperature", model=model, temperature=temperature)
        assert_rows(actual, expect_errors_for_model_at_temperature(dataset, model, temperature))
        found += len(actual)
    llm_errors = [
        s
        for s in dataset.final_spans
        if s["status_code"] == "ERROR" and isinstance(s["attributes"].get("gen_ai.request.temperature"), float)
    ]
    assert found == len(llm_errors) > 0
    assert run(client, "errors_for_model_at_temperature", model="no-such-model", temperature=0.7) == []


@pytest.mark.clickhouse
@checks("spans_per_model_version_final", "spans_per_model_version_argmax", "spans_per_model_version_without_final")
def test_final_and_argmax_read_the_latest_revision_and_the_bare_table_does_not(
    client: Any, dataset: AnalystDataset
) -> None:
    exact = spans_per_model_version(dataset.final_spans)
    assert_rows(run(client, "spans_per_model_version_final"), exact)
    assert_rows(run(client, "spans_per_model_version_argmax"), exact)
    # Merges are stopped: every stored revision is counted, which is the documented pitfall.
    bare = run(client, "spans_per_model_version_without_final")
    assert_rows(bare, spans_per_model_version(dataset.all_span_rows))
    assert bare != exact


# ---------------------------------------------------------------- the parser


def test_parser_names_titles_and_parameters() -> None:
    queries = parse_cookbook(
        "## Errors\n\n### Errors of one model\n\n```sql\n-- name: errors_of\nSELECT 1 WHERE m = {model:String}"
        " AND t >= {since:DateTime64(9, 'UTC')} AND m != {model:String}\n```\n\n```bash\necho not sql\n```\n"
    )
    assert list(queries) == ["errors_of"]
    query = queries["errors_of"]
    assert query.title == "Errors of one model"
    assert dict(query.parameters) == {"model": "String", "since": "DateTime64(9, 'UTC')"}
    with pytest.raises(CookbookError, match="missing parameters \\['since'\\]"):
        query.check_parameters({"model": "x"})
    with pytest.raises(CookbookError, match="unknown parameters \\['other'\\]"):
        query.check_parameters({"model": "x", "since": 0, "other": 1})


@pytest.mark.parametrize(
    ("markdown", "message"),
    [
        ("```sql\nSELECT 1\n```\n", "line 1 does not start with '-- name:"),
        ("```sql\n-- name: a\nSELECT 1\n```\n```sql\n-- name: a\nSELECT 2\n```\n", "'a' appears twice"),
        ("```sql\n-- name: a\nSELECT {x:String}, {x:Int64}\n```\n", "used with two types"),
    ],
)
def test_parser_refuses_malformed_cookbooks(markdown: str, message: str) -> None:
    with pytest.raises(CookbookError, match=message):
        parse_cookbook(markdown)
