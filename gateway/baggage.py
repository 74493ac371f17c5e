"""Active versions as W3C baggage: set them on the way out, copy them onto spans on the way in.

Members are ``reloadtrace.v.<service>.<component>=<version>``. The W3C limits are held on the
sending side: at most 64 members and 8192 bytes for the whole ``baggage`` header (members already
in the context count too); members that do not fit are skipped and counted, never truncated.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote_plus

from opentelemetry import baggage as baggage_api
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from gateway.handle import ReloadRegistry
    from gateway.pinning import Pinned
    from gateway.redaction import Redactor

BAGGAGE_PREFIX = "reloadtrace.v."
UPSTREAM_PREFIX = "upstream."
MAX_MEMBERS = 64
MAX_HEADER_BYTES = 8192
PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


@dataclass(frozen=True, slots=True)
class BaggageResult:
    """The context carrying the versions, and how many members did not fit the limits."""

    context: context_api.Context
    skipped: int


def _member_bytes(key: str, value: str) -> int:
    return len(quote_plus(key)) + 1 + len(quote_plus(value))


def with_versions(
    source: ReloadRegistry | Pinned,
    context: context_api.Context | None = None,
    *,
    redactor: Redactor | None = None,
) -> BaggageResult:
    """``context`` (default: current) plus one baggage member per component version of ``source``.

    A pinned request propagates its pinned versions; a registry its current ones.
    """
    from gateway.pinning import Pinned

    if isinstance(source, Pinned):
        service, versions = source.registry.service_name, source.versions()
    else:
        service, versions = source.service_name, {c: s.version for c, s in source.snapshots().items()}
    context = context if context is not None else context_api.get_current()
    existing = dict(baggage_api.get_all(context))
    members = len(existing)
    size = sum(_member_bytes(k, str(v)) for k, v in existing.items()) + max(0, members - 1)
    skipped = 0
    for component, version in sorted(versions.items()):
        key = f"{BAGGAGE_PREFIX}{service}.{component}"
        if redactor is not None and redactor.is_denied(key):
            skipped += 1
            continue
        added = _member_bytes(key, version) + (1 if members else 0)
        replacing = key in existing
        if not replacing and (members + 1 > MAX_MEMBERS or size + added > MAX_HEADER_BYTES):
            skipped += 1
            continue
        context = baggage_api.set_baggage(key, version, context)
        if not replacing:
            members += 1
            size += added
    return BaggageResult(context, skipped)


def redact_baggage(context: context_api.Context, redactor: Redactor) -> context_api.Context:
    """``context`` without the baggage members whose keys the redactor denies (hash mode: hashed)."""
    kept = redactor.apply(dict(baggage_api.get_all(context)))
    context = baggage_api.clear(context)
    for key, value in kept.items():
        context = baggage_api.set_baggage(key, value, context)
    return context


def outgoing_headers(
    source: ReloadRegistry | Pinned,
    carrier: MutableMapping[str, str] | None = None,
    *,
    context: context_api.Context | None = None,
    redactor: Redactor | None = None,
) -> MutableMapping[str, str]:
    """``traceparent`` and ``baggage`` headers for a downstream call, versions included, secrets out."""
    carrier = {} if carrier is None else carrier
    result = with_versions(source, context, redactor=redactor)
    outgoing = redact_baggage(result.context, redactor) if redactor is not None else result.context
    PROPAGATOR.inject(carrier, context=outgoing)
    return carrier


def extract(headers: Mapping[str, str]) -> context_api.Context:
    """The trace context and baggage of incoming W3C headers (case-insensitive names)."""
    return PROPAGATOR.extract({key.lower(): value for key, value in headers.items()})


def upstream_versions(context: context_api.Context | None = None) -> dict[str, str]:
    """``{"<service>.<component>": version}`` from the reloadtrace members of the baggage."""
    members = baggage_api.get_all(context if context is not None else context_api.get_current())
    return {key[len(BAGGAGE_PREFIX) :]: str(value) for key, value in members.items() if key.startswith(BAGGAGE_PREFIX)}


def upstream_attributes(context: context_api.Context | None = None) -> dict[str, str]:
    """Span attributes ``upstream.<service>.<component>.version`` for the received versions."""
    return {f"{UPSTREAM_PREFIX}{name}.version": version for name, version in upstream_versions(context).items()}


def copy_upstream_versions(span: trace.Span | None = None, context: context_api.Context | None = None) -> int:
    """Receiving side without the processor: put the upstream versions on ``span`` (default: current).

    Returns the number of attributes set.
    """
    attributes = upstream_attributes(context)
    (span or trace.get_current_span(context)).set_attributes(attributes)
    return len(attributes)
