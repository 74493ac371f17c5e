"""Driving a reload handle from a watched file (a mounted ConfigMap, a file synced from Consul or etcd).

Each poll is traced: a ``fetch <component>`` span (its own trace), parent of the ``reload <component>``
span when the content changed, so the control-plane trace shows where a version came from. The fetch
span carries no ``reload.*`` attribute: that namespace belongs to reload spans (``schemas.reload_span``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from gateway.handle import ReloadHandle
from schemas.records import ReloadEvent

_LOG = logging.getLogger(__name__)
_DEFAULT_INTERVAL_S = 5.0


class FileWatch:
    """Reloads ``handle`` whenever the bytes of ``path`` change.

    Guarantees: unchanged content never causes a reload; a file that cannot be read or parsed
    causes no reload (the old version keeps serving), is counted in :attr:`errors` and shows as
    an ERROR fetch span; a parsed value the handle's validator rejects is a FAILED ReloadEvent.
    Not guaranteed: seeing every intermediate version of a file rewritten faster than the interval.

    Args:
        handle: the component to drive.
        path: the watched file.
        parse: bytes → value (default JSON).
        source: the ReloadEvent source (default ``file:<path>``).
    """

    def __init__(
        self,
        handle: ReloadHandle,
        path: Path | str,
        *,
        parse: Callable[[bytes], Any] = json.loads,
        source: str | None = None,
    ) -> None:
        self.handle = handle
        self.path = Path(path)
        self.parse = parse
        self.source = source or f"file:{self.path}"
        self.errors = 0
        self._last_digest: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> ReloadEvent | None:
        """Read the file once; the ReloadEvent when its content changed, else None."""
        tracer = self.handle.registry.tracer
        with tracer.start_as_current_span(
            f"fetch {self.handle.component}",
            context=context_api.Context(),
            attributes={"fetch.component": self.handle.component, "file.path": str(self.path)},
        ) as span:
            try:
                data = self.path.read_bytes()
            except OSError as error:
                return self._failed(span, error)
            digest = hashlib.sha256(data).hexdigest()
            span.set_attribute("file.changed", digest != self._last_digest)
            if digest == self._last_digest:
                return None
            try:
                value = self.parse(data)
            except ValueError as error:
                self._last_digest = digest  # report a broken file once, not at every poll
                return self._failed(span, error)
            self._last_digest = digest
            return self.handle.reload(value, source=self.source)

    def _failed(self, span: trace.Span, error: BaseException) -> None:
        self.errors += 1
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        _LOG.warning("watch of %s: %s", self.path, error)

    def start(self, interval_s: float = _DEFAULT_INTERVAL_S) -> None:
        """Poll in a daemon thread every ``interval_s`` until :meth:`stop`."""

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.poll_once()
                except Exception:  # noqa: BLE001 - the watch thread must survive anything
                    self.errors += 1
                    _LOG.exception("watch of %s failed", self.path)
                self._stop.wait(interval_s)

        self._thread = threading.Thread(target=loop, name=f"watch-{self.handle.component}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
