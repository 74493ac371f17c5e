"""Deterministic analyst data set: enriched spans (with late corrections), reloads, anomalies, dead letters.

Shared by ``test_queries.py`` and ``test_report.py`` (no tests here). Spans come from the traffic
simulator and the enrichment core when those exist (``gateway.simulation.simulator``, ``streams.enrichment``);
otherwise from the small generator below, enriched by :func:`reference_enrich`, a direct reading
of DESIGN.md "Enrichment semantics" kept independent of the SQL under test.

The generator plants what the cookbook asks about: a slow, error-prone model version, FAILED
reloads, a canary (instance-scoped) reload, spans that straddle reloads (mid-flight), agentic
traces whose LLM calls straddle a model reload (mixed versions), a component that is unknown
before its first reload, and revision-0 answers corrected by revision 1 (a late reload).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.records import ReloadEvent

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
T0 = 1_767_225_600 * NS_PER_S  # 2026-01-01T00:00:00Z
SIMULATED_MINUTES = 20

LLM = "llm-gateway"
API = "api-gateway"
REQUEST_MODELS = ("gpt-4o-mini", "llama-3.1-8b")
TEMPERATURES = (0.0, 0.2, 0.7, 1.0)

# model version -> (median latency ms, error probability): model-b2 is the regression.
_MODEL_BEHAVIOUR = {"model-a1": (300.0, 0.02), "model-b2": (520.0, 0.12), "model-c3": (280.0, 0.015)}


def _reload(
    reload_id: str,
    service: str,
    component: str,
    old: str | None,
    new: str,
    effective_s: float,
    duration_ms: float,
    status: str = "SUCCEEDED",
    instance: str | None = None,
) -> ReloadEvent:
    effective = T0 + int(effective_s * NS_PER_S)
    model_context = {"model_id": new, "provider": "local"} if component == "model" else {}
    return ReloadEvent(
        reload_id=reload_id,
        service_name=service,
        component=component,
        old_version=old,
        new_version=new,
        requested_time_unix_nano=effective - int(duration_ms * NS_PER_MS),
        effective_time_unix_nano=effective,
        status=status,  # type: ignore[arg-type]
        source="deploy-pipeline" if status == "SUCCEEDED" else "operator",
        service_instance_id=instance,
        model_context=model_context,
        changed_keys=("temperature_cap",) if component == "config" else (),
    )


def sample_reloads() -> list[ReloadEvent]:
    """The reload history of the two simulated services (FAILED and canary reloads included)."""
    return [
        _reload("r-llm-model-1", LLM, "model", None, "model-a1", 0, 900),
        _reload("r-llm-config-1", LLM, "config", None, "cfg-1", 0, 40),
        _reload("r-api-routes-1", API, "routing_rules", None, "routes-1", 0, 25),
        _reload("r-api-cred-2", API, "credentials", None, "cred-2", 240, 5_000, status="FAILED"),
        _reload("r-llm-model-2", LLM, "model", "model-a1", "model-b2", 360, 350),
        _reload("r-api-routes-2", API, "routing_rules", "routes-1", "routes-2", 480, 60),
        _reload("r-llm-model-3-failed", LLM, "model", "model-b2", "model-c3", 540, 2_000, status="FAILED"),
        _reload("r-api-flags-1", API, "feature_flags", None, "flags-1", 600, 15),
        _reload("r-llm-config-2-canary", LLM, "config", "cfg-1", "cfg-2", 660, 80, instance="llm-2"),
        _reload("r-llm-model-3", LLM, "model", "model-b2", "model-c3", 840, 1_200),
        # routes-2 is rolled back; the publisher did not know the old version.
        _reload("r-api-routes-rollback", API, "routing_rules", None, "routes-1", 1_020, 45),
    ]


def reference_enrich(span: dict[str, Any], reloads: Iterable[ReloadEvent]) -> dict[str, Any]:
    """The EnrichedSpan of ``span`` (revision 0) given every reload known, by DESIGN.md's rules."""
    service, instance = span["service_name"], span["service_instance_id"]
    start, end = span["start_time_unix_nano"], span["end_time_unix_nano"]
    applying = [r for r in reloads if r.succeeded and r.applies_to(service, instance)]

    def active_at(time_unix_nano: int) -> dict[str, ReloadEvent]:
        best: dict[str, ReloadEvent] = {}
        for reload in applying:
            if reload.effective_time_unix_nano > time_unix_nano:
                continue
            rank = (reload.effective_time_unix_nano, reload.service_instance_id is not None, reload.reload_id)
            held = best.get(reload.component)
            if held is None or rank > (
                held.effective_time_unix_nano,
                held.service_instance_id is not None,
                held.reload_id,
            ):
                best[reload.component] = reload
        return best

    at_start, at_end = active_at(start), active_at(end)
    mid_flight_ids = sorted(r.reload_id for r in applying if start < r.effective_time_unix_nano <= end)
    return {
        **span,
        "versions": {c: r.new_version for c, r in at_start.items()},
        "versions_at_end": {c: r.new_version for c, r in at_end.items()},
        "reload_ids": {c: r.reload_id for c, r in at_start.items()},
        "mid_flight": bool(mid_flight_ids),
        "mid_flight_reload_ids": mid_flight_ids,
        "enrichment_revision": 0,
    }


