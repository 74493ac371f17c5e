"""Run every benchmark module and write BENCHMARKS.md: ``python -m tests.benchmarks [NAME ...]``.

Each ``tests/benchmarks/bench_<name>.py`` exposes ``main() -> str`` returning a Markdown section
(figures, the limit each is measured against, the command that reproduces it). Benchmarks are
never run by pytest: performance targets live here, not in timed tests. A Kafka broker, when a
benchmark needs one, comes from ``KAFKA_BOOTSTRAP_SERVERS`` (``make bench`` starts one).
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE.parent.parent / "BENCHMARKS.md"


def machine_description() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        memory = "unknown memory"
    return f"{os.cpu_count()} cores ({cpu}), {memory}, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def main(argv: list[str]) -> int:
    names = argv or sorted(path.stem.removeprefix("bench_") for path in HERE.glob("bench_*.py"))
    sections = []
    for name in names:
        module = importlib.import_module(f"tests.benchmarks.bench_{name}")
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        section = module.main()
        print(section, flush=True)
        sections.append(f"{section.rstrip()}\n\n_({name}: {time.perf_counter() - started:.0f} s of benchmarking)_\n")
    header = (
        "# Benchmarks\n\n"
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine_description()}.\n"
        "Reproduce everything with `make bench` (or one section: `make bench BENCH=replay`).\n"
        "Each figure stands beside the limit it is measured against, from the same run.\n"
    )
    log = HERE / "performance_log.md"  # hand-kept history of performance work, never regenerated
    if log.exists():
        sections.append(log.read_text())
    OUTPUT.write_text(header + "\n" + "\n".join(sections))
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
