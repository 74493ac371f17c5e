"""Deterministic multi-service LLM-gateway traffic on the real OTel SDK, with scheduled reloads and regressions.

Every service instance is a ``TracerProvider`` (resource ``service.name`` / ``service.instance.id``)
with a :class:`~gateway.handle.ReloadRegistry` holding the seven component kinds and the
:class:`~gateway.processor.ReloadStampingSpanProcessor` in front of an in-memory exporter. Time is
simulated: events (request starts/ends, LLM calls, reloads) run in event-time order on one
thread with explicit span times and the registries' injected clock, so a run is fast and, for a
given config, identical to the byte. Regressions are applied from the version timeline: an
instance is regressed while the latest SUCCEEDED reload that applies to it is a regression reload,
i.e. until the next SUCCEEDED reload (any component) of its service reaches it. Attributes follow
the OpenTelemetry conventions (``gen_ai.*``, ``http.*``); each request records its evaluation of the
``semantic_cache`` flag as a ``feature_flag.evaluation`` span event (the v1 span contract drops events).
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.attributes import GEN_AI_PROVIDER_NAME, flag_evaluation
from gateway.baggage import with_versions
from gateway.convert import span_record
from gateway.handle import RELOAD_ID_ATTRIBUTE, ReloadRegistry
from gateway.pinning import Pinned, activate
from gateway.processor import ReloadStampingSpanProcessor
from gateway.redaction import RedactionMode, Redactor
from gateway.simulation.config import NANOS, Regression, ScheduledReload, SimulationConfig, SimulationConfigError
from gateway.versioning import COMPONENT_KINDS, FEATURE_FLAGS_COMPONENT, Snapshot, flag_set_descriptor, model_descriptor
from schemas.records import FAILED, ReloadEvent, Span

_MODELS = (
    ("openai", "gpt-4o", ("2024-08-06", "2024-11-20", "2025-03-01")),
    ("anthropic", "claude-sonnet-4", ("20250514", "20250801", "20251001")),
    ("meta", "llama-3.1-70b-instruct", ("v1", "v2", "v3")),
)
_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
_EVALUATED_FLAG = "semantic_cache"  # the flag every request evaluates (a feature_flag.evaluation event)
_ERROR_STATUSES = (500, 502, 503, 429)


@dataclass(frozen=True, slots=True)
class PublishItem:
    """One record to publish: ``kind`` "span" or "reload", its index in the Simulation list, and when."""

    time_unix_nano: int
    kind: str
    index: int


@dataclass
class Simulation:
    """What a run produced: contract spans (end order), reload events, publication order, ground truth."""

    config: SimulationConfig
    spans: list[Span]
    reloads: list[ReloadEvent]
    publish_order: list[PublishItem]
    ground_truth: dict[str, Any]

    def interleaved(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``("span", record)`` / ``("reload", record)`` in publication order (late reloads after the
        spans that ended before they were published)."""
        for item in self.publish_order:
            if item.kind == "span":
                yield "span", self.spans[item.index]
            else:
                yield "reload", self.reloads[item.index].to_dict()


def random_schedule(config: SimulationConfig, rng: random.Random) -> tuple[ScheduledReload, ...]:
    """A random schedule: ``reloads_per_service`` per service in the middle 80% of the run."""
    kinds = list(COMPONENT_KINDS)
    schedule: list[ScheduledReload] = []
    for service in config.services:
        rng.shuffle(kinds)
        times = sorted(rng.uniform(0.1, 0.9) * config.duration_s for _ in range(config.reloads_per_service))
        for number, at_s in enumerate(times):
            canary = config.instances_per_service > 1 and rng.random() < config.canary_fraction
            late = rng.random() < config.late_fraction
            schedule.append(
                ScheduledReload(
                    at_s=round(at_s, 3),
                    service=service,
                    component=kinds[number % len(kinds)],
                    instance=rng.randrange(config.instances_per_service) if canary else None,
                    fail=rng.random() < config.failed_fraction,
                    lateness_s=round(rng.uniform(1.0, max(1.0, config.max_lateness_s)), 3) if late else 0.0,
                    probe_s=round(rng.uniform(0.02, 0.3), 3),
                    source=rng.choice(("deploy-pipeline", "operator", "consul-watch", "etcd-watch")),
                )
            )
    return tuple(sorted(schedule, key=lambda reload: (reload.at_s, reload.service)))


