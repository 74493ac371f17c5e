"""BENCHMARKS.md: a partial ``make bench BENCH=x`` replaces only the sections it re-measured."""

from __future__ import annotations

from tests.benchmarks.__main__ import merge_sections, split_sections

OLD = """# Benchmarks

Measured on a machine.

## Detection

old detection figures

## Sink

old sink figures
| a | table |

## Performance work log

old copy of the log
"""


def test_split_sections_keeps_each_heading_with_its_body_and_drops_the_header() -> None:
    sections = split_sections(OLD)
    assert [section.split("\n", 1)[0] for section in sections] == ["## Detection", "## Sink", "## Performance work log"]
    assert sections[1] == "## Sink\n\nold sink figures\n| a | table |\n"


def test_merge_replaces_by_heading_keeps_the_rest_appends_new_and_drops_the_log() -> None:
    merged = merge_sections(
        split_sections(OLD),
        ["## Sink\n\nnew sink figures\n", "## Replay\n\nnew replay figures\n"],
        "## Performance work log",
    )
    assert merged == [
        "## Detection\n\nold detection figures\n",
        "## Sink\n\nnew sink figures\n",
        "## Replay\n\nnew replay figures\n",
    ]
