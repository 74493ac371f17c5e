"""Serving one component in the foreground: logging, SIGTERM/SIGINT as a clean stop, the exit code.

Every long-running command (``reloadtrace sink|alerts|detect|gate``) and every child process of a
worker (``python -m streams.components``) runs its component through :func:`serve`, so all stop
the same way: a signal sets the stop event, the component finishes what it holds (flush, commit)
and returns. Exit codes: ``EXIT_STOPPED`` (0) after a clean stop, ``EXIT_FAILED`` (1) when the
component raised a :class:`~schemas.errors.ReloadtraceError` (reported in one line; any other
error is a bug and propagates with its traceback, also 1), ``EXIT_BAD_SETTINGS`` (2) for settings
refused before serving (the caller checks them).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

from schemas.errors import ReloadtraceError

logger = logging.getLogger(__name__)

EXIT_STOPPED = 0
EXIT_FAILED = 1
EXIT_BAD_SETTINGS = 2

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


LOGLEVEL_ENV = "RELOADTRACE_LOGLEVEL"
"""The log level of a component, by the names of the worker's ``--loglevel``; a worker sets it for its children."""
_LEVELS = {
    "crit": logging.CRITICAL, "critical": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING,
    "warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG,
}  # fmt: skip


def log_level(name: str | None) -> int:
    """The logging level of a ``--loglevel`` name (crit, error, warn, info, debug); INFO when unset or unknown."""
    return _LEVELS.get((name or "").strip().lower(), logging.INFO)


def configure_logging() -> None:
    """``RELOADTRACE_LOGLEVEL`` (default INFO) and above to stderr, one timestamped line each.

    A no-op when logging is configured already.
    """
    logging.basicConfig(level=log_level(os.environ.get(LOGLEVEL_ENV)), format=LOG_FORMAT)


def _log_failure(name: str, error: ReloadtraceError) -> None:
    logger.error("%s failed: %s", name, error)


def serve(
    name: str,
    entry: Callable[[threading.Event], None],
    *,
    on_failure: Callable[[str, ReloadtraceError], None] = _log_failure,
) -> int:
    """Run ``entry(stop)`` until it returns; SIGTERM and SIGINT set ``stop``. Call from the main thread.

    Args:
        name: the component, for the failure report.
        entry: the component's entry (see :mod:`streams.components`), bound to its settings.
        on_failure: reports the error that ended the component (default: one log line).

    Returns:
        ``EXIT_STOPPED`` when ``entry`` returned, ``EXIT_FAILED`` when it raised a ReloadtraceError.
    """
    configure_logging()
    stop = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop.set())
    try:
        entry(stop)
    except ReloadtraceError as error:
        on_failure(name, error)
        return EXIT_FAILED
    return EXIT_STOPPED
