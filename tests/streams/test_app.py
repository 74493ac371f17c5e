"""The worker's thread services: a failing service crashes the app with its error; stop joins the thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from streams.app import ThreadService, _detector_settings
from streams.settings import WorkerSettings


class FakeApp:
    """Stands in for the Faust app: records what a service crashed it with."""

    def __init__(self) -> None:
        self.crashed: list[BaseException] = []
        self.event = asyncio.Event()

    async def crash(self, error: BaseException) -> None:
        self.crashed.append(error)
        self.event.set()


def test_a_service_that_raises_crashes_the_app_with_its_error() -> None:
    async def scenario() -> list[BaseException]:
        app = FakeApp()

        def target(stop: threading.Event) -> None:
            raise RuntimeError("sink flush failed for good")

        service = ThreadService("failing", target, app)  # type: ignore[arg-type]
        await service.on_start()
        await asyncio.wait_for(app.event.wait(), timeout=10)
        await service.on_stop()
        return app.crashed

    (error,) = asyncio.run(scenario())
    assert isinstance(error, RuntimeError) and "for good" in str(error)


def test_stop_sets_the_event_and_joins_the_thread() -> None:
    seen = threading.Event()

    async def scenario() -> None:
        app = FakeApp()

        def target(stop: threading.Event) -> None:
            stop.wait(30)
            seen.set()

        service = ThreadService("waiting", target, app)  # type: ignore[arg-type]
        await service.on_start()
        await service.on_stop()
        assert app.crashed == []

    asyncio.run(scenario())
    assert seen.is_set()


@pytest.mark.parametrize("code", [243, 75])
def test_a_full_disk_is_retryable_not_fatal(code: int) -> None:
    from clickhouse_connect.driver.exceptions import DatabaseError

    from sinks.clickhouse import classify
    from sinks.errors import SinkRetryableError

    error = DatabaseError(f"Code: {code}. DB::Exception: Cannot reserve 34.01 MiB, not enough space", code=code)
    assert isinstance(classify(error), SinkRetryableError)


def test_the_workers_detector_group_follows_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELOADTRACE_DETECTOR_GROUP_ID", raising=False)
    assert _detector_settings(WorkerSettings(group_id="team-a", sink_url=None)).group_id == "team-a-detector"
    monkeypatch.setenv("RELOADTRACE_DETECTOR_GROUP_ID", "elsewhere")  # set explicitly: kept
    assert _detector_settings(WorkerSettings(group_id="team-a", sink_url=None)).group_id == "elsewhere"
