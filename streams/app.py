"""The Faust application of ``reloadtrace worker``: the process shell and supervisor of a worker's stages.

Faust owns the process: logging, the services' start and stop, graceful shutdown on SIGTERM and
SIGINT. It runs no agents or tables: every stage (enricher, detector, sink) runs on
:class:`streams.stage.StageRuntime`, which drives Kafka itself — the enricher in a thread of this
process; the sink and the detector through their entries in :mod:`streams.components`, each in a
child process by default or in a thread (``WorkerSettings.component_processes``).
A stage that fails, or a child that exits non-zero, crashes the worker (exit 1) so a supervisor
restarts it from the last commit; a child that stopped cleanly (its own SIGTERM or SIGINT, as when
the whole process group is signalled) stops the worker cleanly (exit 0).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import faust
import mode

from schemas.settings import KafkaSettings
from streams import components
from streams.detector import DetectorSettings
from streams.enricher import enricher_runtime
from streams.serve import LOGLEVEL_ENV
from streams.settings import WorkerSettings
from streams.stage import StageRuntime

logger = logging.getLogger(__name__)


def _faust_broker_url(bootstrap_servers: str) -> str:
    return ";".join(f"kafka://{server}" for server in bootstrap_servers.split(","))


_STOPPED_BY_REQUEST = frozenset({0, -signal.SIGTERM, -signal.SIGINT})
"""Exit codes of a child that stopped because it was asked to (its own handler, or the signal's default)."""


def _crash_from_thread(loop: asyncio.AbstractEventLoop, app: faust.App, error: BaseException) -> None:
    """Crash ``app`` with ``error`` from a thread other than the loop's (the worker then exits non-zero)."""
    loop.call_soon_threadsafe(lambda: asyncio.ensure_future(app.crash(error)))


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
            except BaseException as error:
                logger.exception("%s failed", self._thread_name)
                _crash_from_thread(loop, self._app, error)

        self._thread = threading.Thread(target=run, name=self._thread_name, daemon=True)
        self._thread.start()

    async def on_stop(self) -> None:
        self._stop_event.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)


class ChildProcessService(mode.Service):
    """Runs a component (:mod:`streams.components`) in a child process for the lifetime of the app.

    The child inherits the worker's stdout/stderr. When it exits while the app runs, the app
    crashes; on stop it gets SIGTERM (it flushes and commits) and ``stop_timeout_s`` to exit
    before SIGKILL. The child also gets SIGTERM if the worker dies without stopping it.
    """

    def __init__(
        self,
        component: str,
        spec_json: str,
        app: faust.App,
        *,
        stop_timeout_s: float = 60.0,
        argv: list[str] | None = None,
        loglevel: str = "info",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._component = component
        self._loglevel = loglevel
        self._argv = argv
        self._spec = spec_json
        self._app = app
        self._stop_timeout_s = stop_timeout_s
        self._stopping = False
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def label(self) -> str:
        return f"{self._component}-process"

    async def on_start(self) -> None:
        loop = asyncio.get_running_loop()
        # Started from the event loop's thread, which lives as long as the worker: the child's
        # parent-death signal fires when the thread that forked it ends.
        self.process = subprocess.Popen(  # noqa: ASYNC220 - fork only; must run on the loop's thread
            self._argv or components.command(self._component),
            env=os.environ | {components.SPEC_ENV: self._spec, LOGLEVEL_ENV: self._loglevel},
            preexec_fn=components.die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
        )
        logger.info("%s process started (pid %d)", self._component, self.process.pid)

        def watch(process: subprocess.Popen[bytes]) -> None:
            code = process.wait()
            if self._stopping:
                return
            if code in _STOPPED_BY_REQUEST:
                # A clean stop: the child was signalled too (a process-group SIGTERM, Ctrl-C; before it set
                # its handlers, the signal itself ended it), so stop with it.
                logger.info("the %s process stopped cleanly: stopping the worker", self._component)
                os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful path (a no-op when already stopping)
                return
            failure = RuntimeError(f"the {self._component} process exited with code {code} (its log is above)")
            logger.error("%s", failure)
            _crash_from_thread(loop, self._app, failure)

        threading.Thread(target=watch, args=(self.process,), name=f"{self._component}-watch", daemon=True).start()

    async def on_stop(self) -> None:
        self._stopping = True
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, self._stop_timeout_s)
        except subprocess.TimeoutExpired:
            logger.error("%s process did not stop in %.0f s: killing it", self._component, self._stop_timeout_s)
            process.kill()
            await asyncio.to_thread(process.wait)


