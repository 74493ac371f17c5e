"""Unit tests of the batching base: flush triggers, retries with backoff, isolation of rejected rows."""

from __future__ import annotations

import pytest

from sinks.base import DEAD_LETTERS_TABLE, SinkBatch, SinkRecord, dedup_token
from sinks.errors import (
    SinkBackpressureError,
    SinkFatalError,
    SinkRejectedError,
    SinkRetriesExhaustedError,
    SinkRetryableError,
    UnconvertibleRecordError,
)
from sinks.testing import ListSink


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def record(offset: int, table: str = "spans_enriched", partition: int = 0, **value: object) -> SinkRecord:
    return SinkRecord(table, {"n": offset, **value}, "topic", partition, offset)


def make(clock: FakeClock, **kwargs: object) -> ListSink:
    return ListSink(clock=clock, sleep=clock.sleep, now_unix_nano=lambda: 42, **kwargs)


def test_flush_is_due_by_rows_or_by_age_of_the_oldest_record() -> None:
    clock = FakeClock()
    sink = make(clock, flush_rows=3, flush_interval_ms=500)
    assert not sink.should_flush()
    sink.add(record(0))
    sink.add(record(1))
    assert not sink.should_flush()
    clock.now += 0.499
    assert not sink.should_flush()
    clock.now += 0.001
    assert sink.should_flush()
    assert sink.flush() == 2
    assert not sink.should_flush()
    for offset in range(2, 5):
        sink.add(record(offset))
    assert sink.should_flush()  # three rows, no time passed
    sink.flush()
    assert [item.value["n"] for item in sink.written[1].items] == [2, 3, 4]



def test_the_flush_policy_is_one_method_batches_gathered_elsewhere_ask_too() -> None:
    sink = make(FakeClock(), flush_rows=3, flush_interval_ms=500)
    assert not sink.is_due(2, 499.9)
    assert sink.is_due(3, 0.0)
    assert sink.is_due(1, 500.0)

def test_one_batch_per_table_in_add_order_dead_letters_last() -> None:
    clock = FakeClock()
    sink = make(clock)
    sink.add(record(0, DEAD_LETTERS_TABLE))
    sink.add(record(1, "reload_events"))
    sink.add(record(2, "spans_enriched"))
    sink.add(record(3, "reload_events"))
    assert sink.flush() == 4
    assert [batch.table for batch in sink.written][-1] == DEAD_LETTERS_TABLE
    reloads = next(batch for batch in sink.written if batch.table == "reload_events")
    assert [item.offset for item in reloads.items] == [1, 3]
    assert sink.pending_rows == 0


def test_retryable_errors_back_off_exponentially_then_succeed() -> None:
    clock = FakeClock()
    sink = make(clock, fail_times=3, error=SinkRetryableError("connection reset"), retry_initial_backoff_ms=100)
    sink.add(record(0))
    sink.flush()
    assert clock.sleeps == [0.1, 0.2, 0.4]
    assert len(sink.written) == 1


def test_backpressure_waits_as_long_as_the_destination_asks() -> None:
    clock = FakeClock()
    sink = make(clock, fail_times=2, error=SinkBackpressureError(retry_after=2.5))
    sink.add(record(0))
    sink.flush()
    assert clock.sleeps == [2.5, 2.5]


def test_retries_give_up_after_the_timeout_and_keep_the_records_pending() -> None:
    clock = FakeClock()
    sink = make(clock, fail_times=1000, error=SinkRetryableError("down"), retry_timeout_ms=3_000)
    sink.add(record(0))
    with pytest.raises(SinkRetriesExhaustedError) as raised:
        sink.flush()
    assert isinstance(raised.value.__cause__, SinkRetryableError)
    assert sum(clock.sleeps) <= 3.0
    assert sink.pending_rows == 1  # nothing acknowledged: a later flush writes it
    sink._fail_times = 0
    assert sink.flush() == 1
    assert len(sink.rows("spans_enriched")) == 1


def test_fatal_errors_are_not_retried() -> None:
    clock = FakeClock()
    sink = make(clock, fail_times=1, error=SinkFatalError("no such table"))
    sink.add(record(0))
    with pytest.raises(SinkFatalError):
        sink.flush()
    assert clock.sleeps == []
    assert sink.pending_rows == 1


class RejectingSink(ListSink):
    """Refuses any batch holding a record marked bad, like ClickHouse refusing a block."""

    def write(self, batch: SinkBatch) -> None:
        if batch.table != DEAD_LETTERS_TABLE and any(item.value.get("bad") for item in batch.items):
            raise SinkRejectedError("Code: 469. VIOLATED_CONSTRAINT")
        super().write(batch)


def test_rejected_rows_are_isolated_and_dead_lettered_the_rest_is_stored() -> None:
    clock = FakeClock()
    sink = RejectingSink(clock=clock, sleep=clock.sleep, now_unix_nano=lambda: 42)
    for offset in range(20):
        sink.add(SinkRecord("spans_enriched", {"n": offset, "bad": offset in (3, 17)}, "t", 1, offset, b"k", b"raw%d" % offset))
    assert sink.flush() == 22  # 20 records, then their 2 dead letters
    assert sorted(row["n"] for row in sink.rows("spans_enriched")) == [n for n in range(20) if n not in (3, 17)]
    dead = sink.rows(DEAD_LETTERS_TABLE)
    assert sorted((row["source_topic"], row["source_partition"], row["source_offset"]) for row in dead) == [
        ("t", 1, 3),
        ("t", 1, 17),
    ]
    assert {row["error_kind"] for row in dead} == {"rejected_by_sink"}
    assert {row["raw_value"] for row in dead} == {b"raw3", b"raw17"}
    assert all("VIOLATED_CONSTRAINT" in row["error"] and row["stage"] == "sink" for row in dead)
    assert sink.rows_dead_lettered == 2


