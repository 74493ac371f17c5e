"""The Faust application of ``reloadtrace worker``: the services and agents of one worker process.

Faust owns the process: start-up after table recovery, graceful shutdown on SIGTERM/SIGINT,
logging, and the agents and tables of the low-rate streams. The high-rate span path is a
service running :class:`streams.enricher.SpanEnricher` in its own thread (batched
confluent-kafka clients; see that module for why and for its guarantees). A crash of any
service crashes the worker, so a supervisor restarts it from the last commit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import faust
import mode

from schemas.settings import KafkaSettings
from streams.enricher import SpanEnricher
from streams.settings import WorkerSettings

logger = logging.getLogger(__name__)


def _faust_broker_url(bootstrap_servers: str) -> str:
    return ";".join(f"kafka://{server}" for server in bootstrap_servers.split(","))


class ThreadService(mode.Service):
    """Runs a blocking ``run(stop_event)`` callable in a thread for the lifetime of the app.

    When the callable raises, the app crashes (and the worker exits non-zero).
    """

    def __init__(self, name: str, target: Callable[[threading.Event], None], app: faust.App, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._thread_name = name
        self._target = target
        self._app = app
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def label(self) -> str:
        return self._thread_name

    async def on_start(self) -> None:
        loop = asyncio.get_running_loop()

        def run() -> None:
            try:
                self._target(self._stop_event)
            except BaseException as error:  # noqa: BLE001 - handed to the app, which crashes
                logger.exception("%s failed", self._thread_name)
                loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._app.crash(error)))

        self._thread = threading.Thread(target=run, name=self._thread_name, daemon=True)
        self._thread.start()

    async def on_stop(self) -> None:
        self._stop_event.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)


def create_app(
    kafka: KafkaSettings,
    settings: WorkerSettings,
    *,
    timeline_factory: Callable[[], Any] | None = None,
) -> tuple[faust.App, SpanEnricher]:
    """Build the worker's Faust app and its enricher (not started)."""
    if timeline_factory is None:
        from streams.timeline import VersionTimeline

        timeline_factory = VersionTimeline
    app = faust.App(
        f"{settings.group_id}-app",
        broker=_faust_broker_url(kafka.bootstrap_servers),
        store="memory://",
        web_enabled=False,
        topic_partitions=kafka.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_ms / 3000),
    )
    enricher = SpanEnricher(kafka, settings, timeline_factory=timeline_factory)

    @app.service
    class EnrichmentService(ThreadService):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__("span-enricher", enricher.run, app, **kwargs)

    @app.timer(interval=30.0)
    async def report_stats() -> None:
        logger.info("enricher %s; engine %s", enricher.stats, enricher.engine.stats)

    return app, enricher


def run_worker(kafka: KafkaSettings, settings: WorkerSettings, *, loglevel: str = "info") -> None:
    """Run a worker in the foreground until SIGTERM/SIGINT (exits the process when done)."""
    app, _ = create_app(kafka, settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
