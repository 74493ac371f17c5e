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
from streams.detector import DetectorSettings, StreamingDetector
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
                # Bind the error now: the name is unbound once the except block ends.
                loop.call_soon_threadsafe(lambda failure=error: asyncio.ensure_future(self._app.crash(failure)))

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
    _add_thread_service(app, "span-enricher", enricher.run)
    parts = [("enricher", lambda: enricher.stats), ("engine", lambda: enricher.engine.stats)]
    if settings.detection_enabled:
        detector = StreamingDetector(kafka, settings=_derived(DetectorSettings(), settings.group_id, "-detector"))
        _add_thread_service(app, "regression-detector", detector.run)
        parts.append(("detector", lambda: detector.stats))
    if settings.sink_url:
        from sinks.consumer import SinkConsumer
        from sinks.settings import SinkSettings

        sink = SinkConsumer(kafka, _derived(SinkSettings(url=settings.sink_url), settings.group_id, "-sink"))
        _add_thread_service(app, "clickhouse-sink", sink.run)
        parts.append(("sink", lambda: sink.stats))

    @app.timer(interval=30.0)
    async def report_stats() -> None:
        logger.info("; ".join(f"{name} {stats()}" for name, stats in parts))

    return app, enricher


def _add_thread_service(app: faust.App, name: str, target: Callable[[threading.Event], None]) -> None:
    """Start ``target(stop_event)`` in a thread with the app; its failure crashes the worker."""

    @app.service
    class _Service(ThreadService):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(name, target, app, **kwargs)


def _derived(component_settings: Any, worker_group_id: str, suffix: str) -> Any:
    """The component's consumer group follows the worker's (``<group>-sink``) unless set explicitly.

    One ``--group-id`` then isolates a whole deployment: enricher, detector and sink groups alike.
    """
    if "group_id" in component_settings.model_fields_set:
        return component_settings
    return component_settings.model_copy(update={"group_id": worker_group_id + suffix})


def run_worker(kafka: KafkaSettings, settings: WorkerSettings, *, loglevel: str = "info") -> None:
    """Run a worker in the foreground until SIGTERM/SIGINT (exits the process when done)."""
    app, _ = create_app(kafka, settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
