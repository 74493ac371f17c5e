"""The span processor: pinned versions at start, the mid-flight mark at end; W3C baggage within limits."""

from __future__ import annotations

from opentelemetry import baggage as baggage_api
from opentelemetry import context as context_api
from opentelemetry.baggage.propagation import W3CBaggagePropagator

from gateway.attributes import MID_FLIGHT, MID_FLIGHT_RELOAD_IDS, flag_evaluation
from gateway.baggage import (
    BAGGAGE_PREFIX,
    MAX_HEADER_BYTES,
    MAX_MEMBERS,
    copy_upstream_versions,
    extract,
    outgoing_headers,
    upstream_versions,
    with_versions,
)
from gateway.pinning import pin
from gateway.redaction import Redactor
from gateway.versioning import flag_set_descriptor, model_descriptor
from tests.gateway.helpers import MovableClock, instrumented


def _spans(exporter) -> dict:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_span_carries_pinned_versions_and_mid_flight_mark() -> None:
    provider, registry, exporter, _ = instrumented()
    model = registry.register("model", model_descriptor("gpt-4o", "2024-08-06", provider="openai"))
    flags = registry.register("feature_flags", {"semantic_cache": False})
    old_model_version = model.version
    tracer = provider.get_tracer("app")
    with pin(registry), tracer.start_as_current_span("request"):
        with tracer.start_as_current_span("before"):
            pass
        event = model.reload(model_descriptor("gpt-4o", "2024-11-20", provider="openai"))
        with tracer.start_as_current_span("after reload, same request"):
            pass
    with tracer.start_as_current_span("next request"):
        pass
    spans = _spans(exporter)
    request = spans["request"]
    assert request.attributes["reload.version.model"] == old_model_version
    assert request.attributes["gen_ai.request.model"] == "gpt-4o"
    assert request.attributes["reload.model.version"] == "2024-08-06"
    # a plain flag dict names no set and declares no version: the snapshot's version is the ruleset's
    assert (
        request.attributes["reload.version.feature_flags"]
        == flags.version
        == request.attributes["feature_flag.version"]
    )
    assert "feature_flag.set.id" not in request.attributes
    assert not any(key.startswith("service.") for key in request.attributes)
    assert request.attributes[MID_FLIGHT] is True and request.attributes[MID_FLIGHT_RELOAD_IDS] == (event.reload_id,)
    assert spans["before"].attributes[MID_FLIGHT] is False
    # pinned: a span started after the reload but inside the request still uses the old model
    assert spans["after reload, same request"].attributes["reload.version.model"] == old_model_version
    assert spans["next request"].attributes["reload.version.model"] == event.new_version
    assert spans["next request"].attributes["reload.model.version"] == "2024-11-20"


def test_a_named_flag_set_reload_carries_its_set_id_and_version_to_the_event_and_the_spans() -> None:
    provider, registry, exporter, events = instrumented()
    flags = registry.register("feature_flags", flag_set_descriptor({"beta": False}, set_id="llm-gateway/prod"))
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("before"):
        pass
    event = flags.reload(flag_set_descriptor({"beta": True}, set_id="llm-gateway/prod", version="42"))
    with tracer.start_as_current_span("after"):
        pass
    initial, reload = events
    assert initial.model_context == {
        "feature_flag.set.id": "llm-gateway/prod",
        "feature_flag.version": initial.new_version,
    }
    assert reload is event and event.model_context == {
        "feature_flag.set.id": "llm-gateway/prod",
        "feature_flag.version": "42",
    }
    spans = _spans(exporter)
    assert spans["before"].attributes["feature_flag.version"] == initial.new_version
    assert spans["after"].attributes["feature_flag.version"] == "42"  # the set's own version wins
    assert spans["after"].attributes["reload.version.feature_flags"] == event.new_version != "42"
    assert {spans[name].attributes["feature_flag.set.id"] for name in ("before", "after")} == {"llm-gateway/prod"}
    name, attributes = flag_evaluation(flags.current(), "beta", True)
    assert name == "feature_flag.evaluation"
    assert attributes == {
        "feature_flag.key": "beta",
        "feature_flag.result.variant": "on",
        "feature_flag.provider.name": "reloadtrace",
        "feature_flag.set.id": "llm-gateway/prod",
        "feature_flag.version": "42",
    }
    assert flag_evaluation(flags.current(), "tier", "gold")[1]["feature_flag.result.variant"] == "gold"


