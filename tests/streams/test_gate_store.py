"""The gate's pure core: the phase rule and the store, in any arrival order."""

from __future__ import annotations

import itertools
from typing import Any

from schemas.records import Anomaly
from streams.gate.answer import answer, rfc3339
from streams.gate.phase import FAILED, PASSED, PENDING, judge
from streams.gate.store import VerdictStore

T = 1_800_000_000 * 1_000_000_000


def metric(name: str, severity: str | None = None, emitted: str | None = None) -> dict[str, Any]:
    return {
        "metric": name,
        "severity": severity,
        "emitted_severity": emitted,
        "baseline_value": 250.0,
        "observed_value": 500.0 if emitted else 251.0,
        "p_value": 1e-9 if emitted else 0.4,
        "baseline_count": 400,
        "observed_count": 80,
    }


def verdict(
    reload_id: str = "r1", index: int = 0, total: int = 3, metrics: list | None = None, **extra: Any
) -> dict[str, Any]:
    record = {key: value for key, value in reload_event(reload_id).items() if key != "source"} | {
        "look_time_unix_nano": T + (index + 1) * 1_000_000_000,
        "look_index": index,
        "looks_total": total,
        "final": index == total - 1,
        "window_end_unix_nano": T + 3_000_000_000,
        "metrics": metrics if metrics is not None else [metric("latency"), metric("error_rate")],
    }
    return record | extra


def reload_event(reload_id: str = "r1", **extra: Any) -> dict[str, Any]:
    return {
        "reload_id": reload_id,
        "service_name": "svc",
        "service_instance_id": None,
        "component": "model",
        "old_version": "v1",
        "new_version": "v2",
        "status": "SUCCEEDED",
        "requested_time_unix_nano": T - 10,
        "effective_time_unix_nano": T,
        "source": "ci",
    } | extra


def anomaly(reload_id: str = "r1", metric_name: str = "latency", severity: str = "WARNING") -> Anomaly:
    record = {
        "anomaly_id": f"a-{reload_id}-{metric_name}",
        "reload_id": reload_id,
        "service_name": "svc",
        "component": "model",
        "old_version": "v1",
        "new_version": "v2",
        "metric": metric_name,
        "baseline_value": 250.0,
        "observed_value": 500.0,
        "p_value": 1e-9,
        "baseline_count": 400,
        "observed_count": 80,
        "detected_time_unix_nano": T + 2_000_000_000,
        "severity": severity,
    }
    return Anomaly.from_dict(record)


def test_phase_rule() -> None:
    assert judge(None, (), fail_severity="WARNING").phase == PENDING
    assert judge(None, (), fail_severity="WARNING").reason == "awaiting first look"
    assert judge(verdict(index=0), (), fail_severity="WARNING").phase == PENDING
    assert judge(verdict(index=2), (), fail_severity="WARNING").phase == PASSED
    warned = verdict(index=0, metrics=[metric("latency", "WARNING", "WARNING"), metric("error_rate")])
    assert judge(warned, (), fail_severity="WARNING").phase == FAILED
    assert judge(warned, (), fail_severity="CRITICAL").phase == PENDING
    # An anomaly record fails the reload even before its look is read; INFO (one FAILED reload) does not.
    assert judge(None, [("latency", "CRITICAL")], fail_severity="WARNING").failing == (("latency", "CRITICAL"),)
    failed_once = verdict(index=0, total=1, status="FAILED", metrics=[metric("reload_failed", "INFO", "INFO")])
    judged = judge(failed_once, [("reload_failed", "INFO")], fail_severity="WARNING")
    assert judged.phase == PASSED and "FAILED" in judged.reason
    assert judge(failed_once, [], fail_severity="INFO").phase == FAILED


def feed(store: VerdictStore, item: tuple[str, Any, int]) -> None:
    kind, record, published = item
    if kind == "reload":
        store.add_reload(record)
    elif kind == "verdict":
        store.add_verdict(record, published)
    else:
        store.add_anomaly(record)


