"""A worker's components in child processes: the ClickHouse sink and the regression detector.

``reloadtrace worker`` runs the span enricher in its own process and, by default, the sink and
the detector each in a child process of their own (``WorkerSettings.component_processes``): a
Python process runs one thread at a time (the GIL), and the sink's embedded ClickHouse holds most
of a worker's memory, so apart they neither slow the enricher down nor hide in its RSS.

The parent passes the exact settings it resolved (flags, environment, defaults) to the child as
JSON in ``RELOADTRACE_COMPONENT_SPEC`` — secrets included, in the environment of its own child
only, as they were in its own — so a child never re-reads a different configuration.

Lifetime: the child stops gracefully (flush, commit) on SIGTERM/SIGINT, and when its parent dies:
Linux delivers SIGTERM then (``PR_SET_PDEATHSIG``), and the child also watches its parent id. A
child that a killed worker left behind may still hold the embedded engine's data directory for
the seconds its last flush takes, so a new sink child waits for the directory (up to
``_ENGINE_LOCK_WAIT_S``) instead of failing at once.

Run as ``python -m streams.components sink|detector`` (the worker does this; not a user command).
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
from typing import Any

from pydantic import BaseModel, SecretStr

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


def _run_sink(document: dict[str, Any], stop: threading.Event) -> None:
    from schemas.settings import KafkaSettings
    from sinks.settings import SinkSettings
    from streams.sink import sink_runtime

    kafka = KafkaSettings(**document["kafka"])
    runtime = sink_runtime(kafka, SinkSettings(**document["settings"]))
    stage = runtime.stage
    _open_sink_waiting(lambda: stage.sink, stop)  # type: ignore[attr-defined]
    threading.Thread(target=_log_stats, args=(stop, "sink", lambda: stage.stats), daemon=True).start()
    try:
        runtime.run(stop)
    finally:
        stage.close_sink()  # type: ignore[attr-defined]


def _run_detector(document: dict[str, Any], stop: threading.Event) -> None:
    from schemas.settings import KafkaSettings
    from streams.detection import DetectionSettings
    from streams.detector import DetectorSettings, detector_runtime

    kafka = KafkaSettings(**document["kafka"])
    detection = DetectionSettings(**document["detection"]) if "detection" in document else DetectionSettings()
    runtime = detector_runtime(kafka, detection, DetectorSettings(**document["settings"]))
    threading.Thread(target=_log_stats, args=(stop, "detector", lambda: runtime.stage.stats), daemon=True).start()  # type: ignore[attr-defined]
    runtime.run(stop)


_RUNNERS = {"sink": _run_sink, "detector": _run_detector}
COMPONENTS = tuple(_RUNNERS)


def main(argv: list[str] | None = None) -> int:
    """Run the component named in ``argv`` with the settings of ``RELOADTRACE_COMPONENT_SPEC``.

    Returns:
        0 after a graceful stop, 1 when the component failed (its error is logged), 2 on bad use.
    """
    from schemas.errors import ReloadtraceError

    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if len(args) != 1 or args[0] not in _RUNNERS or SPEC_ENV not in os.environ:
        print(f"usage: {SPEC_ENV}=JSON python -m streams.components {{{'|'.join(COMPONENTS)}}}", file=sys.stderr)
        return 2
    document = json.loads(os.environ[SPEC_ENV])
    if document.get("component") != args[0]:
        print(f"{SPEC_ENV} is for {document.get('component')!r}, not {args[0]!r}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop.set())
    threading.Thread(target=_watch_parent, args=(stop, os.getppid()), name="parent-watch", daemon=True).start()
    try:
        _RUNNERS[args[0]](document, stop)
    except ReloadtraceError as error:
        logger.error("%s failed: %s", args[0], error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