def component_value(
    component: str, revision: int, service_index: int, *, broken: bool = False, service: str | None = None
) -> dict[str, Any]:
    """A realistic value of ``component`` at ``revision`` (``broken`` fails the simulator's health check).

    Feature flags are a named flag set (``<service>/flags``, its ``feature_flag.set.id``).
    """
    value: dict[str, Any]
    if component == "model":
        provider, model_id, versions = _MODELS[service_index % len(_MODELS)]
        value = model_descriptor(
            model_id,
            versions[revision % len(versions)],
            provider=provider,
            parameters={"temperature": round(0.2 + 0.1 * (revision % 5), 1), "max_tokens": 1024},
            prompt_template=f"You are a helpful assistant. Policy revision {revision}.",
        )
    elif component == "config":
        value = {"timeout_s": 30 + revision, "max_retries": 2, "upstream_pool": f"pool-{revision % 3}"}
    elif component == "routing_rules":
        value = {
            "routes": [
                {"match": route, "target": f"pool-{(i + revision) % 3}", "weight": 100}
                for i, route in enumerate(_ROUTES)
            ]
        }
    elif component == "feature_flags":
        value = flag_set_descriptor(
            {"streaming": True, _EVALUATED_FLAG: revision % 2 == 1, "new_tokenizer": revision % 3 == 2},
            set_id=f"{service or f'service-{service_index}'}/flags",
        )
    elif component == "credentials":
        value = {"secret_ref": f"vault://llm/provider-key#v{revision + 1}", "rotated_revision": revision}
    elif component == "prompt_template":
        value = {"name": "default", "prompt_template": f"System prompt, revision {revision}."}
    elif component == "rate_limit_policy":
        value = {"requests_per_minute": 600 + 60 * revision, "burst": 50}
    else:
        value = {"revision": revision}
    if broken:
        value["health_probe"] = "fail"
    return value


class _SeededIds(IdGenerator):
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


class _Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass
class _Instance:
    service: str
    service_index: int
    index: int
    instance_id: str
    provider: TracerProvider
    tracer: trace.Tracer
    registry: ReloadRegistry


@dataclass
class _Request:
    instance: _Instance
    start: int
    duration: int
    streaming: bool
    error_draw: float
    route: str
    error: bool = False
    pinned: Pinned | None = None
    server: Any = None
    client: Any = None
    base_duration: int = 0  # before this service's own regression
    parent_context: Any = None  # a called request: the caller's CLIENT span and baggage
    caller: _Request | None = None


# Event priorities at equal times: reloads first (a version is active from its effective time on),
# then ends, then starts.
_RELOAD, _END_CLIENT, _END_SERVER, _START_SERVER, _START_CLIENT = range(5)


