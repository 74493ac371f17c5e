"""A small seeded traffic generator with injected regressions and benign reloads, for detection tests.

Each service gets Poisson requests (``rate_per_s``, spread over ``instances`` instances) with
log-normal latencies and a base error rate; reloads change the latency factor or the error rate
of the whole service (or of one instance, for canaries) from their effective time on. The
ground truth says, per reload, which metric should be flagged (None = benign: must stay quiet).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from schemas.records import ReloadEvent
from streams.detection import ERROR_RATE, LATENCY, RequestObservation

NANOS_PER_S = 1_000_000_000
EPOCH_NS = 1_780_000_000 * NANOS_PER_S


@dataclass(frozen=True)
class Change:
    """From ``at_s`` on, requests of ``service`` (of ``instance`` only, when set) behave like this."""

    at_s: float
    latency_factor: float = 1.0
    error_rate: float | None = None
    instance: str | None = None


@dataclass(frozen=True)
class Expectation:
    reload_id: str
    label: str
    metric: str | None


@dataclass
class Traffic:
    requests: list[RequestObservation] = field(default_factory=list)
    reloads: list[ReloadEvent] = field(default_factory=list)
    truth: list[Expectation] = field(default_factory=list)

    def spans(self) -> Iterator[dict]:
        """The requests as Span-shaped records (only the fields detection reads)."""
        for r in self.requests:
            yield {
                "service_name": r.service_name,
                "service_instance_id": r.service_instance_id,
                "start_time_unix_nano": r.start_time_unix_nano,
                "end_time_unix_nano": r.end_time_unix_nano,
                "status_code": "ERROR" if r.is_error else "OK",
                "kind": r.kind,
            }


def _service_requests(
    rng: np.random.Generator,
    service: str,
    *,
    start_s: float,
    end_s: float,
    changes: list[Change],
    rate_per_s: float,
    instances: int,
    median_ms: float,
    sigma: float,
    error_rate: float,
) -> list[RequestObservation]:
    count = rng.poisson(rate_per_s * (end_s - start_s))
    starts = np.sort(rng.uniform(start_s, end_s, count))
    instance_ids = rng.integers(0, instances, count)
    factor = np.ones(count)
    rate = np.full(count, error_rate)
    for change in sorted(changes, key=lambda c: c.at_s):
        hit = starts >= change.at_s
        if change.instance is not None:
            hit &= instance_ids == int(change.instance.rsplit("-", 1)[1])
        factor[hit] = change.latency_factor
        if change.error_rate is not None:
            rate[hit] = change.error_rate
    latency_ms = median_ms * factor * rng.lognormal(0.0, sigma, count)
    errors = rng.random(count) < rate
    out = []
    for start, instance, latency, error in zip(starts, instance_ids, latency_ms, errors, strict=True):
        start_ns = EPOCH_NS + int(start * NANOS_PER_S)
        out.append(
            RequestObservation(service, f"{service}-{instance}", start_ns, start_ns + int(latency * 1e6), bool(error), "SERVER")
        )
    return out


def _reload(service: str, number: int, at_s: float, *, status: str = "SUCCEEDED", instance: str | None = None,
            component: str = "model", duration_s: float = 0.2) -> ReloadEvent:
    effective = EPOCH_NS + int(at_s * NANOS_PER_S)
    return ReloadEvent(
        reload_id=f"{service}-r{number}",
        service_name=service,
        component=component,
        old_version=f"v{number}",
        new_version=f"v{number + 1}",
        requested_time_unix_nano=effective - int(duration_s * NANOS_PER_S),
        effective_time_unix_nano=effective,
        status=status,  # type: ignore[arg-type]
        source="test",
        service_instance_id=instance,
    )


def generate(seed: int, *, rate_per_s: float = 10.0, instances: int = 4, sigma: float = 0.5) -> Traffic:
    """One seed's traffic: every kind of injected regression and benign reload, one service each."""
    rng = np.random.default_rng(seed)
    traffic = Traffic()
    common = {"rate_per_s": rate_per_s, "instances": instances, "median_ms": 40.0, "sigma": sigma, "error_rate": 0.01}

    def service(name: str, changes: list[Change], start_s: float = 0.0, end_s: float = 900.0) -> None:
        traffic.requests.extend(_service_requests(rng, name, start_s=start_s, end_s=end_s, changes=changes, **common))

    def expect(reload: ReloadEvent, label: str, metric: str | None) -> None:
        traffic.reloads.append(reload)
        traffic.truth.append(Expectation(reload.reload_id, label, metric))

    # Latency x2 at 300 s, back to normal at 500 s (the revert is benign: right after a regression).
    service("latency", [Change(300, latency_factor=2.0), Change(500, latency_factor=1.0)])
    expect(_reload("latency", 1, 300), "latency x2", LATENCY)
    expect(_reload("latency", 2, 500), "revert after latency regression", None)
    # Error rate 1% -> 15% at 300 s, back at 500 s.
    service("errors", [Change(300, error_rate=0.15), Change(500, error_rate=0.01)])
    expect(_reload("errors", 1, 300), "errors 1%->15%", ERROR_RATE)
    expect(_reload("errors", 2, 500), "revert after error regression", None)
    # No change, a FAILED reload, a no-change canary, another no-change reload.
    service("steady", [])
    expect(_reload("steady", 1, 300), "no change", None)
    expect(_reload("steady", 2, 450, status="FAILED"), "FAILED", None)
    expect(_reload("steady", 3, 500, instance="steady-1"), "canary no change", None)
    expect(_reload("steady", 4, 700, component="routing_rules"), "no change (other component)", None)
    # A service whose traffic starts with its reload: no baseline.
    service("cold", [], start_s=300.0)
    expect(_reload("cold", 1, 300), "no prior traffic", None)
    # A canary that doubles latency on its instance only.
    service("canary", [Change(300, latency_factor=2.0, instance="canary-2")])
    expect(_reload("canary", 1, 300, instance="canary-2"), "canary latency x2", LATENCY)
    return traffic


def test_generator_injects_what_it_says() -> None:
    traffic = generate(1)
    by_service: dict[str, list[RequestObservation]] = {}
    for request in traffic.requests:
        by_service.setdefault(request.service_name, []).append(request)
    t300 = EPOCH_NS + 300 * NANOS_PER_S
    t500 = EPOCH_NS + 500 * NANOS_PER_S

    def median_latency(service: str, lo: int, hi: int) -> float:
        values = [(r.end_time_unix_nano - r.start_time_unix_nano) / 1e6 for r in by_service[service] if lo <= r.start_time_unix_nano < hi]
        return float(np.median(values))

    before, during = median_latency("latency", EPOCH_NS, t300), median_latency("latency", t300, t500)
    assert 1.7 < during / before < 2.3
    errors_during = [r.is_error for r in by_service["errors"] if t300 <= r.start_time_unix_nano < t500]
    assert 0.10 < np.mean(errors_during) < 0.20
    assert min(r.start_time_unix_nano for r in by_service["cold"]) >= t300
    assert 8 < len(by_service["steady"]) / 900 < 12
