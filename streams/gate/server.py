"""``reloadtrace gate``: the table readers on their runtime thread and the HTTP routes on an asyncio loop.

The HTTP side answers from the first second (``/healthz`` says 503 until the tables are loaded, and
``/v1`` lookups answer from what is loaded so far); it stops when ``stop`` is set (SIGTERM/SIGINT in
the command) or when the Kafka side stops, which then makes :meth:`GateServer.run` raise.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from schemas.errors import ReloadtraceError
from schemas.settings import KafkaSettings
from streams.gate.app import GateApp
from streams.gate.auth import BearerAuth
from streams.gate.settings import GateSettings
from streams.gate.stage import GateStage, gate_runtime
from streams.gate.store import VerdictStore

logger = logging.getLogger(__name__)

_CHECK_INTERVAL_S = 0.2


class GateError(ReloadtraceError):
    """The gate cannot serve: its Kafka side stopped, or its address cannot be bound."""


class GateServer:
    """One gate: a store, its table readers and its routes.

    Args:
        kafka: broker, topics and framing.
        settings: address, token, phase threshold.
        wall_clock_ns: the time answers are given at (freshness ages).

    Raises:
        ValueError: the token file cannot be read (from the constructor).
    """

    def __init__(
        self, kafka: KafkaSettings, settings: GateSettings, *, wall_clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self.settings = settings
        self.store = VerdictStore()
        self.runtime = gate_runtime(kafka, settings, self.store)
        self.auth = BearerAuth(settings.bearer_token(), logs_per_s=settings.refusal_logs_per_s)
        self.routes = GateApp(self.store, settings, self.auth, self._health, wall_clock_ns=wall_clock_ns)
        self.port: int | None = None
        self.serving = threading.Event()
        self._runtime_thread: threading.Thread | None = None
        self._runtime_error: BaseException | None = None

    @property
    def stage(self) -> GateStage:
        return self.runtime.stage  # type: ignore[return-value]

    def _health(self) -> tuple[bool, dict[str, Any]]:
        alive = self._runtime_thread is not None and self._runtime_thread.is_alive()
        loaded = self.runtime.ready.is_set()
        state = "following" if alive and loaded else ("loading" if alive else "stopped")
        return alive and loaded, {
            "kafka": state,
            "records": self.stage.records,
            "unreadable_records": self.stage.unreadable,
        }

    def _run_runtime(self, stop: threading.Event) -> None:
        try:
            self.runtime.run(stop)
        except BaseException as error:  # noqa: BLE001 - reported by run()
            self._runtime_error = error

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set.

        Raises:
            GateError: the Kafka side stopped on its own (its error is the cause), or the port is taken.
        """
        kafka_stop = threading.Event()
        self._runtime_thread = threading.Thread(
            target=self._run_runtime, args=(kafka_stop,), name="gate-kafka", daemon=True
        )
        self._runtime_thread.start()
        try:
            asyncio.run(self._serve(stop))
        finally:
            kafka_stop.set()
            self._runtime_thread.join(60)
        if self._runtime_error is not None:
            raise GateError(f"the gate's Kafka side stopped: {self._runtime_error}") from self._runtime_error

    async def _serve(self, stop: threading.Event) -> None:
        runner = web.AppRunner(self.routes.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.host, self.settings.port, reuse_address=True)
            try:
                await site.start()
            except OSError as error:
                raise GateError(
                    f"cannot listen on {self.settings.host}:{self.settings.port}: {error.strerror or error}"
                ) from None
            sockets = getattr(site._server, "sockets", None) or ()  # noqa: SLF001 - the bound port when 0 was asked
            self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
            logger.info(
                "gate: serving on http://%s:%d (token %s)",
                self.settings.host,
                self.port,
                "off: anonymous access" if self.auth.anonymous else "required",
            )
            self.serving.set()
            assert self._runtime_thread is not None
            while not stop.is_set() and self._runtime_thread.is_alive():
                await asyncio.sleep(_CHECK_INTERVAL_S)
        finally:
            await runner.cleanup()