class _Ids:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def trace(self) -> str:
        return f"{self._rng.getrandbits(128) | 1:032x}"

    def span(self) -> str:
        return f"{self._rng.getrandbits(64) | 1:016x}"


def _llm_span(
    rng: random.Random,
    ids: _Ids,
    reloads: Sequence[ReloadEvent],
    trace_id: str,
    parent: str,
    start: int,
    *,
    instance: str,
    duration_ms: float | None = None,
) -> dict[str, Any]:
    """One LLM call; its latency and error odds follow the model version serving at its start."""
    model_version = reference_enrich(
        {
            "service_name": LLM,
            "service_instance_id": instance,
            "start_time_unix_nano": start,
            "end_time_unix_nano": start,
        },
        reloads,
    )["versions"]["model"]
    median_ms, error_probability = _MODEL_BEHAVIOUR[model_version]
    if duration_ms is None:
        duration_ms = median_ms * rng.lognormvariate(0.0, 0.35)
    failed = rng.random() < error_probability
    request_model = rng.choice(REQUEST_MODELS)
    return {
        "trace_id": trace_id,
        "span_id": ids.span(),
        "parent_span_id": parent,
        "name": f"chat {request_model}",
        "kind": "SERVER",
        "service_name": LLM,
        "service_instance_id": instance,
        "start_time_unix_nano": start,
        "end_time_unix_nano": start + int(duration_ms * NS_PER_MS),
        "status_code": "ERROR" if failed else "OK",
        "status_message": rng.choice(("upstream timeout", "rate limited", "invalid completion")) if failed else None,
        "attributes": {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": request_model,
            "gen_ai.request.temperature": rng.choice(TEMPERATURES),
            "gen_ai.usage.output_tokens": rng.randint(5, 800),
            "gen_ai.response.finish_reasons": "error" if failed else "stop",
            "stream": rng.random() < 0.3,
        },
        "resource_attributes": {"service.version": "2.4.0", "deployment.environment.name": "sim"},
    }


def _trace(
    rng: random.Random,
    ids: _Ids,
    reloads: Sequence[ReloadEvent],
    start: int,
    *,
    llm_calls: int,
    forced_llm_duration_ms: float | None = None,
) -> list[dict[str, Any]]:
    """A request through the API gateway to the LLM gateway, with ``llm_calls`` sequential calls."""
    trace_id, root_id, client_id = ids.trace(), ids.span(), ids.span()
    api_instance = rng.choice(("api-1", "api-2"))
    llm_instance = rng.choice(("llm-1", "llm-2"))
    spans: list[dict[str, Any]] = []
    cursor = start + 3 * NS_PER_MS
    for call in range(llm_calls):
        duration = forced_llm_duration_ms if call == 0 else None
        llm = _llm_span(rng, ids, reloads, trace_id, client_id, cursor, instance=llm_instance, duration_ms=duration)
        spans.append(llm)
        cursor = llm["end_time_unix_nano"] + int(rng.uniform(500, 4_000) * NS_PER_MS)
    end = max(s["end_time_unix_nano"] for s in spans) + 2 * NS_PER_MS
    failed = spans[-1]["status_code"] == "ERROR"
    common = {"trace_id": trace_id, "service_instance_id": api_instance, "resource_attributes": None}
    spans.append(
        {
            **common,
            "span_id": client_id,
            "parent_span_id": root_id,
            "name": "POST llm-gateway/v1/chat",
            "kind": "CLIENT",
            "service_name": API,
            "start_time_unix_nano": start + 1 * NS_PER_MS,
            "end_time_unix_nano": end - 1 * NS_PER_MS,
            "status_code": "ERROR" if failed else "UNSET",
            "status_message": None,
            "attributes": {"server.address": "llm-gateway", "http.request.method": "POST"},
        }
    )
    spans.append(
        {
            **common,
            "span_id": root_id,
            "parent_span_id": None,
            "name": "POST /v1/chat",
            "kind": "SERVER",
            "service_name": API,
            "start_time_unix_nano": start,
            "end_time_unix_nano": end,
            "status_code": "ERROR" if failed else "OK",
            "status_message": "upstream failed" if failed else None,
            "attributes": {"http.route": "/v1/chat", "http.response.status_code": 502 if failed else 200},
        }
    )
    return spans


