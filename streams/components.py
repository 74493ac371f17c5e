"""One entry per component — sink, detector, alerts — and the child process that runs one for a worker.

An entry (``run_sink``, ``run_detector``, ``run_alerts``) takes its settings and a stop event and
runs the component until the event is set; ``reloadtrace sink|detect|alerts`` (through
:func:`streams.serve.serve`), a worker's thread (``WorkerSettings.component_processes`` false) and a
worker's child process all call it, so a component is built and run one way only.

A worker runs the sink and the detector each in a child process by default (own GIL; the sink's
embedded ClickHouse holds most of a worker's memory). The parent hands over the exact settings it
resolved as JSON in ``RELOADTRACE_COMPONENT_SPEC`` (secrets included, in its child's environment
only). The child stops gracefully on SIGTERM/SIGINT and when its parent dies (``PR_SET_PDEATHSIG``,
and it watches its parent id). A sink waits up to ``_ENGINE_LOCK_WAIT_S`` for an engine data
directory that a stopping process still holds. Run as ``python -m streams.components sink|detector``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr

if TYPE_CHECKING:
    from schemas.settings import KafkaSettings
    from sinks.settings import SinkSettings
    from streams.alerts import AlertSettings
    from streams.detection import DetectionSettings
    from streams.detector import DetectorSettings

logger = logging.getLogger(__name__)

SPEC_ENV = "RELOADTRACE_COMPONENT_SPEC"
_ENGINE_LOCK_WAIT_S = 60.0
_PARENT_POLL_S = 1.0
_PR_SET_PDEATHSIG = 1
_STATS_INTERVAL_S = 30.0


def _plain(model: BaseModel) -> dict[str, Any]:
    """The model's fields as JSON-able values, secrets revealed (only ever handed to a child process)."""
    values = model.model_dump()
    return {key: value.get_secret_value() if isinstance(value, SecretStr) else value for key, value in values.items()}


def spec(component: str, kafka: BaseModel, settings: BaseModel, detection: BaseModel | None = None) -> str:
    """The JSON the child of ``component`` is started with (see :func:`main`)."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; expected one of {COMPONENTS}")
    document = {"component": component, "kafka": _plain(kafka), "settings": _plain(settings)}
    if detection is not None:
        document["detection"] = _plain(detection)
    return json.dumps(document)


def command(component: str) -> list[str]:
    """The argv of the child process of ``component``."""
    return [sys.executable, "-m", "streams.components", component]


def die_with_parent() -> None:
    """``preexec_fn`` of a child: SIGTERM when the parent dies (Linux; elsewhere the child polls)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent watch in the child covers it
        pass


def _watch_parent(stop: threading.Event, parent_pid: int) -> None:
    while not stop.wait(_PARENT_POLL_S):
        if os.getppid() != parent_pid:
            logger.warning("parent process %d is gone: stopping", parent_pid)
            stop.set()


def _log_stats(stop: threading.Event, component: str, stats: Callable[[], Any]) -> None:
    """Log the component's counters every ``_STATS_INTERVAL_S`` (the worker logs its own likewise)."""
    while not stop.wait(_STATS_INTERVAL_S):
        logger.info("%s %s", component, stats())


def _open_sink_waiting(open_sink: Callable[[], Any], stop: threading.Event, wait_s: float = _ENGINE_LOCK_WAIT_S) -> Any:
    """``open_sink()``, retried while another process still holds the embedded engine's directory."""
    from sinks.errors import SinkEngineBusyError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return open_sink()
        except SinkEngineBusyError as error:
            if time.monotonic() >= deadline or stop.is_set():
                raise
            logger.info("waiting for the engine's data directory (held by a stopping process): %s", error)
            time.sleep(0.5)


def run_sink(kafka: KafkaSettings, settings: SinkSettings, stop: threading.Event) -> None:
    """Land the sink's topics in ClickHouse until ``stop`` is set, logging its counters; closes the sink.

    Waits (up to ``_ENGINE_LOCK_WAIT_S``) for an embedded engine's directory a stopping process still holds.

    Raises:
        ReloadtraceError: the sink cannot open, a flush failed for good, or Kafka failed fatally.
    """
    from streams.sink import sink_runtime

    runtime = sink_runtime(kafka, settings)
    stage = runtime.stage
    _open_sink_waiting(lambda: stage.sink, stop)  # type: ignore[attr-defined]
    threading.Thread(target=_log_stats, args=(stop, "sink", lambda: stage.stats), daemon=True).start()
    try:
        runtime.run(stop)
    finally:
        stage.close_sink()  # type: ignore[attr-defined]


def run_detector(
    kafka: KafkaSettings, detection: DetectionSettings, settings: DetectorSettings, stop: threading.Event
) -> None:
    """Judge reloads from requests-by-service into reload.anomalies until ``stop`` is set, logging its counters.

    Raises:
        ReloadtraceError: Kafka failed fatally.
    """
    from streams.detector import detector_runtime

    runtime = detector_runtime(kafka, detection, settings)
    threading.Thread(target=_log_stats, args=(stop, "detector", lambda: runtime.stage.stats), daemon=True).start()  # type: ignore[attr-defined]
    runtime.run(stop)


def run_alerts(kafka: KafkaSettings, settings: AlertSettings, stop: threading.Event) -> None:
    """Post every anomaly to the webhooks (and roll back, when set) until ``stop`` is set.

    Raises:
        ReloadtraceError: a webhook refused an anomaly ``max_attempts`` times, or Kafka failed fatally.
    """
    from streams.alerts import alerts_runtime

    alerts_runtime(kafka, settings).run(stop)


def _run_sink_spec(document: dict[str, Any], stop: threading.Event) -> None:
    from schemas.settings import KafkaSettings
    from sinks.settings import SinkSettings

    run_sink(KafkaSettings(**document["kafka"]), SinkSettings(**document["settings"]), stop)


def _run_detector_spec(document: dict[str, Any], stop: threading.Event) -> None:
    from schemas.settings import KafkaSettings
    from streams.detection import DetectionSettings
    from streams.detector import DetectorSettings

    detection = DetectionSettings(**document["detection"]) if "detection" in document else DetectionSettings()
    run_detector(KafkaSettings(**document["kafka"]), detection, DetectorSettings(**document["settings"]), stop)


_RUNNERS = {"sink": _run_sink_spec, "detector": _run_detector_spec}
COMPONENTS = tuple(_RUNNERS)


def main(argv: list[str] | None = None) -> int:
    """Run the component named in ``argv`` with the settings of ``RELOADTRACE_COMPONENT_SPEC``.

    Returns:
        The :func:`streams.serve.serve` exit code: 0 after a graceful stop, 1 when the component failed
        (its error is logged); 2 on bad use.
    """
    from streams.serve import EXIT_BAD_SETTINGS, configure_logging, serve

    args = sys.argv[1:] if argv is None else argv
    configure_logging()
    if len(args) != 1 or args[0] not in _RUNNERS or SPEC_ENV not in os.environ:
        print(f"usage: {SPEC_ENV}=JSON python -m streams.components {{{'|'.join(COMPONENTS)}}}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    component = args[0]
    document = json.loads(os.environ[SPEC_ENV])
    if document.get("component") != component:
        print(f"{SPEC_ENV} is for {document.get('component')!r}, not {component!r}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    parent_pid = os.getppid()

    def entry(stop: threading.Event) -> None:
        threading.Thread(target=_watch_parent, args=(stop, parent_pid), name="parent-watch", daemon=True).start()
        _RUNNERS[component](document, stop)

    return serve(component, entry)


if __name__ == "__main__":
    sys.exit(main())
