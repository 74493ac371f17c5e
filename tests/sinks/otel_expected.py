"""What the otel_traces and annotation views must answer, computed in Python from the contract records.

A direct reading of the view contracts (``schemas/clickhouse/110_otel_traces.sql``, ``080_annotations.sql``)
and of the keys agreed with OTLP out (README, "reloadtrace's own attribute keys"), kept independent of
the SQL under test. Shared by ``test_otel_views.py`` and ``test_grafana_queries.py`` (no tests here).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from schemas.records import ReloadEvent
from tests.sinks.test_queries_data import (
    AnalystDataset,
    _attribute_text,
    build_reference_dataset,
    build_simulated_dataset,
)

SPAN_KINDS = {
    "SERVER": "Server",
    "CLIENT": "Client",
    "INTERNAL": "Internal",
    "PRODUCER": "Producer",
    "CONSUMER": "Consumer",
}
STATUS_CODES = {"UNSET": "Unset", "OK": "Ok", "ERROR": "Error"}
SEVERITY_RANK = {"INFO": 1, "WARNING": 2, "CRITICAL": 3}
NS_PER_S = 1_000_000_000


@functools.cache
def cached_dataset(kind: str) -> AnalystDataset | None:
    """The planted or the simulated analyst data set, built once per test process (None: no simulator)."""
    return build_reference_dataset() if kind == "planted" else build_simulated_dataset()


def enrichment_attributes(span: Mapping[str, Any]) -> dict[str, str]:
    """The ``reload.*`` keys of one enriched span, as the store's map holds them."""
    keys = {f"reload.version.{c}": v for c, v in span["versions"].items()}
    keys |= {f"reload.version_at_end.{c}": v for c, v in span["versions_at_end"].items()}
    keys |= {f"reload.reload_id.{c}": v for c, v in span["reload_ids"].items()}
    keys["reload.mid_flight"] = "true" if span["mid_flight"] else "false"
    keys["reload.enrichment_revision"] = str(span["enrichment_revision"])
    if span["mid_flight_reload_ids"]:
        keys["reload.mid_flight.reload_ids"] = ",".join(sorted(span["mid_flight_reload_ids"]))
    return keys


def span_attributes(span: Mapping[str, Any]) -> dict[str, str]:
    """SpanAttributes: the span's own attributes, the enrichment winning on a shared key (a stamped
    mid-flight id list the enrichment does not confirm is dropped)."""
    own = {k: _attribute_text(v) for k, v in span["attributes"].items() if k != "reload.mid_flight.reload_ids"}
    return own | enrichment_attributes(span)


def resource_attributes(span: Mapping[str, Any]) -> dict[str, str]:
    resource = {k: _attribute_text(v) for k, v in (span.get("resource_attributes") or {}).items()}
    resource["service.name"] = span["service_name"]
    if span["service_instance_id"]:
        resource["service.instance.id"] = span["service_instance_id"]
    return resource


def otel_row(span: Mapping[str, Any]) -> dict[str, Any]:
    """One row of otel_traces (Timestamp and event times as nanoseconds; a v1 span has no events or links)."""
    events, links = span.get("events") or [], span.get("links") or []
    return {
        "timestamp_ns": span["start_time_unix_nano"],
        "TraceId": span["trace_id"],
        "SpanId": span["span_id"],
        "ParentSpanId": span["parent_span_id"] or "",
        "TraceState": span.get("trace_state") or "",
        "SpanName": span["name"],
        "SpanKind": SPAN_KINDS[span["kind"]],
        "ServiceName": span["service_name"],
        "ResourceAttributes": resource_attributes(span),
        "ScopeName": span.get("scope_name") or "",
        "ScopeVersion": span.get("scope_version") or "",
        "SpanAttributes": span_attributes(span),
        "Duration": span["end_time_unix_nano"] - span["start_time_unix_nano"],
        "StatusCode": STATUS_CODES[span["status_code"]],
        "StatusMessage": span["status_message"] or "",
        "Events.Timestamp": [event["time_unix_nano"] for event in events],
        "Events.Name": [event["name"] for event in events],
        "Events.Attributes": [{k: _attribute_text(v) for k, v in event["attributes"].items()} for event in events],
        "Links.TraceId": [link["trace_id"] for link in links],
        "Links.SpanId": [link["span_id"] for link in links],
        "Links.TraceState": [link["trace_state"] for link in links],
        "Links.Attributes": [{k: _attribute_text(v) for k, v in link["attributes"].items()} for link in links],
    }


