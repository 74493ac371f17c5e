"""A sink consumer process for crash tests: SIGKILLs itself right after its Nth flush, before that commit.

Usage: ``python -m tests.streams.sink_child N`` with the usual ``KAFKA_BOOTSTRAP_SERVERS``,
``RELOADTRACE_TOPIC_PREFIX`` and ``RELOADTRACE_SINK_*`` environment.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from schemas.settings import KafkaSettings
from sinks.settings import SinkSettings
from streams.sink import sink_runtime


def main() -> None:
    kill_after = int(sys.argv[1])
    flushes = 0

    def on_flushed(rows: int) -> None:
        nonlocal flushes
        flushes += 1
        print(f"flushed {rows} rows (flush {flushes})", flush=True)
        if flushes == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # the rows are in ClickHouse, their offsets are not committed

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sink_runtime(KafkaSettings(), SinkSettings(), on_flushed=on_flushed, batch_size=500).run(stop)


if __name__ == "__main__":
    main()
