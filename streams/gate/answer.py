"""The JSON a verdict request gets: phase, per-metric evidence, the reload's own health, freshness (pure).

Every field but ``freshness.answered_at`` and the ages is a function of the topics' records, so the
same request answers the same after a gate restart. Times are RFC 3339 strings (UTC, nanoseconds):
JSON readers that decode numbers as doubles (Argo Rollouts, Go, JavaScript) would round unix nanos.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from schemas.records import Anomaly
from streams.gate.phase import judge
from streams.gate.store import ReloadEntry

HEALTH_METRICS = frozenset({"reload_duration", "reload_failed"})
_NANOS = 1_000_000_000
_NEVER = -(2**63)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def rfc3339(unix_nano: int | None) -> str | None:
    """``2026-12-01T10:00:00.123456789Z`` (None for None or an unknown time)."""
    if unix_nano is None or unix_nano == _NEVER:
        return None
    seconds, nanos = divmod(unix_nano, _NANOS)
    try:
        moment = _EPOCH + dt.timedelta(seconds=seconds)
    except OverflowError:
        return None
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def _age_ms(now_unix_nano: int, then_unix_nano: int | None) -> int | None:
    return None if then_unix_nano is None else max(0, (now_unix_nano - then_unix_nano) // 1_000_000)


def _metric(verdict_metric: Mapping[str, Any], look_time: str | None, anomaly: Anomaly | None) -> dict[str, Any]:
    return {
        "metric": verdict_metric["metric"],
        "severity": verdict_metric.get("severity"),
        "emitted_severity": verdict_metric.get("emitted_severity"),
        "baseline_value": verdict_metric["baseline_value"],
        "observed_value": verdict_metric["observed_value"],
        "p_value": verdict_metric["p_value"],
        "baseline_count": verdict_metric["baseline_count"],
        "observed_count": verdict_metric["observed_count"],
        "look_time": look_time,
        "detected_time": rfc3339(anomaly.detected_time_unix_nano) if anomaly is not None else None,
    }


def answer(
    entry: ReloadEntry, *, fail_severity: str, now_unix_nano: int, detector_last_published_unix_nano: int | None
) -> dict[str, Any]:
    """The verdict document of one reload."""
    verdict, reload = entry.verdict, entry.reload
    anomalies = entry.anomalies
    judgment = judge(verdict, ((a.metric, a.severity) for a in anomalies.values()), fail_severity=fail_severity)
    look_time = rfc3339(verdict["look_time_unix_nano"]) if verdict is not None else None
    metrics, health = [], []
    for item in verdict["metrics"] if verdict is not None else ():
        shown = _metric(item, look_time, anomalies.get(item["metric"]))
        (health if item["metric"] in HEALTH_METRICS else metrics).append(shown)
    return {
        "phase": judgment.phase,
        "reason": judgment.reason,
        "fail_severity": fail_severity,
        "reload": {
            "reload_id": reload["reload_id"],
            "service": reload["service_name"],
            "component": reload["component"],
            "instance": reload.get("service_instance_id"),
            "old_version": reload.get("old_version"),
            "new_version": reload["new_version"],
            "status": reload.get("status"),
            "requested_time": rfc3339(reload.get("requested_time_unix_nano")),
            "effective_time": rfc3339(reload.get("effective_time_unix_nano")),
        },
        "health": {"status": reload.get("status"), "metrics": health},
        "metrics": metrics,
        "anomalies": [
            {
                "anomaly_id": anomaly.anomaly_id,
                "metric": anomaly.metric,
                "severity": anomaly.severity,
                "baseline_value": anomaly.baseline_value,
                "observed_value": anomaly.observed_value,
                "p_value": anomaly.p_value,
                "detected_time": rfc3339(anomaly.detected_time_unix_nano),
            }
            for _, anomaly in sorted(anomalies.items())
        ],
        "looks": {
            "look_index": verdict["look_index"] if verdict is not None else None,
            "looks_total": verdict["looks_total"] if verdict is not None else None,
            "final": bool(verdict["final"]) if verdict is not None else False,
            "look_time": look_time,
            "window_end": rfc3339(verdict["window_end_unix_nano"]) if verdict is not None else None,
        },
        "freshness": {
            "based_on_look_time": look_time,
            "verdict_published_at": rfc3339(entry.verdict_published_unix_nano),
            "verdict_age_ms": _age_ms(now_unix_nano, entry.verdict_published_unix_nano),
            "detector_last_published_at": rfc3339(detector_last_published_unix_nano),
            "detector_age_ms": _age_ms(now_unix_nano, detector_last_published_unix_nano),
            "answered_at": rfc3339(now_unix_nano),
        },
    }
