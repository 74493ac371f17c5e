"""The sink benchmark's CPU budget: per-thread CPU read from /proc and grouped by what each thread does."""

from __future__ import annotations

import threading
import time

from tests.benchmarks.bench_sink import (
    CONSUMER,
    INSERTS,
    LIBRDKAFKA,
    MERGES,
    OTHER,
    cpu_by_role,
    thread_cpu,
)


def _burn(seconds: float) -> None:
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass


def test_thread_cpu_sees_the_cpu_a_thread_spent() -> None:
    started = threading.Event()
    release = threading.Event()

    def work() -> None:
        _burn(0.3)
        started.set()
        release.wait(10)  # alive (and idle) while the snapshot is taken

    worker = threading.Thread(target=work)
    worker.start()
    started.wait(10)
    try:
        snapshot = thread_cpu()
        assert worker.native_id in snapshot
        _name, seconds = snapshot[worker.native_id]
        assert seconds >= 0.25  # clock ticks of 10 ms: 0.3 s burnt reads as at least 0.29
    finally:
        release.set()
        worker.join()


def test_roles_by_python_thread_then_by_engine_and_librdkafka_thread_names() -> None:
    before = {1: ("python", 1.0), 2: ("python", 0.0), 3: ("MergeMutate", 2.0), 4: ("rdk:broker1", 0.0)}
    after = {
        1: ("python", 1.5),  # the consumer thread
        2: ("python", 3.0),  # a writer thread
        3: ("MergeMutate", 2.25),
        4: ("rdk:broker1", 0.5),
        5: ("ThreadPool", 1.0),  # started after the first snapshot: all its CPU counts
        6: ("jemalloc_bg_thd", 0.125),
    }
    roles = cpu_by_role(before, after, {1: CONSUMER, 2: INSERTS})
    assert roles == {CONSUMER: 0.5, INSERTS: 4.0, MERGES: 0.25, LIBRDKAFKA: 0.5, OTHER: 0.125}
