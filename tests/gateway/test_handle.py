"""Reload handles: content-hash versions, atomic swaps under concurrency, failed reloads, pinning, traced reloads."""

from __future__ import annotations

import asyncio
import threading

import pytest
from opentelemetry import trace

from gateway.errors import UnknownComponentError
from gateway.pinning import current_pin, pin
from gateway.versioning import changed_keys, content_version, model_descriptor
from schemas.records import FAILED, SUCCEEDED
from tests.gateway.helpers import MovableClock, instrumented


def test_version_is_the_content_hash_and_independent_of_key_order() -> None:
    _, registry, _, events = instrumented()
    handle = registry.register("config", {"b": 2, "a": 1})
    assert handle.version == content_version({"a": 1, "b": 2})
    assert handle.current().value["a"] == 1
    assert events[0].status == SUCCEEDED and events[0].old_version is None and events[0].source == "startup"
    event = handle.reload({"a": 1, "b": 3}, version="v-explicit")
    assert handle.version == "v-explicit" == event.new_version


def test_snapshots_are_immutable() -> None:
    _, registry, _, _ = instrumented()
    handle = registry.register("routing_rules", {"routes": [{"target": "pool-a"}]})
    with pytest.raises(TypeError):
        handle.current().value["routes"] = []  # type: ignore[index]
    assert isinstance(handle.current().value["routes"], tuple)


def test_changed_keys_are_names_never_values() -> None:
    old = {"timeout_s": 30, "api_key": "sk-old", "nested": {"x": 1, "y": 2}}
    new = {"timeout_s": 30, "api_key": "sk-new", "nested": {"x": 1, "z": 3}}
    assert changed_keys(old, new) == ("api_key", "nested.y", "nested.z")
    _, registry, _, _events = instrumented()
    registry.register("credentials", old)
    event = registry["credentials"].reload(new)
    assert event.changed_keys == ("api_key", "nested.y", "nested.z")
    assert "sk-new" not in repr(event.to_dict()) and "sk-old" not in repr(event.to_dict())


def test_failed_reload_keeps_the_old_version_serving_and_is_recorded() -> None:
    clock = MovableClock()

    def health_check(snapshot) -> None:
        clock.advance(7_000)
        if snapshot.value["temperature"] > 2:
            raise ValueError("temperature out of range")

    _, registry, exporter, _events = instrumented(clock=clock)
    handle = registry.register("model", {"temperature": 0.2}, health_check=health_check)
    before = handle.current()
    requested = clock.advance(1_000)
    event = handle.reload({"temperature": 7.5}, source="operator")
    assert event.status == FAILED
    assert handle.current() is before
    assert event.old_version == before.version and event.new_version == content_version({"temperature": 7.5})
    assert event.requested_time_unix_nano == requested and event.effective_time_unix_nano == requested + 7_000
    assert registry.reloads_between(0, 2**62) == []  # a FAILED reload is never a mid-flight cause
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "reload model"]
    assert span.status.status_code is trace.StatusCode.ERROR and "temperature out of range" in span.status.description
    # validator returning False also fails
    handle2 = registry.register("feature_flags", {"beta": False}, validator=lambda value: not value.get("broken"))
    assert handle2.reload({"broken": True}).status == FAILED and handle2.current().value == {"beta": False}


