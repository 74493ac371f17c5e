"""Run a stage's blocking ``run(stop)`` in a thread for a test, keeping what it raised."""

from __future__ import annotations

import threading
from collections.abc import Callable


def start_stoppable(
    run: Callable[[threading.Event], object], *, name: str | None = None
) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    """Start ``run(stop)`` in a daemon thread; returns (thread, stop, errors) — set ``stop``, join, check ``errors``."""
    stop, errors = threading.Event(), []

    def target() -> None:
        try:
            run(stop)
        except BaseException as error:  # noqa: BLE001 - surfaced by the test
            errors.append(error)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread, stop, errors
