"""Contract rules beyond the Avro types: span validation, reload events, anomalies, plausibility."""

from __future__ import annotations

import pytest
from hypothesis import given

from schemas.errors import InvalidRecordError
from schemas.records import Anomaly, ReloadEvent, check_time_plausible, lossless_defaults, validate_span
from tests.schemas.test_codec import SPAN
from tests.strategies import anomalies, reload_events, spans


@given(spans())
def test_generated_spans_are_valid(span: dict) -> None:
    validate_span(span)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"trace_id": "ABC"}, "trace_id"),
        ({"trace_id": "0" * 32}, "trace_id"),
        ({"trace_id": "4BF92F3577B34DA6A3CE929D0E0E4736"}, "trace_id"),
        ({"span_id": "xyz"}, "span_id"),
        ({"span_id": None}, "span_id"),
        ({"parent_span_id": "1234"}, "parent_span_id"),
        ({"kind": "SERVERISH"}, "kind"),
        ({"service_name": ""}, "service_name"),
        ({"start_time_unix_nano": "now"}, "start_time_unix_nano"),
        ({"start_time_unix_nano": True}, "start_time_unix_nano"),
        ({"end_time_unix_nano": SPAN["start_time_unix_nano"] - 1}, "end_time_unix_nano"),
        ({"status_code": "FINE"}, "status_code"),
        ({"attributes": {"a": [1, 2]}}, "attributes"),
        ({"attributes": None}, "attributes"),
        ({"trace_state": None}, "trace_state"),
        ({"scope_name": 7}, "scope_name"),
        ({"dropped_events_count": -1}, "dropped_events_count"),
        ({"dropped_links_count": True}, "dropped_links_count"),
        ({"events": None}, "events"),
        ({"events": [{"name": "e"}]}, "events"),  # no time
        ({"events": [{"time_unix_nano": -5, "name": "e"}]}, "events"),
        ({"events": [{"time_unix_nano": 2**63, "name": "e"}]}, "events"),
        ({"events": [{"time_unix_nano": 1, "name": None}]}, "events"),
        ({"events": [{"time_unix_nano": 1, "name": "e", "attributes": {"a": None}}]}, "events"),
        ({"events": [{"time_unix_nano": 1, "name": "e", "dropped_attributes_count": -1}]}, "events"),
        ({"events": ["not a record"]}, "events"),
        ({"links": [{"trace_id": "0" * 32, "span_id": "00f067aa0ba902b7"}]}, "links"),
        ({"links": [{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00F067AA0BA902B7"}]}, "links"),
        ({"links": [{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
                     "trace_state": 1}]}, "links"),
        ({"links": [{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
                     "attributes": {1: "x"}}]}, "links"),
    ],
)
def test_invalid_spans_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(InvalidRecordError) as caught:
        validate_span({**SPAN, **change})
    assert caught.value.field == field


def test_a_v1_span_without_the_v2_fields_is_valid_and_so_is_one_with_them() -> None:
    validate_span(SPAN)
    validate_span({**SPAN, **lossless_defaults()})
    validate_span({**SPAN, "events": [{"time_unix_nano": 1, "name": "e"}],
                   "links": [{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}]})


def test_a_span_missing_a_required_field_is_invalid() -> None:
    span = dict(SPAN)
    del span["span_id"]
    with pytest.raises(InvalidRecordError):
        validate_span(span)


@given(reload_events())
def test_reload_event_dict_round_trip(record: dict) -> None:
    event = ReloadEvent.from_dict(record)
    assert event.to_dict() == record


def test_reload_event_scope() -> None:
    base = {
        "reload_id": "r1", "service_name": "gw", "component": "model", "new_version": "v2",
        "requested_time_unix_nano": 10, "effective_time_unix_nano": 20, "status": "SUCCEEDED", "source": "ops",
    }
    wide = ReloadEvent.from_dict(base)
    canary = ReloadEvent.from_dict({**base, "service_instance_id": "gw-2"})
    assert wide.is_service_wide and wide.applies_to("gw", "gw-1") and wide.applies_to("gw", "gw-2")
    assert not wide.applies_to("other", "gw-1")
    assert canary.applies_to("gw", "gw-2") and not canary.applies_to("gw", "gw-1")
    assert wide.succeeded and not ReloadEvent.from_dict({**base, "status": "FAILED"}).succeeded


@pytest.mark.parametrize(
    "change",
    [
        {"status": "MAYBE"},
        {"reload_id": ""},
        {"service_instance_id": ""},
        {"effective_time_unix_nano": -1},
        {"trace_id": "nothex"},
        {"model_context": {"temperature": 0.2}},
        {"changed_keys": "model"},
    ],
)
def test_invalid_reload_events(change: dict) -> None:
    base = {
        "reload_id": "r1", "service_name": "gw", "component": "model", "new_version": "v2",
        "requested_time_unix_nano": 10, "effective_time_unix_nano": 20, "status": "SUCCEEDED", "source": "ops",
    }
    with pytest.raises(InvalidRecordError):
        ReloadEvent.from_dict({**base, **change})


ANOMALY = {
    "anomaly_id": "a1", "reload_id": "r1", "service_name": "gw", "component": "model", "old_version": "v1",
    "new_version": "v2", "metric": "latency", "baseline_value": 40.0, "observed_value": 80.0, "p_value": 1e-9,
    "baseline_count": 3000, "observed_count": 50, "detected_time_unix_nano": 20, "severity": "WARNING",
}


@given(anomalies())
def test_anomaly_dict_round_trip_keeps_the_schema_order(record: dict) -> None:
    anomaly = Anomaly.from_dict(record)
    assert anomaly.to_dict() == record and list(anomaly.to_dict()) == list(record)


def test_an_anomaly_without_old_version_has_none_and_integer_values_become_floats() -> None:
    record = {key: value for key, value in ANOMALY.items() if key != "old_version"} | {"baseline_value": 40}
    anomaly = Anomaly.from_dict(record)
    assert anomaly.old_version is None and anomaly.baseline_value == 40.0 and isinstance(anomaly.baseline_value, float)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"severity": "FATAL"}, "severity"),
        ({"anomaly_id": ""}, "anomaly_id"),
        ({"reload_id": None}, "reload_id"),
        ({"metric": ""}, "metric"),
        ({"old_version": 1}, "old_version"),
        ({"baseline_value": "40"}, "baseline_value"),
        ({"observed_value": True}, "observed_value"),
        ({"p_value": 1.5}, "p_value"),
        ({"p_value": float("nan")}, "p_value"),
        ({"baseline_count": -1}, "baseline_count"),
        ({"observed_count": 2.0}, "observed_count"),
        ({"detected_time_unix_nano": -1}, "detected_time_unix_nano"),
    ],
)
def test_invalid_anomalies_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(InvalidRecordError) as raised:
        Anomaly.from_dict({**ANOMALY, **change})
    assert raised.value.field == field


def test_time_plausibility() -> None:
    now = 1_763_900_000_000_000_000
    day = 86_400 * 10**9
    check_time_plausible(now - day, now_unix_nano=now, max_past_nanos=7 * day, max_future_nanos=day, field_name="t")
    with pytest.raises(InvalidRecordError, match="implausibly"):
        check_time_plausible(now // 10**9, now_unix_nano=now, max_past_nanos=7 * day, max_future_nanos=day, field_name="t")
    with pytest.raises(InvalidRecordError):
        check_time_plausible(now + 2 * day, now_unix_nano=now, max_past_nanos=7 * day, max_future_nanos=day, field_name="t")
