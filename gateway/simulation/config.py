"""What a simulation run is: the scenario (services, traffic, scheduled reloads, injected regressions).

Plain frozen dataclasses, validated on construction (:class:`SimulationConfigError`), with no
OpenTelemetry import, so the ``reloadtrace simulate`` flags can take their defaults from here cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.errors import GatewayError

NANOS = 1_000_000_000
_DEFAULT_START_TIME_UNIX_NANO = 1_764_547_200 * NANOS  # 2025-12-01T00:00:00Z
SERVICE_NAMES = ("llm-gateway", "chat-api", "embeddings-api", "rag-api", "moderation-api", "agent-api")


def service_names(count: int) -> tuple[str, ...]:
    """``count`` distinct service names: those of :data:`SERVICE_NAMES` in order, then ``service-<i>``."""
    return tuple(SERVICE_NAMES[i] if i < len(SERVICE_NAMES) else f"service-{i}" for i in range(count))


_DEFAULT_SERVICES = service_names(3)


class SimulationConfigError(GatewayError, ValueError):
    """A simulation scenario that cannot be run (unknown service, reload index out of range, ...)."""


@dataclass(frozen=True)
class ScheduledReload:
    """One reload attempt of the scenario.

    Args:
        at_s: seconds after the start when the new version takes effect (it is requested
            ``probe_s`` earlier, while the health check runs).
        service: service name (one of the config's services).
        component: any component kind; the seven of ``COMPONENT_KINDS`` have realistic values.
        instance: index of the instance for a canary (instance-scoped) reload; None = service-wide.
        fail: the health check rejects it: a FAILED event, the old version keeps serving.
        lateness_s: the event is published this many seconds after it took effect.
        probe_s: duration of the health check (requested → effective).
        source: who triggered it.
        label: free text copied to the ground truth (e.g. "benign:no-change"), for test scenarios.
    """

    at_s: float
    service: str
    component: str
    instance: int | None = None
    fail: bool = False
    lateness_s: float = 0.0
    probe_s: float = 0.05
    source: str = "deploy-pipeline"
    label: str | None = None


@dataclass(frozen=True)
class Regression:
    """A behaviour change injected after one reload, until the next SUCCEEDED reload reaching the same instances.

    Name the reload by ``reload_index`` (position in the schedule) or ``reload_id``
    (``sim<seed>-r<index:03d>``). ``latency_factor`` multiplies request durations;
    ``error_rate`` (when set) replaces the base error rate.
    """

    reload_index: int | None = None
    reload_id: str | None = None
    latency_factor: float = 1.0
    error_rate: float | None = None

    @property
    def kind(self) -> str:
        kinds = []
        if self.latency_factor != 1.0:
            kinds.append("latency")
        if self.error_rate is not None:
            kinds.append("error_rate")
        return "+".join(kinds) or "none"


@dataclass(frozen=True)
class SimulationConfig:
    """A traffic scenario. Same config = identical output (``simulate`` reads no wall clock, no global RNG).

    ``reloads`` None draws a random schedule from the seed (``reloads_per_service`` per service,
    every component kind used, with ``failed_fraction`` / ``canary_fraction`` / ``late_fraction``).
    ``traffic_windows`` limits a service's requests to ``(start_s, end_s)`` (e.g. no prior traffic).
    ``calls`` makes a service call another instead of the model provider (``{"chat-api": "llm-gateway"}``):
    the callee's SERVER span is a child of the caller's CLIENT span in the same trace, and the
    caller's pinned versions travel as W3C baggage onto it (``upstream.<service>.<component>.version``).
    Called requests come on top of the callee's own ``requests_per_second_per_service``.
    """

    seed: int = 0
    services: tuple[str, ...] = _DEFAULT_SERVICES
    instances_per_service: int = 2
    requests_per_second_per_service: float = 10.0
    duration_s: float = 60.0
    start_time_unix_nano: int = _DEFAULT_START_TIME_UNIX_NANO
    reloads: tuple[ScheduledReload, ...] | None = None
    reloads_per_service: int = 3
    failed_fraction: float = 0.15
    canary_fraction: float = 0.2
    late_fraction: float = 0.2
    max_lateness_s: float = 5.0
    regressions: tuple[Regression, ...] = ()
    base_error_rate: float = 0.01
    base_latency_ms: float = 250.0
    latency_sigma: float = 0.35
    streaming_fraction: float = 0.1
    streaming_duration_s: tuple[float, float] = (2.0, 8.0)
    traffic_windows: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    calls: Mapping[str, str] = field(default_factory=dict)
    redaction_salt: str = "reloadtrace-simulator"

    def __post_init__(self) -> None:
        if not self.services or len(set(self.services)) != len(self.services):
            raise SimulationConfigError("services must be a non-empty list of distinct names")
        if self.instances_per_service < 1 or self.duration_s <= 0 or self.requests_per_second_per_service < 0:
            raise SimulationConfigError(
                "instances_per_service >= 1, duration_s > 0, requests_per_second_per_service >= 0"
            )
        for name in ("failed_fraction", "canary_fraction", "late_fraction", "base_error_rate", "streaming_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SimulationConfigError(f"{name} must be within [0, 1]")
        for reload in self.reloads or ():
            if reload.service not in self.services:
                raise SimulationConfigError(f"scheduled reload names unknown service {reload.service!r}")
            if reload.instance is not None and not 0 <= reload.instance < self.instances_per_service:
                raise SimulationConfigError(f"instance index {reload.instance} out of range")
            if not 0 <= reload.at_s <= self.duration_s or reload.probe_s < 0 or reload.lateness_s < 0:
                raise SimulationConfigError(f"reload at {reload.at_s}s is outside the run or has negative delays")
        for caller, callee in self.calls.items():
            if caller not in self.services or callee not in self.services or caller == callee:
                raise SimulationConfigError(f"calls {caller!r} -> {callee!r} must name two different services")
            if self.calls.get(callee) is not None:
                raise SimulationConfigError("calls are one hop deep: a called service calls no other")
        for regression in self.regressions:
            if (regression.reload_index is None) == (regression.reload_id is None):
                raise SimulationConfigError("a Regression names exactly one of reload_index or reload_id")
            if regression.latency_factor <= 0 or not 0 <= (regression.error_rate or 0) <= 1:
                raise SimulationConfigError("latency_factor > 0 and error_rate within [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["traffic_windows"] = {key: list(value) for key, value in self.traffic_windows.items()}
        data["calls"] = dict(self.calls)
        return data