def test_concurrent_requests_under_thread_reloads_see_one_consistent_snapshot() -> None:
    _, registry, _, _ = instrumented()
    handle = registry.register("config", {"generation": 0, "copy": 0})
    stop = threading.Event()
    torn: list = []
    changed_inside_pin: list = []

    def request_loop() -> None:
        while not stop.is_set():
            with pin(registry):
                first = handle.get()
                if first.value["generation"] != first.value["copy"]:
                    torn.append(first)
                for _ in range(50):
                    if handle.get() is not first:
                        changed_inside_pin.append(first)

    def reload_loop() -> None:
        for generation in range(1, 300):
            handle.reload({"generation": generation, "copy": generation})

    readers = [threading.Thread(target=request_loop) for _ in range(4)]
    writers = [threading.Thread(target=reload_loop) for _ in range(2)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert torn == [] and changed_inside_pin == []
    assert handle.current().value["generation"] == 299


def test_asyncio_tasks_keep_their_pins_across_awaits_and_async_reloads() -> None:
    _, registry, _, events = instrumented()
    handle = registry.register("model", model_descriptor("gpt-4o", "2024-08-06"))

    async def slow_check(value) -> bool:
        await asyncio.sleep(0.001)
        return True

    handle._validator = slow_check  # an async validator, exercised through areload

    async def request(number: int) -> tuple[str, str, str]:
        await asyncio.sleep(0.0005 * number)
        with pin(registry):
            seen = handle.get().version
            await asyncio.sleep(0.003)
            return seen, handle.get().version, handle.current().version

    async def main() -> list:
        requests = [asyncio.create_task(request(n)) for n in range(40)]
        for n in range(10):
            await handle.areload(model_descriptor("gpt-4o", f"2025-0{n}"))
            await asyncio.sleep(0.001)
        return await asyncio.gather(*requests)

    results = asyncio.run(main())
    assert all(start == end for start, end, _ in results)
    assert any(start != current for start, _, current in results)  # reloads really happened mid-request
    assert [e.status for e in events[1:]] == [SUCCEEDED] * 10


def test_pin_is_scoped_to_its_block_and_registry() -> None:
    _, registry, _, _ = instrumented()
    _, other, _, _ = instrumented(service="other")
    handle = registry.register("config", {"v": 1})
    with pin(registry) as pinned:
        assert current_pin(registry) is pinned and current_pin(other) is None
        with pin(registry) as inner:
            assert inner is pinned  # a request pins once
        handle.reload({"v": 2})
        assert handle.get().value == {"v": 1} and handle.current().value == {"v": 2}
    assert current_pin(registry) is None and handle.get().value == {"v": 2}
    with pytest.raises(UnknownComponentError):
        registry.handle("missing")


def test_reload_span_is_its_own_trace_without_context_and_a_child_with_one() -> None:
    provider, registry, exporter, _events = instrumented()
    handle = registry.register("config", {"v": 0})
    own = handle.reload({"v": 1})
    with provider.get_tracer("deploy").start_as_current_span("deploy pipeline") as deploy:
        child = handle.reload({"v": 2})
        deploy_context = deploy.get_span_context()
    remote = handle.reload({"v": 3}, carrier={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    spans = {format(s.context.span_id, "016x"): s for s in exporter.get_finished_spans()}
    own_span = spans[own.span_id]
    assert own_span.parent is None and own_span.name == "reload config"
    assert own_span.attributes["reload.id"] == own.reload_id
    assert child.trace_id == format(deploy_context.trace_id, "032x")
    assert spans[child.span_id].parent.span_id == deploy_context.span_id
    assert remote.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert spans[remote.span_id].parent.span_id == int("b7ad6b7169203331", 16)
    assert len({own.trace_id, child.trace_id, remote.trace_id}) == 3


def test_listener_errors_never_break_a_reload() -> None:
    _, registry, _, _ = instrumented()

    def broken(event) -> None:
        raise RuntimeError("publisher down")

    registry.add_listener(broken)
    handle = registry.register("config", {"v": 0})
    assert handle.reload({"v": 1}).status == SUCCEEDED
    assert registry.listener_errors == 2


def test_canary_reload_names_the_instance_and_needs_one() -> None:
    _, registry, _, _ = instrumented(instance="gw-7")
    handle = registry.register("config", {"v": 0})
    assert handle.reload({"v": 1}, instance_scoped=True).service_instance_id == "gw-7"
    assert handle.reload({"v": 2}).service_instance_id is None
    _, anonymous, _, _ = instrumented(instance="")
    with pytest.raises(ValueError, match="instance"):
        anonymous.register("config", {"v": 0}).reload({"v": 1}, instance_scoped=True)