@dataclass(frozen=True)
class AnalystDataset:
    """Everything the cookbook queries read, as contract records (Avro field names).

    ``span_batches`` is the insert order: batch 0 holds every span's first answer (revision 0,
    some of them stale), batch 1 the corrections (revision 1). ``final_spans`` is the truth.
    """

    span_batches: list[list[dict[str, Any]]]
    reloads: list[ReloadEvent]
    anomalies: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    source: str = "reference generator"
    start_unix_nano: int = T0
    """When the simulated traffic starts (the initial reloads take effect then)."""
    regression_reload_id: str = "r-llm-model-2"
    """The reload after which the traffic got slower and failed more."""
    final_spans: list[dict[str, Any]] = field(default_factory=list)

    @property
    def all_span_rows(self) -> list[dict[str, Any]]:
        return [span for batch in self.span_batches for span in batch]


def latest_revisions(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The highest enrichment_revision of each (trace_id, span_id)."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["trace_id"], row["span_id"])
        if key not in best or row["enrichment_revision"] > best[key]["enrichment_revision"]:
            best[key] = row
    return list(best.values())


def _late_corrections(
    spans: Sequence[dict[str, Any]], reloads: Sequence[ReloadEvent], enrich: Any, lateness_ns: dict[str, int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """First answers and the revision-1 corrections, for reloads published ``lateness_ns`` after taking effect.

    As the streaming engine does: a span that ended before a late reload was published got its
    first answer without that reload; when the reload changes the answer, revision 1 corrects it.
    """
    by_id = {r.reload_id: r for r in reloads}
    first, corrections = [], []
    for span in spans:
        final = enrich(span, reloads)
        missed = [
            rid
            for rid, late in sorted(lateness_ns.items())
            if by_id[rid].service_name == span["service_name"]
            and by_id[rid].effective_time_unix_nano
            <= span["end_time_unix_nano"]
            < by_id[rid].effective_time_unix_nano + late
        ]
        stale = enrich(span, [r for r in reloads if r.reload_id not in missed]) if missed else final
        first.append(stale)
        if stale != final:
            corrections.append({**final, "enrichment_revision": 1})
    return first, corrections


def _anomaly(
    anomaly_id: str,
    reload: ReloadEvent,
    metric: str,
    baseline: float,
    observed: float,
    p: float,
    severity: str,
    after_s: float,
) -> dict[str, Any]:
    return {
        "anomaly_id": anomaly_id,
        "reload_id": reload.reload_id,
        "service_name": reload.service_name,
        "component": reload.component,
        "old_version": reload.old_version,
        "new_version": reload.new_version,
        "metric": metric,
        "baseline_value": baseline,
        "observed_value": observed,
        "p_value": p,
        "baseline_count": 120,
        "observed_count": 45,
        "detected_time_unix_nano": reload.effective_time_unix_nano + int(after_s * NS_PER_S),
        "severity": severity,
    }


def sample_anomalies(reloads: Sequence[ReloadEvent]) -> list[dict[str, Any]]:
    """Anomalies as the detector would send them; one is re-sent with a higher severity."""
    by_id = {r.reload_id: r for r in reloads}
    regression, failed = by_id["r-llm-model-2"], by_id["r-llm-model-3-failed"]
    return [
        _anomaly("a-model-2-latency", regression, "latency", 300.0, 520.0, 1e-6, "WARNING", 20),
        _anomaly("a-model-2-latency", regression, "latency", 300.0, 525.0, 1e-9, "CRITICAL", 45),
        _anomaly("a-model-2-errors", regression, "error_rate", 0.02, 0.12, 1e-4, "WARNING", 60),
        _anomaly("a-model-3-failed", failed, "reload_failed", 0.0, 1.0, 1.0, "WARNING", 0),
        # Blamed on a reload that never reached reload_events (lost, or still in flight).
        {
            **_anomaly("a-orphan-latency", regression, "latency", 310.0, 400.0, 1e-3, "INFO", 500),
            "reload_id": "r-not-stored",
        },
    ]


def sample_dead_letters() -> list[dict[str, Any]]:
    """Three messages the pipeline could not use."""
    return [
        {
            "source_topic": topic,
            "source_partition": 0,
            "source_offset": offset,
            "raw_key": None,
            "raw_value": b"\x00garbage",
            "error_kind": kind,
            "error": f"{kind}: test record",
            "stage": stage,
            "dead_lettered_time_unix_nano": T0 + offset * NS_PER_S,
        }
        for topic, offset, kind, stage in (
            ("spans", 11, "wrong_magic", "decode"),
            ("spans", 12, "truncated", "decode"),
            ("reloads", 3, "invalid_record", "validate"),
        )
    ]


def _reference_spans(reloads: Sequence[ReloadEvent], seed: int, traces: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    ids = _Ids(rng)
    spans: list[dict[str, Any]] = []
    horizon_s = SIMULATED_MINUTES * 60 - 40
    for _ in range(traces):
        start = T0 + int(rng.uniform(5, horizon_s) * NS_PER_S)
        calls = rng.choice((1, 1, 1, 2, 4))
        spans.extend(_trace(rng, ids, reloads, start, llm_calls=calls))
    for reload in reloads:
        if reload.effective_time_unix_nano <= T0:
            continue
        for lead_s in (0.4, 1.5, 3.0):
            # A long streamed call across the reload (mid-flight) and an agentic trace across it.
            start = reload.effective_time_unix_nano - int(lead_s * NS_PER_S)
            spans.extend(_trace(rng, ids, reloads, start, llm_calls=1, forced_llm_duration_ms=lead_s * 1000 + 900))
            spans.extend(_trace(rng, ids, reloads, start - 2 * NS_PER_S, llm_calls=4))
    return spans


def _core_enrich() -> Any:
    """``enrich(span, reloads)`` through the enrichment core (streams.enrichment), or None without it."""
    try:
        from streams.enrichment import enrich
        from streams.timeline import VersionTimeline
    except ImportError:
        return None
    timelines: dict[frozenset[str], VersionTimeline] = {}

    def enrich_with(span: dict[str, Any], reloads: Sequence[ReloadEvent]) -> dict[str, Any]:
        key = frozenset(r.reload_id for r in reloads)
        timeline = timelines.get(key)
        if timeline is None:
            timeline = timelines[key] = VersionTimeline()
            for reload in reloads:
                timeline.add(reload)
        return dict(enrich(span, timeline))  # type: ignore[arg-type]

    return enrich_with


def build_reference_dataset(seed: int = 7, traces: int = 320) -> AnalystDataset:
    """The planted data set: the generator above, enriched by the enrichment core when importable."""
    enrich: Any = _core_enrich()
    source = "planted generator + streams.enrichment"
    if enrich is None:
        enrich, source = reference_enrich, "planted generator + reference enrichment"
    reloads = sample_reloads()
    spans = _reference_spans(reloads, seed, traces)
    late = {r.reload_id: 5 * NS_PER_S for r in reloads if r.succeeded and r.effective_time_unix_nano > T0}
    first, corrections = _late_corrections(spans, reloads, enrich, late)
    dataset = AnalystDataset(
        span_batches=[first, corrections],
        reloads=reloads,
        anomalies=sample_anomalies(reloads),
        dead_letters=sample_dead_letters(),
        source=source,
    )
    dataset.final_spans.extend(latest_revisions(dataset.all_span_rows))
    return dataset


build_dataset = build_reference_dataset


def _simulated_anomalies(final_spans: list[dict[str, Any]], reloads: Sequence[ReloadEvent]) -> list[dict[str, Any]]:
    """The detection core's verdicts on the data (streams.detection), plus a re-sent and an orphan verdict."""
    try:
        from streams.detection import DetectionSettings, detect_offline
    except ImportError:
        detected: list[dict[str, Any]] = []
    else:
        detected = [a.to_dict() for a in detect_offline(final_spans, reloads, DetectionSettings())]
    regression = next(r for r in reloads if r.reload_id.endswith("-r000"))
    planted = [
        # The same verdict sent first at a lower severity: the table must keep the stronger one.
        _anomaly(anomaly_id, regression, "latency", 250.0, 610.0, 1e-4, "INFO", 10)
        for anomaly_id in [
            next((a["anomaly_id"] for a in detected if a["reload_id"] == regression.reload_id), "a-planted")
        ]
    ]
    orphan = {
        **_anomaly("a-orphan", regression, "error_rate", 0.01, 0.2, 1e-3, "WARNING", 200),
        "reload_id": "r-not-stored",
    }
    return planted + detected + [orphan]


def build_simulated_dataset(seed: int = 11) -> AnalystDataset | None:
    """Traffic from the simulator (gateway.simulation.simulator) with a fixed reload schedule, enriched by the core.

    None when the simulator is not importable. Reload 0 (llm-gateway model) injects a regression;
    reloads 2 and 3 FAIL; reload 1 is a canary; reloads 0, 4 and 5 are published late.
    """
    try:
        from gateway.simulation.config import Regression, ScheduledReload, SimulationConfig
        from gateway.simulation.simulator import simulate
    except ImportError:
        return None
    enrich: Any = _core_enrich() or reference_enrich
    schedule = (
        ScheduledReload(at_s=60.0, service=LLM, component="model", lateness_s=3.0, probe_s=0.4),
        ScheduledReload(at_s=150.0, service=LLM, component="config", instance=1, probe_s=0.08),
        ScheduledReload(at_s=200.0, service="chat-api", component="routing_rules", fail=True, probe_s=1.5),
        ScheduledReload(at_s=240.0, service=LLM, component="model", fail=True, probe_s=2.0),
        ScheduledReload(at_s=300.0, service=LLM, component="model", lateness_s=2.0, probe_s=0.9),
        ScheduledReload(at_s=330.0, service="chat-api", component="feature_flags", lateness_s=4.0, probe_s=0.02),
        ScheduledReload(at_s=400.0, service="chat-api", component="model", probe_s=0.3),
        ScheduledReload(at_s=450.0, service=LLM, component="prompt_template", probe_s=0.05),
    )
    config = SimulationConfig(
        seed=seed,
        services=(LLM, "chat-api"),
        instances_per_service=2,
        requests_per_second_per_service=2.0,
        duration_s=540.0,
        reloads=schedule,
        regressions=(Regression(reload_index=0, latency_factor=2.5, error_rate=0.2),),
    )
    simulation = simulate(config)
    reloads = list(simulation.reloads)
    spans = [dict(span) for span in simulation.spans]
    late = {
        f"sim{seed}-r{index:03d}": int(item.lateness_s * NS_PER_S)
        for index, item in enumerate(schedule)
        if item.lateness_s
    }
    first, corrections = _late_corrections(spans, reloads, enrich, late)
    finals = latest_revisions([*first, *corrections])
    dataset = AnalystDataset(
        span_batches=[first, corrections],
        reloads=reloads,
        anomalies=_simulated_anomalies(finals, reloads),
        dead_letters=sample_dead_letters(),
        source="gateway.simulation.simulator + streams.enrichment + streams.detection",
        start_unix_nano=config.start_time_unix_nano,
        regression_reload_id=f"sim{seed}-r000",
    )
    dataset.final_spans.extend(finals)
    return dataset


def _attribute_text(value: Any) -> str:
    """The sink's stringification of an attribute value (see schemas/clickhouse/010_spans_enriched.sql)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)  # ClickHouse prints 1.0 as '1'
    return str(value)


_SPAN_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "service_name",
    "service_instance_id",
    "start_time",
    "end_time",
    "status_code",
    "status_message",
    "attributes",
    "resource_attributes",
    "versions",
    "versions_at_end",
    "reload_ids",
    "mid_flight",
    "mid_flight_reload_ids",
    "enrichment_revision",
)


def _span_row(span: dict[str, Any]) -> list[Any]:
    return [
        span["trace_id"],
        span["span_id"],
        span["parent_span_id"] or "",
        span["name"],
        span["kind"],
        span["service_name"],
        span["service_instance_id"],
        span["start_time_unix_nano"],
        span["end_time_unix_nano"],
        span["status_code"],
        span["status_message"] or "",
        {k: _attribute_text(v) for k, v in span["attributes"].items()},
        {k: _attribute_text(v) for k, v in (span.get("resource_attributes") or {}).items()},
        span["versions"],
        span["versions_at_end"],
        span["reload_ids"],
        span["mid_flight"],
        span["mid_flight_reload_ids"],
        span["enrichment_revision"],
    ]


_SEVERITY_RANK = {"INFO": 1, "WARNING": 2, "CRITICAL": 3}


def load_directly(client: Any, dataset: AnalystDataset) -> None:
    """Insert the data set column-mapped as the sink documents it (used until sinks' writer exists).

    Each span batch is its own insert, so revision-0 and revision-1 rows sit in different parts.
    """
    for batch in dataset.span_batches:
        if batch:
            client.insert("spans_enriched", [_span_row(s) for s in batch], column_names=list(_SPAN_COLUMNS))
    reload_columns = [
        "reload_id",
        "service_name",
        "service_instance_id",
        "component",
        "old_version",
        "new_version",
        "requested_time",
        "effective_time",
        "status",
        "source",
        "trace_id",
        "span_id",
        "model_context",
        "changed_keys",
    ]
    client.insert(
        "reload_events",
        [
            [
                r.reload_id,
                r.service_name,
                r.service_instance_id,
                r.component,
                r.old_version,
                r.new_version,
                r.requested_time_unix_nano,
                r.effective_time_unix_nano,
                r.status,
                r.source,
                r.trace_id,
                r.span_id,
                dict(r.model_context),
                list(r.changed_keys),
            ]
            for r in dataset.reloads
        ],
        column_names=reload_columns,
    )
    anomaly_columns = [
        "anomaly_id",
        "reload_id",
        "service_name",
        "component",
        "old_version",
        "new_version",
        "metric",
        "baseline_value",
        "observed_value",
        "p_value",
        "baseline_count",
        "observed_count",
        "detected_time",
        "severity",
        "severity_rank",
    ]
    for anomaly in dataset.anomalies:  # one insert each: the re-sent verdict lands in its own part
        row = [anomaly[c] for c in anomaly_columns[:12]]
        row += [anomaly["detected_time_unix_nano"], anomaly["severity"], _SEVERITY_RANK[anomaly["severity"]]]
        client.insert("anomalies", [row], column_names=anomaly_columns)
    dead_columns = [
        "source_topic",
        "source_partition",
        "source_offset",
        "raw_key",
        "raw_value",
        "error_kind",
        "error",
        "stage",
        "dead_lettered_time",
    ]
    client.insert(
        "dead_letters",
        [
            [
                d["source_topic"],
                d["source_partition"],
                d["source_offset"],
                d["raw_key"],
                d["raw_value"],
                d["error_kind"],
                d["error"],
                d["stage"],
                d["dead_lettered_time_unix_nano"],
            ]
            for d in dataset.dead_letters
        ],
        column_names=dead_columns,
    )


def load_through_sink(client: Any, dataset: AnalystDataset, settings: Any = None) -> str:
    """Insert the data set through the project's ClickHouse writer (``sinks.clickhouse.ClickHouseSink``).

    Falls back to :func:`load_directly` when the writer is not importable. Returns which loader ran.
    Each span batch is its own flush, so revision-0 and revision-1 rows land in different parts.
    """
    try:
        from sinks.clickhouse import ClickHouseSink
        from sinks.settings import SinkSettings
    except ImportError:
        load_directly(client, dataset)
        return "direct"
    if settings is None:
        settings = SinkSettings(url=f"chdb://{client.path}", database=client.database)
    sink = ClickHouseSink(settings, client=client, apply_ddl=False, retry_timeout_ms=0)
    for batch in dataset.span_batches:
        if batch:
            sink.write_records("spans_enriched", batch)
    sink.write_records("reload_events", [r.to_dict() for r in dataset.reloads])
    for anomaly in dataset.anomalies:  # one flush each: a re-sent verdict lands in its own part
        sink.write_records("anomalies", [anomaly])
    sink.write_records("dead_letters", dataset.dead_letters)
    dead = client.query("SELECT count() FROM dead_letters WHERE stage = 'sink'").result_rows[0][0]
    if dead:
        raise AssertionError(f"the sink refused {dead} records of the analyst data set")
    return "sinks.clickhouse.ClickHouseSink"
