"""Run every benchmark module and write BENCHMARKS.md: ``python -m tests.benchmarks [NAME ...]``.

Each ``tests/benchmarks/bench_<name>.py`` exposes ``main() -> str`` returning a Markdown section
(figures, the limit each is measured against, the command that reproduces it). Naming benchmarks
re-measures only those: their sections are replaced (matched by heading) and the other sections of
BENCHMARKS.md are kept as they were, each with the date it was measured. Benchmarks are
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


LOG = HERE / "performance_log.md"  # hand-kept history of performance work, never regenerated


def split_sections(text: str) -> list[str]:
    """The ``## `` sections of a BENCHMARKS.md (each from its heading to the next), without the header."""
    sections: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            sections.append(line)
        elif sections:
            sections[-1] += line
    return [section.rstrip() + "\n" for section in sections]


def heading(section: str) -> str:
    return section.split("\n", 1)[0]


def merge_sections(old: list[str], new: list[str], log_heading: str | None) -> list[str]:
    """``old`` with each section of ``new`` in place of the one with its heading (new headings go last).

    The performance log's section (``log_heading``) is dropped: it is appended afresh from its file.
    """
    fresh = {heading(section): section for section in new}
    merged = [fresh.pop(heading(section), section) for section in old if heading(section) != log_heading]
    return merged + [section for section in new if heading(section) in fresh]


def main(argv: list[str]) -> int:
    names = argv or sorted(path.stem.removeprefix("bench_") for path in HERE.glob("bench_*.py"))
    sections = []
    for name in names:
        module = importlib.import_module(f"tests.benchmarks.bench_{name}")
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        section = module.main()
        print(section, flush=True)
        sections.append(
            f"{section.rstrip()}\n\n_({name}: {time.perf_counter() - started:.0f} s of benchmarking,"
            f" {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)_\n"
        )
    log = LOG.read_text() if LOG.exists() else ""
    if argv and OUTPUT.exists():  # a partial run keeps the sections it did not re-measure
        log_heading = log.split("\n", 1)[0] if log.startswith("## ") else None
        sections = merge_sections(split_sections(OUTPUT.read_text()), sections, log_heading)
    header = (
        "# Benchmarks\n\n"
        f"Measured on {machine_description()}; each section gives the date it was measured"
        f" (last run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {', '.join(names)}).\n"
        "Reproduce everything with `make bench` (or re-measure one section: `make bench BENCH=replay`).\n"
        "Each figure stands beside the limit it is measured against, from the same run.\n"
    )
    if log:
        sections.append(log)
    OUTPUT.write_text(header + "\n" + "\n".join(sections))
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