def test_mid_flight_follows_effective_times_of_the_injected_clock() -> None:
    clock = MovableClock(10_000)
    provider, registry, exporter, _ = instrumented(clock=clock)
    handle = registry.register("config", {"v": 0})
    tracer = provider.get_tracer("app")
    span = tracer.start_span("long", start_time=10_000)
    clock.now = 20_000
    event = handle.reload({"v": 1})
    span.end(end_time=20_000)  # effective == end: counts (start < effective <= end)
    starts_at_reload = tracer.start_span("starts at reload", start_time=20_000)
    starts_at_reload.end(end_time=30_000)
    spans = _spans(exporter)
    assert spans["long"].attributes[MID_FLIGHT_RELOAD_IDS] == (event.reload_id,)
    assert spans["starts at reload"].attributes[MID_FLIGHT] is False


def test_an_explicit_gen_ai_request_model_is_not_overwritten() -> None:
    provider, registry, exporter, _ = instrumented()
    registry.register("model", model_descriptor("gpt-4o", "1"))
    with provider.get_tracer("app").start_as_current_span("chat", attributes={"gen_ai.request.model": "gpt-4o-mini"}):
        pass
    assert _spans(exporter)["chat"].attributes["gen_ai.request.model"] == "gpt-4o-mini"


def test_versions_travel_as_baggage_and_land_on_the_receiving_spans() -> None:
    _, upstream, _, _ = instrumented(service="chat-api")
    upstream.register("model", model_descriptor("gpt-4o", "1"))
    upstream.register("config", {"timeout_s": 30})
    with pin(upstream) as pinned:
        headers = outgoing_headers(pinned, context=context_api.Context())
    upstream.handle("config").reload({"timeout_s": 10})
    assert "traceparent" not in headers  # no active span: baggage only
    received = extract(headers)
    assert upstream_versions(received) == {
        "chat-api.model": pinned.snapshots["model"].version,
        "chat-api.config": pinned.snapshots["config"].version,
    }
    provider, _downstream, exporter, _ = instrumented(service="llm-gateway")
    token = context_api.attach(received)
    try:
        with provider.get_tracer("app").start_as_current_span("downstream request") as span:
            assert copy_upstream_versions(span) == 2
    finally:
        context_api.detach(token)
    attributes = _spans(exporter)["downstream request"].attributes
    assert attributes["upstream.chat-api.config.version"] == pinned.snapshots["config"].version


def test_baggage_never_exceeds_the_w3c_limits() -> None:
    _, registry, _, _ = instrumented(service="s" * 50)
    for number in range(100):
        registry.register(f"component_{number:03d}", {"n": number})
    crowded = context_api.Context()
    for number in range(10):
        crowded = baggage_api.set_baggage(f"tenant.{number}", "x" * 20, crowded)
    result = with_versions(registry, crowded)
    members = baggage_api.get_all(result.context)
    assert len(members) == MAX_MEMBERS and result.skipped == 100 - (MAX_MEMBERS - 10)
    carrier: dict = {}
    W3CBaggagePropagator().inject(carrier, result.context)
    assert len(carrier["baggage"]) <= MAX_HEADER_BYTES
    # large values: the byte limit binds before the member limit
    _, big, _, _ = instrumented(service="big")
    for number in range(40):
        big.register(f"c{number}", {"n": number}, version="v" * 400)
    sized = with_versions(big, context_api.Context())
    W3CBaggagePropagator().inject(carrier := {}, sized.context)
    assert len(carrier["baggage"]) <= MAX_HEADER_BYTES and sized.skipped > 0
    assert all(key.startswith(BAGGAGE_PREFIX) for key in baggage_api.get_all(sized.context))


def test_outgoing_baggage_is_redacted() -> None:
    _, registry, _, _ = instrumented()
    registry.register("config", {"v": 1})
    context = baggage_api.set_baggage("user.session_id", "abc123", context_api.Context())
    context = baggage_api.set_baggage("tenant", "acme", context)
    headers = outgoing_headers(registry, context=context, redactor=Redactor())
    assert "abc123" not in headers["baggage"] and "session_id" not in headers["baggage"]
    assert "tenant=acme" in headers["baggage"]
