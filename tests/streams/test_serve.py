"""Serving a component: a clean stop is 0, a ReloadtraceError is 1 (reported once), SIGTERM/SIGINT set the stop event."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from schemas.errors import ReloadtraceError
from streams.serve import EXIT_FAILED, EXIT_STOPPED, serve


@pytest.fixture
def restored_handlers() -> Iterator[None]:
    """serve() installs its handlers for good (the process ends after it): put pytest's back."""
    saved = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def test_a_component_that_returns_stopped_cleanly(restored_handlers: None) -> None:
    assert serve("quiet", lambda stop: None) == EXIT_STOPPED


def test_a_component_that_fails_is_reported_once_and_exits_1(restored_handlers: None) -> None:
    reports: list[tuple[str, str]] = []

    def failing(stop: threading.Event) -> None:
        raise ReloadtraceError("flush failed for good")

    code = serve("sink", failing, on_failure=lambda name, error: reports.append((name, str(error))))
    assert code == EXIT_FAILED and reports == [("sink", "flush failed for good")]


def test_a_bug_is_not_swallowed(restored_handlers: None) -> None:
    def buggy(stop: threading.Event) -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        serve("buggy", buggy)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_sets_the_stop_event(signum: int, restored_handlers: None) -> None:
    seen = []

    def entry(stop: threading.Event) -> None:
        os.kill(os.getpid(), signum)
        seen.append(stop.wait(10))

    assert serve("waiting", entry) == EXIT_STOPPED and seen == [True]