class PickySink(ListSink):
    def write(self, batch: SinkBatch) -> None:
        reasons = {index: "wrong type" for index, item in enumerate(batch.items) if item.value.get("bad")}
        if reasons:
            raise UnconvertibleRecordError(reasons, "malformed")
        super().write(batch)


def test_unconvertible_records_are_dead_lettered_at_once_with_their_kind() -> None:
    clock = FakeClock()
    sink = PickySink(clock=clock, sleep=clock.sleep, now_unix_nano=lambda: 42)
    for offset in range(6):
        sink.add(record(offset, bad=offset % 2 == 0))
    sink.flush()
    assert [row["n"] for row in sink.rows("spans_enriched")] == [1, 3, 5]
    dead = sink.rows(DEAD_LETTERS_TABLE)
    assert sorted(row["source_offset"] for row in dead) == [0, 2, 4]
    assert {row["error_kind"] for row in dead} == {"malformed"}
    assert len([batch for batch in sink.written if batch.table == "spans_enriched"]) == 1


def test_a_dead_letter_the_destination_refuses_fails_the_flush() -> None:
    class RefusesEverything(ListSink):
        def write(self, batch: SinkBatch) -> None:
            raise SinkRejectedError("no")

    clock = FakeClock()
    sink = RefusesEverything(clock=clock, sleep=clock.sleep)
    sink.add(record(0))
    with pytest.raises(SinkRejectedError, match="dead_letters refused"):
        sink.flush()


def test_an_undecodable_message_of_the_dead_letter_topic_becomes_a_dead_letter_of_its_own() -> None:
    """A broken DeadLetter body on the dead-letter topic failed every flush (the sink crash-looped)."""

    class RefusesKafkaBodies(ListSink):
        def write(self, batch: SinkBatch) -> None:
            reasons = {index: "truncated body" for index, item in enumerate(batch.items) if item.value is None}
            if reasons:
                raise UnconvertibleRecordError(reasons, "malformed")
            super().write(batch)

    clock = FakeClock()
    sink = RefusesKafkaBodies(clock=clock, sleep=clock.sleep, now_unix_nano=lambda: 42)
    junk = SinkRecord(DEAD_LETTERS_TABLE, None, "dead-letter", 0, 7, b"k", b"\xc3\x01junk", avro_body=b"junk")
    sink.add(junk)
    sink.flush()
    (letter,) = sink.rows(DEAD_LETTERS_TABLE)
    assert (letter["source_topic"], letter["source_offset"], letter["stage"]) == ("dead-letter", 7, "sink")
    assert letter["raw_value"] == b"\xc3\x01junk" and letter["error_kind"] == "malformed"


def test_dedup_token_names_exactly_the_offsets_it_holds() -> None:
    items = [record(offset, partition=offset % 2) for offset in range(10)]
    token = dedup_token("spans_enriched", items)
    assert token == dedup_token("spans_enriched", list(reversed(items)))
    assert "topic:0:0-8" in token and "topic:1:1-9" in token
    assert token != dedup_token("spans_enriched", items[:-1])
    assert token != dedup_token("spans_enriched", items[:5] + items[6:])  # a hole changes it
    assert token != dedup_token("reload_events", items)
    loose = [SinkRecord("spans_enriched", {"n": 1}), SinkRecord("spans_enriched", {"n": 2})]
    assert dedup_token("spans_enriched", loose) == dedup_token("spans_enriched", list(loose))
    assert dedup_token("spans_enriched", loose) != dedup_token("spans_enriched", loose[:1])


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="flush_rows"):
        ListSink(flush_rows=0)


class TokenRecordingSink(ListSink):
    """Fails the first writes with the given error, remembering the token of every attempt."""

    def __init__(self, errors: list[Exception], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._errors = list(errors)
        self.tokens: list[str] = []

    def write(self, batch: SinkBatch) -> None:
        self.tokens.append(batch.dedup_token)
        if self._errors:
            raise self._errors.pop(0)
        self.written.append(batch)


def test_a_retry_after_an_unknown_outcome_keeps_the_token_and_after_a_server_failure_takes_a_fresh_one() -> None:
    from sinks.errors import SinkRetryableError

    clock = FakeClock()
    sink = TokenRecordingSink(
        [SinkRetryableError("timed out"), SinkRetryableError("disk full", server_failed=True), SinkRetryableError("timed out")],
        clock=clock, sleep=clock.sleep, now_unix_nano=lambda: 42,
    )
    for offset in range(3):
        sink.add(SinkRecord("spans_enriched", {"n": offset}, "spans.enriched", 0, offset))
    assert sink.flush() == 3
    first, second, third, fourth = sink.tokens
    # unknown outcome: the same token (an insert that did land is not stored twice) ...
    assert second == first
    # ... the server said it failed: a fresh token (a half-written chain must not skip the block)
    assert third != first and fourth == third
    assert [batch.dedup_token for batch in sink.written] == [third]