class _Run:
    def __init__(self, config: SimulationConfig, on_progress: Callable[[int, int], None] | None) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.ids = _SeededIds(random.Random(config.seed * 7919 + 17))
        self.clock = _Clock(config.start_time_unix_nano)
        self.on_progress = on_progress
        self.collector = InMemorySpanExporter()
        self.events: dict[str, ReloadEvent] = {}
        self.publication: dict[str, int] = {}
        self.schedule = config.reloads if config.reloads is not None else random_schedule(config, self.rng)
        self.regressions = self._resolve_regressions()
        self.instances = [
            self._instance(service, s, i)
            for s, service in enumerate(config.services)
            for i in range(config.instances_per_service)
        ]
        self.revisions: dict[tuple[str, str], int] = {}
        self.heap: list[tuple[int, int, int, Any]] = []
        self.sequence = 0
        self.probe_until = config.start_time_unix_nano
        # (instance id) -> list of (effective, reload_id) of SUCCEEDED reloads reaching it, in order
        self.applied: dict[str, list[tuple[int, str]]] = {instance.instance_id: [] for instance in self.instances}

    def reload_id(self, index: int) -> str:
        return f"sim{self.config.seed}-r{index:03d}"

    def _resolve_regressions(self) -> dict[str, Regression]:
        resolved: dict[str, Regression] = {}
        for regression in self.config.regressions:
            if regression.reload_index is not None:
                if not 0 <= regression.reload_index < len(self.schedule):
                    raise SimulationConfigError(f"reload_index {regression.reload_index} outside the schedule")
                index = regression.reload_index
            else:
                ids = [self.reload_id(i) for i in range(len(self.schedule))]
                if regression.reload_id not in ids:
                    raise SimulationConfigError(f"no scheduled reload has id {regression.reload_id!r}")
                index = ids.index(regression.reload_id)
            if self.schedule[index].fail:
                raise SimulationConfigError(f"reload {index} is scheduled to FAIL; a failed reload cannot regress")
            resolved[self.reload_id(index)] = regression
        return resolved

    def _instance(self, service: str, service_index: int, index: int) -> _Instance:
        instance_id = f"{service}-{index}"
        provider = TracerProvider(
            resource=Resource(
                {
                    "service.name": service,
                    "service.instance.id": instance_id,
                    "service.version": "1.0.0",
                    "deployment.environment.name": "simulation",
                    "host.name": f"node-{service_index}-{index}",
                }
            ),
            id_generator=self.ids,
            shutdown_on_exit=False,
        )
        registry = ReloadRegistry(
            service,
            instance_id,
            clock=self.clock,
            tracer=provider.get_tracer("reloadtrace.simulator"),
            listeners=[self._on_event],
        )
        provider.add_span_processor(ReloadStampingSpanProcessor(registry, SimpleSpanProcessor(self.collector)))
        return _Instance(
            service, service_index, index, instance_id, provider, provider.get_tracer("llm-gateway"), registry
        )

    def _on_event(self, event: ReloadEvent) -> None:
        self.events.setdefault(event.reload_id, event)

    def push(self, time: int, priority: int, payload: Any) -> None:
        self.sequence += 1
        heapq.heappush(self.heap, (time, priority, self.sequence, payload))

    def _probe(self, snapshot: Snapshot) -> None:
        """The health check of every simulated component: takes until ``probe_until``, fails broken values."""
        self.clock.now = max(self.clock.now, self.probe_until)
        if snapshot.get("health_probe") == "fail":
            raise RuntimeError("health probe failed after loading the new version")

    def register_components(self) -> None:
        for instance in self.instances:
            for component in COMPONENT_KINDS:
                instance.registry.register(
                    component,
                    component_value(component, 0, instance.service_index, service=instance.service),
                    reload_id=f"sim{self.config.seed}-{instance.service}-{component}-initial",
                    health_check=self._probe,
                )
        for event in self.events.values():
            self.publication[event.reload_id] = event.effective_time_unix_nano

    def schedule_traffic(self) -> None:
        config = self.config
        rate = config.requests_per_second_per_service / config.instances_per_service
        start = config.start_time_unix_nano
        for instance in self.instances:
            window_start, window_end = config.traffic_windows.get(instance.service, (0.0, config.duration_s))
            if rate <= 0:
                continue
            t = window_start
            while True:
                t += self.rng.expovariate(rate)
                if t >= min(window_end, config.duration_s):
                    break
                streaming = self.rng.random() < config.streaming_fraction
                if streaming:
                    duration_s = self.rng.uniform(*config.streaming_duration_s)
                else:
                    duration_s = config.base_latency_ms / 1000 * self.rng.lognormvariate(0.0, config.latency_sigma)
                request = _Request(
                    instance=instance,
                    start=start + int(t * NANOS),
                    duration=max(int(duration_s * NANOS), 5_000_000),
                    streaming=streaming,
                    error_draw=self.rng.random(),  # judged at start against the error rate active then
                    route=_ROUTES[0] if streaming else self.rng.choice(_ROUTES[:2]),
                )
                self.push(request.start, _START_SERVER, request)
        for index, reload in enumerate(self.schedule):
            self.push(start + int(reload.at_s * NANOS), _RELOAD, index)

    def active_regression(self, instance: _Instance, at: int) -> Regression | None:
        applied = self.applied[instance.instance_id]
        latest = None
        for effective, reload_id in applied:
            if effective <= at:
                latest = reload_id
        return self.regressions.get(latest) if latest is not None else None

    def do_reload(self, index: int) -> None:
        reload = self.schedule[index]
        effective = self.config.start_time_unix_nano + int(reload.at_s * NANOS)
        revision = self.revisions.get((reload.service, reload.component), 0) + 1
        if not reload.fail:
            self.revisions[(reload.service, reload.component)] = revision
        targets = [
            instance
            for instance in self.instances
            if instance.service == reload.service and (reload.instance is None or instance.index == reload.instance)
        ]
        carrier = None
        reload_id = self.reload_id(index)
        for instance in targets:
            self.clock.now = max(self.clock.now, effective - int(reload.probe_s * NANOS))
            self.probe_until = effective
            handle = instance.registry[reload.component] if reload.component in instance.registry.components() else None
            if handle is None:
                handle = instance.registry.register(
                    reload.component,
                    component_value(reload.component, 0, instance.service_index, service=instance.service),
                    announce=False,
                    health_check=self._probe,
                )
            event = handle.reload(
                component_value(
                    reload.component, revision, instance.service_index, broken=reload.fail, service=instance.service
                ),
                source=reload.source,
                reload_id=reload_id,
                instance_scoped=reload.instance is not None,
                carrier=carrier,
            )
            if carrier is None and event.trace_id and event.span_id:
                carrier = {"traceparent": f"00-{event.trace_id}-{event.span_id}-01"}
            if event.status != FAILED:
                self.applied[instance.instance_id].append((event.effective_time_unix_nano, reload_id))
        first = self.events[reload_id]
        self.publication[reload_id] = first.effective_time_unix_nano + int(reload.lateness_s * NANOS)

    def start_server(self, request: _Request) -> None:
        instance = request.instance
        regression = self.active_regression(instance, request.start)
        error_rate = (
            regression.error_rate if regression and regression.error_rate is not None else self.config.base_error_rate
        )
        request.error = request.error_draw < error_rate
        request.base_duration = request.duration
        if regression is not None:
            request.duration = int(request.duration * regression.latency_factor)
        self.clock.now = max(self.clock.now, request.start)
        request.pinned = instance.registry.take_pin()
        with activate(request.pinned):
            request.server = instance.tracer.start_span(
                f"POST {request.route}",
                kind=SpanKind.SERVER,
                start_time=request.start,
                context=request.parent_context or trace.set_span_in_context(trace.INVALID_SPAN),
                attributes={
                    "http.request.method": "POST",
                    "http.route": request.route,
                    "url.path": request.route,
                    "url.scheme": "https",
                    "server.address": f"{instance.service}.internal",
                    "client.address": f"10.0.{instance.service_index}.{self.rng.randrange(2, 250)}",
                    "user_agent.original": "openai-python/1.54.0",
                    # What careless instrumentation records; redaction must keep it out of Kafka.
                    "http.request.header.authorization": f"Bearer sk-sim-{self.rng.getrandbits(48):012x}",
                    "gen_ai.request.stream": request.streaming,
                },
            )
            flags = request.pinned.snapshots.get(FEATURE_FLAGS_COMPONENT)
            if flags is not None and _EVALUATED_FLAG in flags.get("flags", {}):
                name, attributes = flag_evaluation(flags, _EVALUATED_FLAG, flags["flags"][_EVALUATED_FLAG])
                request.server.add_event(name, attributes, timestamp=request.start)
        overhead = self.rng.randrange(2_000_000, 15_000_000)
        self.push(request.start + min(overhead, request.duration // 4), _START_CLIENT, request)

    def call_downstream(self, request: _Request, at: int, callee: str) -> None:
        """The CLIENT span of a call to ``callee`` and the callee's request, ended by the callee's end."""
        with activate(request.pinned):
            request.client = request.instance.tracer.start_span(
                "POST /v1/chat/completions",
                kind=SpanKind.CLIENT,
                start_time=at,
                context=trace.set_span_in_context(request.server),
                attributes={
                    "http.request.method": "POST",
                    "server.address": f"{callee}.internal",
                    "url.full": f"https://{callee}.internal/v1/chat/completions",
                    "peer.service": callee,
                },
            )
        outgoing = with_versions(request.pinned, trace.set_span_in_context(request.client)).context
        instance = self.rng.choice([candidate for candidate in self.instances if candidate.service == callee])
        planned_end = request.start + request.base_duration - self.rng.randrange(1_000_000, 4_000_000)
        called = _Request(
            instance=instance,
            start=at + 1_000_000,
            duration=max(planned_end - at - 2_000_000, 5_000_000),
            streaming=request.streaming,
            error_draw=self.rng.random(),
            route=_ROUTES[0],
            parent_context=outgoing,
            caller=request,
        )
        self.push(called.start, _START_SERVER, called)

    def start_client(self, request: _Request, at: int) -> None:
        instance = request.instance
        callee = self.config.calls.get(instance.service)
        if callee is not None:
            self.call_downstream(request, at, callee)
            return
        model = request.pinned.snapshots["model"] if request.pinned else None
        model_id = model.model_context.get("model.id", "unknown") if model else "unknown"
        parameters = model.value.get("parameters", {}) if model else {}
        with activate(request.pinned):
            request.client = instance.tracer.start_span(
                f"chat {model_id}",
                kind=SpanKind.CLIENT,
                start_time=at,
                context=trace.set_span_in_context(request.server),
                attributes={
                    GEN_AI_PROVIDER_NAME: model.model_context.get("model.provider", "openai") if model else "openai",
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": model_id,
                    "gen_ai.request.temperature": float(parameters.get("temperature", 0.7)),
                    "gen_ai.request.max_tokens": int(parameters.get("max_tokens", 1024)),
                    "gen_ai.request.stream": request.streaming,
                    "server.address": "api.llm-provider.example",
                },
            )
        tail = self.rng.randrange(1_000_000, 4_000_000)
        end = max(at + 1_000_000, request.start + request.duration - tail)
        self.push(end, _END_CLIENT, (request, end))

    def end_call(self, request: _Request, at: int) -> None:
        client = request.client
        client.set_attribute("http.response.status_code", 502 if request.error else 200)
        if request.error:
            client.set_status(Status(StatusCode.ERROR, "downstream error"))
        client.end(end_time=at)
        # this service's own regression adds its share after the call returns
        extra = request.duration - request.base_duration
        end = at + self.rng.randrange(1_000_000, 4_000_000) + max(0, extra)
        self.push(end, _END_SERVER, (request, end))

    def end_client(self, request: _Request, at: int) -> None:
        if request.client.kind is SpanKind.CLIENT and "peer.service" in (request.client.attributes or {}):
            self.end_call(request, at)
            return
        client = request.client
        seconds = (at - client.start_time) / NANOS
        output_tokens = max(1, int(seconds * (60 if request.streaming else 180) * self.rng.uniform(0.7, 1.3)))
        attributes: dict[str, Any] = {
            "gen_ai.usage.input_tokens": self.rng.randrange(40, 3000),
            "gen_ai.usage.output_tokens": output_tokens,
            "gen_ai.response.model": client.attributes.get("gen_ai.request.model", "unknown"),
            "gen_ai.response.finish_reasons": ("error",) if request.error else ("stop",),
        }
        client.set_attributes(attributes)
        if request.error:
            client.set_status(Status(StatusCode.ERROR, "upstream model error"))
            client.set_attribute("error.type", "UpstreamError")
        client.end(end_time=at)
        end = max(at, request.start + request.duration)
        self.push(end, _END_SERVER, (request, end))

    def end_server(self, request: _Request, at: int) -> None:
        server = request.server
        if request.error:
            code = self.rng.choice(_ERROR_STATUSES)
            server.set_attribute("http.response.status_code", code)
            server.set_attribute("error.type", str(code))
            server.set_status(Status(StatusCode.ERROR, f"HTTP {code}"))
        else:
            server.set_attribute("http.response.status_code", 200)
        server.end(end_time=at)
        if request.caller is not None:
            request.caller.error = request.caller.error or request.error
            self.push(at + 1_000_000, _END_CLIENT, (request.caller, at + 1_000_000))

    def run(self) -> Simulation:
        self.register_components()
        self.schedule_traffic()
        total, done = len(self.heap), 0
        while self.heap:
            at, priority, _, payload = heapq.heappop(self.heap)
            if priority == _RELOAD:
                self.do_reload(payload)
            elif priority == _START_SERVER:
                self.start_server(payload)
                total += 3  # its client start, client end and server end follow
            elif priority == _START_CLIENT:
                self.start_client(payload, at)
            elif priority == _END_CLIENT:
                self.end_client(*payload)
            else:
                self.end_server(*payload)
            done += 1
            if self.on_progress is not None and done % 500 == 0:
                self.on_progress(done, total)
        if self.on_progress is not None:
            self.on_progress(done, total)
        return self.finish()

    def finish(self) -> Simulation:
        redactor = Redactor(mode=RedactionMode.DROP, salt=self.config.redaction_salt)
        finished: Sequence[ReadableSpan] = self.collector.get_finished_spans()
        spans = [span_record(span, redactor) for span in finished]
        control_plane = {index for index, span in enumerate(finished) if RELOAD_ID_ATTRIBUTE in (span.attributes or {})}
        for instance in self.instances:
            instance.provider.shutdown()
        reloads = [
            ReloadEvent(
                **{
                    **event.to_dict(),
                    "model_context": redactor.model_context(event.model_context),
                    "changed_keys": tuple(event.changed_keys),
                }
            )
            for event in self.events.values()
        ]
        items = [PublishItem(span["end_time_unix_nano"], "span", index) for index, span in enumerate(spans)]
        items += [
            PublishItem(self.publication[event.reload_id], "reload", index) for index, event in enumerate(reloads)
        ]
        order = {"reload": 0, "span": 1}
        items.sort(key=lambda item: (item.time_unix_nano, order[item.kind], item.index))
        truth = ground_truth(
            self.config,
            self.schedule,
            self.regressions,
            reloads,
            spans,
            self.publication,
            self.applied,
            control_plane,
            self.reload_id,
        )
        return Simulation(self.config, spans, reloads, items, truth)


def mid_flight_reloads(span: Mapping[str, Any], reloads: Sequence[ReloadEvent]) -> list[str]:
    """DESIGN's rule: SUCCEEDED reloads applying to the span's (service, instance) with start < effective ≤ end."""
    return sorted(
        event.reload_id
        for event in reloads
        if event.succeeded
        and event.applies_to(span["service_name"], span["service_instance_id"])
        and span["start_time_unix_nano"] < event.effective_time_unix_nano <= span["end_time_unix_nano"]
    )


def ground_truth(
    config: SimulationConfig,
    schedule: Sequence[ScheduledReload],
    regressions: Mapping[str, Regression],
    reloads: Sequence[ReloadEvent],
    spans: Sequence[Span],
    publication: Mapping[str, int],
    applied: Mapping[str, list[tuple[int, str]]],
    control_plane: set[int],
    reload_id: Callable[[int], str],
) -> dict[str, Any]:
    """Which reloads were regressions (kind, factor, rate, until when per instance) and which spans straddle which reload."""
    scheduled = {reload_id(index): (index, reload) for index, reload in enumerate(schedule)}
    rows = []
    for event in reloads:
        index, reload = scheduled.get(event.reload_id, (None, None))
        regression = regressions.get(event.reload_id)
        row: dict[str, Any] = {
            "reload_id": event.reload_id,
            "schedule_index": index,
            "initial": index is None,
            "service_name": event.service_name,
            "service_instance_id": event.service_instance_id,
            "component": event.component,
            "status": event.status,
            "effective_time_unix_nano": event.effective_time_unix_nano,
            "published_time_unix_nano": publication[event.reload_id],
            "publication_delay_ns": publication[event.reload_id] - event.effective_time_unix_nano,
            "late": publication[event.reload_id] > event.effective_time_unix_nano,
            "regression": None,
            "label": reload.label if reload is not None else "initial",
        }
        if regression is not None:
            until = {}
            for instance_id, entries in applied.items():
                ids = [rid for _, rid in entries]
                if event.reload_id in ids:
                    position = ids.index(event.reload_id)
                    until[instance_id] = entries[position + 1][0] if position + 1 < len(entries) else None
            row["regression"] = {
                "kind": regression.kind,
                "latency_factor": regression.latency_factor,
                "error_rate": regression.error_rate,
                "until_unix_nano_by_instance": dict(sorted(until.items())),
            }
        rows.append(row)
    straddles: dict[str, list[str]] = {}
    by_reload: dict[str, list[str]] = {}
    for position, span in enumerate(spans):
        crossed = mid_flight_reloads(span, reloads)
        if crossed:
            straddles[span["span_id"]] = crossed
            for rid in crossed:
                by_reload.setdefault(rid, []).append(span["span_id"])
    return {
        "config": config.to_dict()
        | {"reloads": [asdict(reload) for reload in schedule], "regressions": [asdict(r) for r in config.regressions]},
        "reloads": rows,
        "regression_reload_ids": sorted(regressions),
        "mid_flight_spans": straddles,
        "spans_by_reload": by_reload,
        "control_plane_span_ids": sorted(spans[index]["span_id"] for index in control_plane),
        "counts": {
            "spans": len(spans),
            "requests": sum(1 for span in spans if span["kind"] == "SERVER"),
            "reloads": len(reloads),
            "failed_reloads": sum(1 for event in reloads if not event.succeeded),
            "late_reloads": sum(1 for row in rows if row["late"]),
            "mid_flight_spans": len(straddles),
        },
    }


def simulate(config: SimulationConfig, *, on_progress: Callable[[int, int], None] | None = None) -> Simulation:
    """Run the scenario in event time and return everything it produced.

    Guarantee: the same config gives equal results (no wall clock, no global randomness).
    ``on_progress(done, total)`` is called every 500 events (``total`` grows as requests start).

    Raises:
        SimulationConfigError: a regression names no scheduled reload, or a FAILED one.
    """
    return _Run(config, on_progress).run()


def ground_truth_json(simulation: Simulation) -> str:
    return json.dumps(simulation.ground_truth, sort_keys=True, indent=2) + "\n"
