"""Seeded traffic scenarios for enrichment tests: spans and reloads with a real-time publish schedule.

A scenario is a set of services and instances serving spans over a few seconds around "now",
with reloads of several components during that time: service-wide ones, canaries on one
instance (some at exactly the time of a service-wide reload), FAILED ones, and long spans that
straddle several. Each record has a publish offset (seconds after the scenario's start): spans are
published when they end (as an exporter does), reloads either when they take effect or 1-20 s late,
after the spans they govern.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.files import write_records

_NS = 1_000_000_000
_MS = 1_000_000

SERVICES = {"llm-gateway": ("gw-1", "gw-2", "gw-3"), "router": ("router-1", "router-2")}
COMPONENTS = ("model", "config", "routing_rules", "prompt_template")


@dataclass(frozen=True)
class Scheduled:
    """One record and when to publish it (seconds after the scenario starts)."""

    publish_at_s: float
    topic: str
    """"spans" or "reloads"."""
    record: dict[str, Any]


@dataclass
class Scenario:
    base_time_unix_nano: int
    spans: list[dict[str, Any]] = field(default_factory=list)
    reloads: list[dict[str, Any]] = field(default_factory=list)
    schedule: list[Scheduled] = field(default_factory=list)

    def late_reload_fraction(self, low_s: float = 1.0, high_s: float = 20.0) -> float:
        """Fraction of reloads published ``low_s``-``high_s`` after the first span they govern is."""
        span_publish = {id(item.record): item.publish_at_s for item in self.schedule if item.topic == "spans"}
        late = 0
        for item in self.schedule:
            if item.topic != "reloads":
                continue
            reload = item.record
            governed = [
                span_publish[id(span)]
                for span in self.spans
                if span["service_name"] == reload["service_name"]
                and reload["service_instance_id"] in (None, span["service_instance_id"])
                and span["end_time_unix_nano"] >= reload["effective_time_unix_nano"]
            ]
            if governed and low_s <= item.publish_at_s - min(governed) <= high_s:
                late += 1
        return late / len(self.reloads) if self.reloads else 0.0

    def write(self, directory: Path, suffix: str = ".jsonl") -> tuple[Path, Path]:
        """Spans and reloads in files (shuffled: replay must not depend on order)."""
        rng = random.Random(len(self.spans))
        spans, reloads = list(self.spans), list(self.reloads)
        rng.shuffle(spans)
        rng.shuffle(reloads)
        spans_path, reloads_path = directory / f"spans{suffix}", directory / f"reloads{suffix}"
        write_records(spans_path, "Span", spans)
        write_records(reloads_path, "ReloadEvent", reloads)
        return spans_path, reloads_path


def _hex(rng: random.Random, length: int) -> str:
    value = "0" * length
    while value == "0" * length:
        value = f"{rng.getrandbits(length * 4):0{length}x}"
    return value


def build_scenario(
    *,
    seed: int,
    base_time_unix_nano: int,
    duration_s: float = 6.0,
    spans_per_second: int = 120,
    late_fraction: float = 0.6,
    max_delay_s: float = 9.0,
) -> Scenario:
    """A deterministic scenario for ``seed`` whose span times start at ``base_time_unix_nano``."""
    rng = random.Random(seed)
    base = base_time_unix_nano
    scenario = Scenario(base)
    counter = 0

    def reload(service: str, component: str, effective: int, *, instance: str | None = None,
               status: str = "SUCCEEDED", publish_at_s: float | None = None) -> dict[str, Any]:
        nonlocal counter
        counter += 1
        record = {
            "reload_id": f"r{seed}-{counter:03d}-{component}",
            "service_name": service,
            "service_instance_id": instance,
            "component": component,
            "old_version": None,
            "new_version": f"{component}-{_hex(rng, 8)}",
            "requested_time_unix_nano": effective - rng.randint(1, 50) * _MS,
            "effective_time_unix_nano": effective,
            "status": status,
            "source": rng.choice(["admin-api", "config-watch", "deploy"]),
            "trace_id": _hex(rng, 32),
            "span_id": _hex(rng, 16),
            "model_context": {"model.id": "gpt-x"} if component == "model" else {},
            "changed_keys": ["temperature"] if component == "config" else [],
        }
        scenario.reloads.append(record)
        at = (effective - base) / _NS if publish_at_s is None else publish_at_s
        scenario.schedule.append(Scheduled(max(0.0, at), "reloads", record))
        return record

    # Versions before the window, published first.
    for service in SERVICES:
        for component in COMPONENTS[:3]:
            reload(service, component, base - rng.randint(30, 600) * _NS, publish_at_s=0.0)

    # Reloads during the window: some on time, many late; canaries, ties and failures.
    window = int(duration_s * _NS)
    for service, instances in SERVICES.items():
        for _ in range(7):
            effective = base + rng.randint(int(0.3 * _NS), window - int(0.3 * _NS))
            component = rng.choice(COMPONENTS)
            kind = rng.random()
            delay = rng.uniform(1.5, max_delay_s) if rng.random() < late_fraction else 0.0
            at = (effective - base) / _NS + delay
            if kind < 0.2:
                reload(service, component, effective, status="FAILED", publish_at_s=at)
            elif kind < 0.45:
                canary = rng.choice(instances)
                reload(service, component, effective, instance=canary, publish_at_s=at)
                if rng.random() < 0.5:  # a service-wide reload at exactly the canary's time
                    reload(service, component, effective, publish_at_s=at + rng.uniform(0, 1))
            else:
                reload(service, component, effective, publish_at_s=at)

    # Spans, published when they end.
    for _ in range(int(duration_s * spans_per_second)):
        service = rng.choice(list(SERVICES))
        instance = rng.choice(SERVICES[service])
        start = base + rng.randint(0, window)
        duration = int(rng.choice([rng.uniform(2, 80), rng.uniform(100, 900), rng.uniform(1000, 2500)]) * _MS)
        end = start + duration
        error = rng.random() < 0.05
        span = {
            "trace_id": _hex(rng, 32),
            "span_id": _hex(rng, 16),
            "parent_span_id": None,
            "name": "POST /v1/chat/completions",
            "kind": rng.choice(["SERVER", "SERVER", "SERVER", "CLIENT"]),
            "service_name": service,
            "service_instance_id": instance,
            "start_time_unix_nano": start,
            "end_time_unix_nano": end,
            "status_code": "ERROR" if error else "OK",
            "status_message": "upstream timeout" if error else None,
            "attributes": {"http.response.status_code": 500 if error else 200, "gen_ai.request.model": "gpt-x"},
            "resource_attributes": {"deployment.environment.name": "test"},
        }
        scenario.spans.append(span)
        scenario.schedule.append(Scheduled((end - base) / _NS, "spans", span))
    scenario.schedule.sort(key=lambda item: item.publish_at_s)
    return scenario