def test_the_store_is_the_same_whatever_the_order_records_arrive_in() -> None:
    items = [
        ("reload", reload_event(), 0),
        ("verdict", verdict(index=0, metrics=[metric("latency", "WARNING", "WARNING"), metric("error_rate")]), 5),
        ("verdict", verdict(index=1, metrics=[metric("latency", "CRITICAL", "CRITICAL"), metric("error_rate")]), 6),
        ("anomaly", anomaly(severity="WARNING"), 0),
        ("anomaly", anomaly(severity="CRITICAL"), 0),
        (
            "verdict",
            verdict(index=1, metrics=[metric("latency", "CRITICAL", "CRITICAL"), metric("error_rate")]),
            6,
        ),  # redelivered
    ]
    answers = set()
    for order in itertools.permutations(items):
        store = VerdictStore()
        for item in order:
            feed(store, item)
        entry = store.find("svc", "model", "v2")
        assert entry is not None and store.by_reload_id("r1") is entry
        document = answer(entry, fail_severity="WARNING", now_unix_nano=T + 10**10, detector_last_published_unix_nano=6)
        answers.add(repr(document))
        assert document["phase"] == FAILED and document["looks"]["look_index"] == 1
        assert document["anomalies"][0]["severity"] == "CRITICAL"
        assert document["reload"]["effective_time"] == rfc3339(T)
    assert len(answers) == 1


def test_lookup_by_version_answers_the_latest_reload_to_it_and_an_instance_filter_keeps_canaries() -> None:
    store = VerdictStore()
    store.add_reload(reload_event("canary", service_instance_id="i-1", effective_time_unix_nano=T))
    store.add_reload(reload_event("wide", effective_time_unix_nano=T + 60_000_000_000))
    store.add_reload(reload_event("other", new_version="v3", effective_time_unix_nano=T + 90_000_000_000))
    assert store.find("svc", "model", "v2").reload["reload_id"] == "wide"
    assert store.find("svc", "model", "v2", "i-1").reload["reload_id"] == "canary"
    assert store.find("svc", "model", "v9") is None and store.find("svc", "model", "v2", "i-2") is None
    assert store.matches("svc", "model", "v2") == 2


def test_a_look_names_what_was_judged_over_an_anomaly_that_came_first() -> None:
    store = VerdictStore()
    store.add_anomaly(anomaly())
    assert store.by_reload_id("r1").reload["effective_time_unix_nano"] == -(2**63)
    store.add_verdict(verdict(), 1)
    entry = store.by_reload_id("r1")
    assert entry.reload["effective_time_unix_nano"] == T and entry.anomalies["latency"].severity == "WARNING"
    document = answer(entry, fail_severity="WARNING", now_unix_nano=T, detector_last_published_unix_nano=None)
    assert document["phase"] == FAILED and document["freshness"]["detector_age_ms"] is None


def test_answer_separates_health_from_regression_metrics_and_gives_freshness() -> None:
    store = VerdictStore()
    look = verdict(
        index=0, metrics=[metric("reload_duration", "WARNING", "WARNING"), metric("latency"), metric("error_rate")]
    )
    store.add_verdict(look, T + 1_500_000_000)
    document = answer(
        store.by_reload_id("r1"),
        fail_severity="CRITICAL",
        now_unix_nano=T + 2_000_000_000,
        detector_last_published_unix_nano=T + 1_500_000_000,
    )
    assert [m["metric"] for m in document["health"]["metrics"]] == ["reload_duration"]
    assert [m["metric"] for m in document["metrics"]] == ["latency", "error_rate"]
    assert document["phase"] == PENDING and document["fail_severity"] == "CRITICAL"
    assert document["freshness"]["verdict_age_ms"] == 500
    assert document["freshness"]["based_on_look_time"] == rfc3339(T + 1_000_000_000)
    assert rfc3339(T + 5) == "2027-01-15T08:00:00.000000005Z"
