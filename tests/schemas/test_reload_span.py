"""The reload span convention (schemas/reload_span.py): attributes -> ReloadEvent, defaults, and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given

from schemas.errors import InvalidRecordError
from schemas.records import ReloadEvent
from schemas.reload_span import is_reload_span, reload_event_from_span, reload_span_attributes
from tests.strategies import reload_events

START, END = 1_764_547_200_000_000_000, 1_764_547_200_040_000_000


def reload_span(attributes: dict, **fields) -> dict:
    return {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "parent_span_id": None,
        "name": "reload model", "kind": "INTERNAL", "service_name": "llm-gateway", "service_instance_id": "gw-2",
        "start_time_unix_nano": START, "end_time_unix_nano": END, "status_code": "OK", "status_message": None,
        "attributes": attributes, "resource_attributes": None,
    } | fields


MINIMAL = {"reload.id": "r-1", "reload.component": "model", "reload.new_version": "m2"}


def test_a_minimal_reload_span_takes_its_defaults_from_the_span() -> None:
    event = reload_event_from_span(reload_span(MINIMAL))
    assert event == ReloadEvent(
        reload_id="r-1", service_name="llm-gateway", component="model", new_version="m2",
        requested_time_unix_nano=START, effective_time_unix_nano=END, status="SUCCEEDED", source="",
        service_instance_id=None, old_version=None, trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7", model_context={}, changed_keys=(),
    )
    assert reload_event_from_span(reload_span(MINIMAL, status_code="ERROR")).status == "FAILED"


def test_every_attribute_of_the_convention() -> None:
    attributes = MINIMAL | {
        "reload.old_version": "m1", "reload.status": "FAILED", "reload.source": "consul-watch",
        "reload.scope": "instance", "reload.changed_keys": '["model.id","parameters.temperature"]',
        "reload.model_context.model.id": "gpt-4o", "reload.model_context.model.parameters.temperature": 0.3,
        "reload.model_context.flag": True, "reload.model_context.": "ignored: no key",
        "reload.requested_time_unix_nano": START - 5, "reload.effective_time_unix_nano": str(END + 7),
    }
    event = reload_event_from_span(reload_span(attributes, status_code="OK"))  # the attribute beats the span status
    assert (event.status, event.old_version, event.source, event.service_instance_id) == (
        "FAILED", "m1", "consul-watch", "gw-2")
    assert event.changed_keys == ("model.id", "parameters.temperature")
    assert event.model_context == {"model.id": "gpt-4o", "model.parameters.temperature": "0.3", "flag": "true"}
    assert (event.requested_time_unix_nano, event.effective_time_unix_nano) == (START - 5, END + 7)
    as_tuple = reload_span(attributes | {"reload.changed_keys": ("a", "b")})
    assert reload_event_from_span(as_tuple).changed_keys == ("a", "b")


@pytest.mark.parametrize(("change", "says"), [
    ({"reload.id": ""}, "reload.id"),
    ({"reload.component": None}, "reload.component"),
    ({"reload.new_version": 5}, "reload.new_version"),
    ({"reload.status": "MAYBE"}, "reload.status"),
    ({"reload.scope": "cluster"}, "reload.scope"),
    ({"reload.changed_keys": "a,b"}, "reload.changed_keys"),
    ({"reload.changed_keys": "[1, 2]"}, "reload.changed_keys"),
    ({"reload.effective_time_unix_nano": 1.7e18}, "reload.effective_time_unix_nano"),
    ({"reload.requested_time_unix_nano": "-5"}, "reload.requested_time_unix_nano"),
    ({"reload.requested_time_unix_nano": str(2**63)}, "reload.requested_time_unix_nano"),
    ({"reload.old_version": False}, "reload.old_version"),
])
def test_broken_conventions_are_refused_naming_the_attribute(change: dict, says: str) -> None:
    attributes = {key: value for key, value in (MINIMAL | change).items() if value is not None}
    with pytest.raises(InvalidRecordError, match=says.replace(".", r"\.")):
        reload_event_from_span(reload_span(attributes))


def test_no_status_at_all_is_refused_rather_than_guessed_and_instance_scope_needs_an_instance() -> None:
    with pytest.raises(InvalidRecordError, match="reload.status"):
        reload_event_from_span(reload_span(MINIMAL, status_code="UNSET"))
    with pytest.raises(InvalidRecordError, match="service.instance.id"):
        reload_event_from_span(reload_span(MINIMAL | {"reload.scope": "instance"}, service_instance_id=""))


def test_only_spans_with_reload_id_are_reload_spans() -> None:
    assert is_reload_span(reload_span(MINIMAL))
    assert not is_reload_span(reload_span({"reload.component": "model", "fetch.component": "model"}))
    assert not is_reload_span({"attributes": None})


@given(record=reload_events())
def test_attributes_written_for_an_event_read_back_as_that_event(record: dict) -> None:
    event = ReloadEvent.from_dict(record | {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                                            "span_id": "00f067aa0ba902b7"})
    span = reload_span(
        {key: list(value) if isinstance(value, tuple) else value
         for key, value in reload_span_attributes(event).items()},
        service_name=event.service_name, service_instance_id=event.service_instance_id or "other-instance",
        start_time_unix_nano=0, end_time_unix_nano=0, status_code="UNSET",
    )
    assert reload_event_from_span(span) == event
    # Written for a span running from the request to the swap, the times are the span's own (defaults).
    timed = reload_span_attributes(event, start_time_unix_nano=event.requested_time_unix_nano,
                                   end_time_unix_nano=event.effective_time_unix_nano)
    assert "reload.requested_time_unix_nano" not in timed and "reload.effective_time_unix_nano" not in timed
    moved = span | {"start_time_unix_nano": event.requested_time_unix_nano,
                    "end_time_unix_nano": event.effective_time_unix_nano,
                    "attributes": {key: list(value) if isinstance(value, tuple) else value
                                   for key, value in timed.items()}}
    assert reload_event_from_span(moved) == event