def create_app(
    kafka: KafkaSettings,
    settings: WorkerSettings,
    *,
    timeline_factory: Callable[[], Any] | None = None,
    loglevel: str = "info",
) -> tuple[faust.App, StageRuntime]:
    """Build the worker's Faust app and its enricher's runtime (not started); child processes log at ``loglevel``."""
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
    enricher = enricher_runtime(kafka, settings, timeline_factory=timeline_factory)
    _add_thread_service(app, "span-enricher", enricher.run)
    stage = enricher.stage
    parts = [("enricher", lambda: stage.stats), ("engine", lambda: stage.engine.stats), ("runtime", lambda: enricher.stats)]  # type: ignore[attr-defined]
    if settings.enriched_otlp_topic:
        from streams.otlp_out import otlp_out_runtime

        otlp_out = otlp_out_runtime(kafka, settings.enriched_otlp_topic, group_id=f"{settings.group_id}-otlp-out")
        _add_thread_service(app, "otlp-out", otlp_out.run)
        parts.append(("otlp-out", lambda: otlp_out.stage.stats))  # type: ignore[attr-defined]
    if settings.detection_enabled:
        from streams.detection import DetectionSettings

        detection, detector_settings = DetectionSettings(), _detector_settings(settings)
        if settings.component_processes:
            _add_child_process(app, "detector", loglevel, kafka, detector_settings, detection)
        else:
            entry = functools.partial(components.run_detector, kafka, detection, detector_settings)
            _add_thread_service(app, "regression-detector", entry)
    if settings.sink_url_value:
        sink_settings = _sink_settings(settings)
        if settings.component_processes:
            _add_child_process(app, "sink", loglevel, kafka, sink_settings)
        else:
            _add_thread_service(app, "clickhouse-sink", functools.partial(components.run_sink, kafka, sink_settings))

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


def _add_child_process(app: faust.App, component: str, loglevel: str, kafka: KafkaSettings, *settings: Any) -> None:
    """Run ``component`` in a child process with the app; its exit crashes the worker."""
    spec_json = components.spec(component, kafka, *settings)

    @app.service
    class _Service(ChildProcessService):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(component, spec_json, app, loglevel=loglevel, **kwargs)


def consumer_groups(kafka: KafkaSettings, settings: WorkerSettings) -> dict[str, list[str]]:
    """Every consumer group a worker runs, with the topics it reads: all lags 0 = the pipeline drained.

    (The enricher's own group (spans, and otlp_spans when OTLP input is on), ``<group>-detector`` when detection is on, ``<group>-sink`` when a
    sink URL is set; explicit ``RELOADTRACE_DETECTOR_GROUP_ID``/``RELOADTRACE_SINK_GROUP_ID`` win.)
    """
    topics = kafka.topics
    groups = {settings.group_id: [topics.spans, topics.otlp_spans] if settings.otlp_enabled else [topics.spans]}
    if settings.detection_enabled:
        groups[_detector_settings(settings).group_id] = [topics.requests_by_service]
    if settings.enriched_otlp_topic:
        groups[f"{settings.group_id}-otlp-out"] = [topics.spans_enriched]
    if settings.sink_url_value:
        from streams.sink import source_tables

        groups[_sink_settings(settings).group_id] = list(source_tables(topics))
    return groups


def _detector_settings(settings: WorkerSettings) -> DetectorSettings:
    """The detector's group follows the worker's."""
    return _derived(DetectorSettings(), settings.group_id, "-detector")


def _sink_settings(settings: WorkerSettings) -> Any:
    from sinks.settings import SinkSettings

    return _derived(SinkSettings(url=settings.sink_url_value), settings.group_id, "-sink")


def _derived(component_settings: Any, worker_group_id: str, suffix: str) -> Any:
    """The component's consumer group follows the worker's (``<group>-sink``) unless set explicitly.

    One ``--group-id`` then isolates a whole deployment: enricher, detector and sink groups alike.
    """
    if "group_id" in component_settings.model_fields_set:
        return component_settings
    return component_settings.model_copy(update={"group_id": worker_group_id + suffix})


def run_worker(kafka: KafkaSettings, settings: WorkerSettings, *, loglevel: str = "info") -> None:
    """Run a worker in the foreground until SIGTERM/SIGINT (exits the process when done)."""
    app, _ = create_app(kafka, settings, loglevel=loglevel)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
