"""Reload handles: one immutable, versioned snapshot per component, swapped atomically and traced.

``ReloadRegistry`` gathers the handles of one service instance; every reload attempt becomes a
:class:`~schemas.records.ReloadEvent` handed to the registry's listeners (e.g. a ``ReloadPublisher``)
and a ``reload <component>`` span whose attributes follow the reload span convention
(:mod:`schemas.reload_span`): converted back, the span gives the same event.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.errors import ReloadRejectedError, UnknownComponentError
from gateway.pinning import Pinned, current_pin
from gateway.versioning import Snapshot, changed_keys, content_version, freeze, model_context_of
from schemas.records import FAILED, SUCCEEDED, ReloadEvent
from schemas.reload_span import (
    RELOAD_COMPONENT,
    RELOAD_ID,
    RELOAD_NEW_VERSION,
    RELOAD_SCOPE,
    RELOAD_SOURCE,
    SCOPE_INSTANCE,
    SCOPE_SERVICE,
    reload_span_attributes,
)

_LOG = logging.getLogger(__name__)
_DEFAULT_RELOAD_LOG_SIZE = 4096
_DEFAULT_INITIAL_SOURCE = "startup"
_DEFAULT_SOURCE = "api"
TRACER_NAME = "reloadtrace.gateway"

Clock = Callable[[], int]
Validator = Callable[[Any], Any]
HealthCheck = Callable[[Snapshot], Any]
ReloadListener = Callable[[ReloadEvent], None]

# Attributes of the reload span (control plane): the convention of schemas.reload_span.
RELOAD_ID_ATTRIBUTE = RELOAD_ID
RELOAD_COMPONENT_ATTRIBUTE = RELOAD_COMPONENT


def _span_ids(span: trace.Span) -> tuple[str | None, str | None]:
    span_context = span.get_span_context()
    if not span_context.is_valid:
        return None, None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


def traceparent_context(trace_id: str, span_id: str) -> context_api.Context:
    """A context whose parent is the given (remote) span, e.g. the reload span of another instance."""
    parent = SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    return trace.set_span_in_context(NonRecordingSpan(parent), context_api.Context())


class ReloadHandle:
    """The live snapshot of one component.

    ``current()`` is a single pointer read (never blocks, never sees a half-built snapshot);
    ``get()`` prefers the snapshot pinned by the running request. Reloads are serialised per
    handle; validation runs outside the lock, so a slow health check never blocks readers.
    """

    def __init__(
        self,
        registry: ReloadRegistry,
        component: str,
        snapshot: Snapshot,
        *,
        validator: Validator | None = None,
        health_check: HealthCheck | None = None,
    ) -> None:
        self.registry = registry
        self.component = component
        self._snapshot = snapshot
        self._validator = validator
        self._health_check = health_check
        self._lock = threading.Lock()

    def current(self) -> Snapshot:
        """The snapshot serving new requests right now."""
        return self._snapshot

    def get(self) -> Snapshot:
        """The snapshot pinned by the running request, else :meth:`current`."""
        pinned = current_pin(self.registry)
        if pinned is not None and self.component in pinned.snapshots:
            return pinned.snapshots[self.component]
        return self._snapshot

    @property
    def version(self) -> str:
        return self._snapshot.version

    def _candidate(self, new_value: Any, version: str | None, reload_id: str, requested: int) -> Snapshot:
        frozen = freeze(new_value)
        version = version or content_version(frozen)
        return Snapshot(
            component=self.component,
            version=version,
            value=frozen,
            effective_time_unix_nano=requested,
            reload_id=reload_id,
            model_context=model_context_of(self.component, frozen, version),
        )

    def _verdict(self, outcome: Any, what: str) -> None:
        if outcome is False:
            raise ReloadRejectedError(self.component, f"{what} returned False")

    def _check(self, candidate: Snapshot) -> None:
        if self._validator is not None:
            self._verdict(self._validator(candidate.value), "validator")
        if self._health_check is not None:
            self._verdict(self._health_check(candidate), "health check")

    async def _check_async(self, candidate: Snapshot) -> None:
        for check, argument, what in (
            (self._validator, candidate.value, "validator"),
            (self._health_check, candidate, "health check"),
        ):
            if check is None:
                continue
            outcome = check(argument)
            if inspect.isawaitable(outcome):
                outcome = await outcome
            self._verdict(outcome, what)

    def _check_scope(self, instance_scoped: bool) -> None:
        if instance_scoped and not self.registry.service_instance_id:
            raise ValueError("an instance-scoped reload needs a registry with a service_instance_id")

    def _begin(
        self,
        new_value: Any,
        version: str | None,
        source: str,
        reload_id: str | None,
        context: context_api.Context | None,
        carrier: Mapping[str, str] | None,
        instance_scoped: bool,
    ) -> tuple[Snapshot, trace.Span]:
        requested = self.registry.clock()
        candidate = self._candidate(new_value, version, reload_id or self.registry.new_reload_id(), requested)
        span = self.registry.tracer.start_span(
            f"reload {self.component}",
            context=self.registry.reload_parent_context(context, carrier),
            kind=SpanKind.INTERNAL,
            start_time=requested,
            attributes={  # the rest, known at the end, comes from the event (reload_span_attributes)
                RELOAD_ID: candidate.reload_id or "",
                RELOAD_COMPONENT: self.component,
                RELOAD_SOURCE: source,
                RELOAD_NEW_VERSION: candidate.version,
                RELOAD_SCOPE: SCOPE_INSTANCE if instance_scoped else SCOPE_SERVICE,
            },
        )
        return candidate, span

    def _finish(
        self, candidate: Snapshot, span: trace.Span, source: str, error: BaseException | None, instance_scoped: bool
    ) -> ReloadEvent:
        if error is None:
            with self._lock:
                old = self._snapshot
                effective = self.registry.clock()
                installed = replace(candidate, effective_time_unix_nano=effective)
                self._snapshot = installed
                self.registry._record_success(effective, installed.reload_id or "", self.component)
            status = SUCCEEDED
        else:
            old = self._snapshot
            effective = self.registry.clock()
            status = FAILED
        keys = changed_keys(old.value, candidate.value)
        trace_id, span_id = _span_ids(span)
        event = ReloadEvent(
            reload_id=candidate.reload_id or "",
            service_name=self.registry.service_name,
            service_instance_id=self.registry.service_instance_id if instance_scoped else None,
            component=self.component,
            old_version=old.version,
            new_version=candidate.version,
            requested_time_unix_nano=candidate.effective_time_unix_nano,
            effective_time_unix_nano=effective,
            status=status,
            source=source,
            trace_id=trace_id,
            span_id=span_id,
            model_context=dict(candidate.model_context),
            changed_keys=keys,
        )
        # The span runs from the request to the swap: its own times say them (the convention's defaults).
        span.set_attributes(
            reload_span_attributes(
                event, start_time_unix_nano=candidate.effective_time_unix_nano, end_time_unix_nano=effective
            )
        )
        if error is None:
            span.set_status(Status(StatusCode.OK))
        else:
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.record_exception(error, timestamp=effective)
        span.end(end_time=effective)
        self.registry._emit(event, error)
        return event

    def reload(
        self,
        new_value: Any,
        version: str | None = None,
        *,
        source: str = _DEFAULT_SOURCE,
        reload_id: str | None = None,
        instance_scoped: bool = False,
        context: context_api.Context | None = None,
        carrier: Mapping[str, str] | None = None,
    ) -> ReloadEvent:
        """Validate ``new_value``, swap it in atomically, and record the attempt.

        Validators and health checks see the frozen value (read-only mappings, tuples).

        Args:
            new_value: the new snapshot value (deep-frozen on the way in).
            version: the version id; default the content hash of the value.
            source: who or what asked (operator, deploy pipeline, consul watch...).
            reload_id: default a fresh id from the registry.
            instance_scoped: the event names this instance (a canary) instead of the whole service.
            context: trace context to parent the reload span on; default the active span, if any.
            carrier: W3C headers (``traceparent``) from the caller, e.g. a deploy pipeline.

        Returns:
            The ReloadEvent, SUCCEEDED or FAILED. A FAILED reload (validator or health check
            raised or returned False) leaves the old snapshot serving; it does not raise.

        Raises:
            ValueError: ``instance_scoped`` on a registry without an instance id.
        """
        self._check_scope(instance_scoped)
        candidate, span = self._begin(new_value, version, source, reload_id, context, carrier, instance_scoped)
        error: BaseException | None = None
        try:
            self._check(candidate)
        except Exception as caught:  # noqa: BLE001 - any validator failure is a FAILED reload
            error = caught
        return self._finish(candidate, span, source, error, instance_scoped)

    async def areload(
        self,
        new_value: Any,
        version: str | None = None,
        *,
        source: str = _DEFAULT_SOURCE,
        reload_id: str | None = None,
        instance_scoped: bool = False,
        context: context_api.Context | None = None,
        carrier: Mapping[str, str] | None = None,
    ) -> ReloadEvent:
        """:meth:`reload` for asyncio: validators and health checks may be coroutines.

        The swap itself never awaits, so concurrent tasks see the old or the new snapshot, never a mix.
        """
        self._check_scope(instance_scoped)
        candidate, span = self._begin(new_value, version, source, reload_id, context, carrier, instance_scoped)
        error: BaseException | None = None
        try:
            await self._check_async(candidate)
        except Exception as caught:  # noqa: BLE001 - any validator failure is a FAILED reload
            error = caught
        return self._finish(candidate, span, source, error, instance_scoped)


class ReloadRegistry:
    """The reload handles of one service instance, its reload history and its listeners.

    Args:
        service_name: ``service.name`` of the events.
        service_instance_id: ``service.instance.id``; named only by instance-scoped reloads.
        clock: nanoseconds since the epoch (default ``time.time_ns``); the simulator passes event time.
        tracer: tracer of the reload spans (default: the global tracer provider's).
        listeners: called with every ReloadEvent; their exceptions are logged, never raised.
        reload_id_factory: default random UUIDs.
        reload_log_size: how many successful reloads are remembered for the mid-flight mark.
    """

    def __init__(
        self,
        service_name: str,
        service_instance_id: str = "",
        *,
        clock: Clock = time.time_ns,
        tracer: trace.Tracer | None = None,
        listeners: Iterable[ReloadListener] = (),
        reload_id_factory: Callable[[], str] | None = None,
        reload_log_size: int = _DEFAULT_RELOAD_LOG_SIZE,
    ) -> None:
        self.service_name = service_name
        self.service_instance_id = service_instance_id
        self.clock = clock
        self._tracer = tracer
        self._listeners = list(listeners)
        self._new_reload_id = reload_id_factory or (lambda: uuid.uuid4().hex)
        self._handles: dict[str, ReloadHandle] = {}
        self._log: deque[tuple[int, str, str]] = deque(maxlen=reload_log_size)
        self._log_lock = threading.Lock()
        self._latest_effective = -1
        self.listener_errors = 0

    @property
    def tracer(self) -> trace.Tracer:
        return self._tracer or trace.get_tracer(TRACER_NAME)

    def new_reload_id(self) -> str:
        return self._new_reload_id()

    def add_listener(self, listener: ReloadListener) -> None:
        self._listeners.append(listener)

    def register(
        self,
        component: str,
        initial: Any,
        *,
        version: str | None = None,
        validator: Validator | None = None,
        health_check: HealthCheck | None = None,
        announce: bool = True,
        source: str = _DEFAULT_INITIAL_SOURCE,
        reload_id: str | None = None,
    ) -> ReloadHandle:
        """Add a component with its initial value (not validated: it is what the process started with).

        With ``announce`` the initial version is recorded as a SUCCEEDED reload (old_version null,
        source ``startup``), so the version timeline knows it from the start.
        """
        if component in self._handles:
            raise ValueError(f"component {component!r} is already registered")
        now = self.clock()
        frozen = freeze(initial)
        version = version or content_version(frozen)
        snapshot = Snapshot(
            component=component,
            version=version,
            value=frozen,
            effective_time_unix_nano=now,
            reload_id=(reload_id or self.new_reload_id()) if announce else None,
            model_context=model_context_of(component, frozen, version),
        )
        handle = ReloadHandle(self, component, snapshot, validator=validator, health_check=health_check)
        self._handles[component] = handle
        if announce:
            self._emit(
                ReloadEvent(
                    reload_id=snapshot.reload_id or "",
                    service_name=self.service_name,
                    component=component,
                    new_version=snapshot.version,
                    requested_time_unix_nano=now,
                    effective_time_unix_nano=now,
                    status=SUCCEEDED,
                    source=source,
                    model_context=dict(snapshot.model_context),
                    changed_keys=changed_keys(None, frozen),
                ),
                None,
            )
        return handle

    def handle(self, component: str) -> ReloadHandle:
        try:
            return self._handles[component]
        except KeyError:
            raise UnknownComponentError(f"no component {component!r} in {self.service_name}") from None

    __getitem__ = handle

    def components(self) -> list[str]:
        return list(self._handles)

    def snapshots(self) -> dict[str, Snapshot]:
        """The current snapshot of every component (each read atomically)."""
        return {component: handle.current() for component, handle in self._handles.items()}

    def take_pin(self) -> Pinned:
        return Pinned(self, self.snapshots(), self.clock())

    def reload_parent_context(
        self, context: context_api.Context | None, carrier: Mapping[str, str] | None
    ) -> context_api.Context:
        """Parent of a reload span: the carrier's traceparent, else ``context``, else the active span,
        else a fresh root (its own control-plane trace)."""
        if carrier:
            extracted = TraceContextTextMapPropagator().extract(carrier)
            if trace.get_current_span(extracted).get_span_context().is_valid:
                return extracted
        if context is not None:
            return context
        active = context_api.get_current()
        if trace.get_current_span(active).get_span_context().is_valid:
            return active
        return context_api.Context()

    def _record_success(self, effective: int, reload_id: str, component: str) -> None:
        with self._log_lock:
            self._log.append((effective, reload_id, component))
            self._latest_effective = max(self._latest_effective, effective)

    def reloads_between(self, start_unix_nano: int, end_unix_nano: int) -> list[tuple[int, str, str]]:
        """Successful reloads with start < effective ≤ end: (effective time, reload_id, component)."""
        if self._latest_effective <= start_unix_nano:  # the common case: nothing reloaded since the start
            return []
        with self._log_lock:
            return [entry for entry in self._log if start_unix_nano < entry[0] <= end_unix_nano]

    def _emit(self, event: ReloadEvent, error: BaseException | None) -> None:
        if error is not None:
            _LOG.info("reload %s of %s/%s failed: %s", event.reload_id, self.service_name, event.component, error)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a broken listener must never break a reload
                self.listener_errors += 1
                _LOG.exception("reload listener failed for %s", event.reload_id)
