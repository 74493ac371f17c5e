"""Request pinning: the snapshots a request started with, held in a contextvar for its whole life.

A reload in the middle of a request swaps the registry's pointers but never what a pinned request
sees. Pins follow ``contextvars`` semantics: threads started inside do not inherit them, asyncio
tasks created inside do (they copy the context).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.handle import ReloadRegistry
    from gateway.versioning import Snapshot


@dataclass(frozen=True, slots=True)
class Pinned:
    """The snapshots of one registry as a request saw them when it started."""

    registry: ReloadRegistry
    snapshots: Mapping[str, Snapshot]
    pinned_time_unix_nano: int

    def versions(self) -> dict[str, str]:
        return {component: snapshot.version for component, snapshot in self.snapshots.items()}


_PINNED: ContextVar[tuple[Pinned, ...]] = ContextVar("reloadtrace_pinned", default=())


def current_pin(registry: ReloadRegistry) -> Pinned | None:
    """The innermost active pin of ``registry`` in this context, or None."""
    for pinned in reversed(_PINNED.get()):
        if pinned.registry is registry:
            return pinned
    return None


@contextmanager
def activate(pinned: Pinned) -> Iterator[Pinned]:
    """Make an existing pin active again (e.g. for a span started later on behalf of the same request)."""
    token = _PINNED.set(_PINNED.get() + (pinned,))
    try:
        yield pinned
    finally:
        _PINNED.reset(token)


@contextmanager
def pin(registry: ReloadRegistry) -> Iterator[Pinned]:
    """Pin every current snapshot of ``registry`` for the duration of the block.

    Guarantee: inside the block, ``handle.get()`` and the span processor see exactly these
    snapshots, whatever reloads happen meanwhile. Nested pins of the same registry keep the
    outer one (a request pins once).
    """
    outer = current_pin(registry)
    if outer is not None:
        yield outer
        return
    with activate(registry.take_pin()) as pinned:
        yield pinned