def strongest(anomalies: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One anomaly per anomaly_id: the highest severity (anomalies FINAL; ties: the last sent)."""
    best: dict[str, Mapping[str, Any]] = {}
    for anomaly in anomalies:
        known = best.get(anomaly["anomaly_id"])
        if known is None or SEVERITY_RANK[anomaly["severity"]] >= SEVERITY_RANK[known["severity"]]:
            best[anomaly["anomaly_id"]] = anomaly
    return list(best.values())


def verdicts(reload_id: str, anomalies: Sequence[Mapping[str, Any]]) -> list[str]:
    """``<SEVERITY> <metric>`` of every anomaly blamed on the reload, the strongest first."""
    blamed = [a for a in strongest(anomalies) if a["reload_id"] == reload_id]
    ordered = sorted(
        blamed, key=lambda a: (-SEVERITY_RANK[a["severity"]], f"{a['severity']} {a['metric']}", a["anomaly_id"])
    )
    return [f"{a['severity']} {a['metric']}" for a in ordered]


def version_change(old: str | None, new: str) -> str:
    return f"{old if old is not None else '(none)'} → {new}"


def reload_annotation(reload: ReloadEvent, anomalies: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """time/timeEnd in nanoseconds, title, tags, and the facts its text must state."""
    found = verdicts(reload.reload_id, anomalies)
    tags = [
        f"service:{reload.service_name}",
        f"component:{reload.component}",
        f"version:{version_change(reload.old_version, reload.new_version)}",
        f"status:{reload.status}",
    ]
    if reload.service_instance_id is not None:
        tags.append(f"canary:{reload.service_instance_id}")
    tags += [f"anomaly:{verdict}" for verdict in found]
    title = f"{reload.service_name} {reload.component} reload {reload.status}" + (f" ({found[0]})" if found else "")
    return {
        "time_ns": reload.requested_time_unix_nano,
        "time_end_ns": reload.effective_time_unix_nano,
        "title": title,
        "tags": tags,
        "text_states": [
            f"{reload.component} {version_change(reload.old_version, reload.new_version)}, {reload.status}",
            f"canary {reload.service_instance_id}" if reload.service_instance_id is not None else "every instance",
            f"source {reload.source}",
            f"reload {reload.reload_id}",
            *found,
        ],
        "duration_ms": (reload.effective_time_unix_nano - reload.requested_time_unix_nano) / 1e6,
    }


def anomaly_annotation(anomaly: Mapping[str, Any], reloads: Sequence[ReloadEvent]) -> dict[str, Any]:
    by_id = {r.reload_id: r for r in reloads}
    reload = by_id.get(anomaly["reload_id"])
    detected = anomaly["detected_time_unix_nano"]
    return {
        "time_ns": reload.effective_time_unix_nano if reload is not None else detected,
        "time_end_ns": detected,
        "title": f"{anomaly['severity']} {anomaly['metric']} anomaly: {anomaly['service_name']} {anomaly['component']} "
        f"{version_change(anomaly['old_version'], anomaly['new_version'])}",
        "tags": [
            f"service:{anomaly['service_name']}",
            f"component:{anomaly['component']}",
            f"version:{version_change(anomaly['old_version'], anomaly['new_version'])}",
            f"severity:{anomaly['severity']}",
            f"metric:{anomaly['metric']}",
        ],
        "text_states": [
            f"reload {anomaly['reload_id']}",
            f"anomaly {anomaly['anomaly_id']}",
            f"{anomaly['baseline_count']} baseline vs {anomaly['observed_count']} observed",
            "ms after the reload" if reload is not None else "before its reload was stored",
        ],
        "time_to_detect_ms": (detected - reload.effective_time_unix_nano) / 1e6 if reload is not None else None,
    }
