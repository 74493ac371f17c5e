"""Driving a handle from a watched file: traced fetches, reloads only on change, broken files never swap."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from gateway.watch import FileWatch
from schemas.records import FAILED, SUCCEEDED
from tests.gateway.helpers import instrumented


def test_file_changes_reload_and_the_fetch_span_parents_the_reload(tmp_path: Path) -> None:
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"routes": ["pool-a"]}))
    _, registry, exporter, _ = instrumented()
    handle = registry.register(
        "routing_rules", {"routes": []}, validator=lambda value: isinstance(value, Mapping) and "routes" in value
    )
    watch = FileWatch(handle, path)
    event = watch.poll_once()
    assert event is not None and event.status == SUCCEEDED and event.source == f"file:{path}"
    assert watch.poll_once() is None  # unchanged content: no reload
    path.write_text("{broken")
    assert watch.poll_once() is None and watch.errors == 1
    assert handle.current().value == {"routes": ("pool-a",)}
    path.write_text(json.dumps({"no_routes": True}))
    assert watch.poll_once().status == FAILED and handle.current().value == {"routes": ("pool-a",)}
    spans = exporter.get_finished_spans()
    fetches = [s for s in spans if s.name == "fetch routing_rules"]
    reloads = [s for s in spans if s.name == "reload routing_rules"]
    assert len(fetches) == 4 and len(reloads) == 2
    assert reloads[0].parent.span_id == fetches[0].context.span_id and fetches[0].parent is None
    assert format(reloads[0].context.trace_id, "032x") == event.trace_id
    assert sum(1 for s in fetches if s.status.status_code.name == "ERROR") == 1


def test_missing_file_counts_an_error_and_keeps_serving(tmp_path: Path) -> None:
    _, registry, _, _ = instrumented()
    handle = registry.register("config", {"v": 1})
    watch = FileWatch(handle, tmp_path / "absent.json")
    assert watch.poll_once() is None and watch.errors == 1 and handle.current().value == {"v": 1}
