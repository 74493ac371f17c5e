"""The consumer's overlapped flushes, without a broker: commits in seal order, failures, revoke, fast-path rows.

A scripted fake Kafka consumer feeds the real :class:`SinkConsumer` loop; writers are in-memory
sinks whose writes can be held back, so a later flush can be made to finish first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from schemas.codec import codec_for
from schemas.kafka_io import MessageView
from schemas.settings import KafkaSettings
from sinks.base import DEAD_LETTERS_TABLE, KafkaRows, SinkBatch, dedup_token
from sinks.errors import SinkFatalError
from sinks.settings import SinkSettings
from sinks.testing import ListSink, enriched_spans
from streams.sink import SinkConsumer, SinkConsumerError, sink_runtime
from streams.testing import FakeConsumer, FakeProducer
from tests.threads import start_stoppable

KAFKA = KafkaSettings(topic_prefix="")
TOPIC = KAFKA.topics.spans_enriched
CODEC = codec_for("EnrichedSpan")
VALUES = [CODEC.encode(span) for span in enriched_spans(40, seed=5)]


def span(partition: int, offset: int) -> MessageView:
    return MessageView(TOPIC, partition, offset, VALUES[offset % len(VALUES)], f"k{offset}".encode())


class FakeKafka(FakeConsumer):
    """The scripted consumer, also noting what had been written when each commit was made."""

    def __init__(self, script: list[Any], log: list[str]) -> None:
        super().__init__(script, partitions=[(TOPIC, 0), (TOPIC, 1)])
        self.log = log
        self.written_at_commit: list[list[str]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = False) -> None:
        self.written_at_commit.append(list(self.log))
        super().commit(offsets, asynchronous)


def stored_offsets(log: list[str], batches: dict[int, dict[tuple[str, int], int]]) -> dict[tuple[str, int], int]:
    """The greatest committable position per partition given what the log says was written."""
    stored: dict[tuple[str, int], int] = {}
    for first, positions in batches.items():
        if f"wrote {first}" in log:
            for key, offset in positions.items():
                stored[key] = max(stored.get(key, 0), offset)
    return stored


class GatedSink(ListSink):
    """A writer whose write of a batch holding ``gate_offset`` waits for ``gate``; may fail a chosen batch."""

    def __init__(self, log: list[str], gates: dict[int, threading.Event], fail_offset: int | None = None) -> None:
        super().__init__(flush_rows=2, flush_interval_ms=3_600_000)
        self.log, self.gates, self.fail_offset = log, gates, fail_offset

    def write(self, batch: SinkBatch) -> None:
        first = batch.items[0].offset
        gate = self.gates.get(first)
        if gate is not None:
            assert gate.wait(10), "gate never opened"
        if first == self.fail_offset:
            self.log.append(f"failed {first}")
            raise SinkFatalError("injected")
        super().write(batch)
        self.log.append(f"wrote {first}")

    def close(self) -> None:
        pass


def start(
    script: list[Any], *, gates: dict[int, threading.Event] | None = None, fail_offset: int | None = None, writers: int = 2
) -> tuple[SinkConsumer, FakeKafka, list[str], threading.Event, threading.Thread, list[BaseException]]:
    log: list[str] = []
    gates = gates or {}
    kafka = FakeKafka(script, log)
    sinks = iter([GatedSink(log, gates, fail_offset) for _ in range(writers)])
    settings = SinkSettings(url="chdb:///unused", flush_rows=2, flush_interval_ms=3_600_000, writers=writers)
    runtime = sink_runtime(
        KAFKA,
        settings,
        sink=next(sinks),
        writer_factory=lambda: next(sinks),
        consumer_factory=lambda config: kafka,
        producer_factory=FakeProducer,
    )
    thread, stop, errors = start_stoppable(runtime.run)
    return runtime.stage, kafka, log, stop, thread, errors  # type: ignore[return-value]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_a_later_flush_finishing_first_is_committed_only_after_the_earlier_one() -> None:
    first = threading.Event()
    consumer, kafka, log, stop, thread, errors = start(
        [[span(0, 0), span(0, 1)], [span(0, 2), span(1, 0)]], gates={0: first}
    )
    try:
        wait_until(lambda: "wrote 2" in log, "the second flush to be written")
        time.sleep(0.5)  # give the runtime every chance to commit it (it must not): commits come every 200 ms
        assert kafka.commits == [], "the second flush was committed before the first was stored"
        assert consumer.stats.in_flight == 2
        first.set()
        wait_until(lambda: bool(kafka.commits) and kafka.commits[-1] == {(TOPIC, 0): 3, (TOPIC, 1): 1}, "both committed")
    finally:
        first.set()
        stop.set()
        thread.join(10)
    assert not errors, errors
    assert log.index("wrote 2") < log.index("wrote 0")
    batches = {0: {(TOPIC, 0): 2}, 2: {(TOPIC, 0): 3, (TOPIC, 1): 1}}
    for offsets, written in zip(kafka.commits, kafka.written_at_commit, strict=True):
        stored = stored_offsets(written, batches) if "wrote 0" in written else {}  # seal order: nothing before flush 0
        assert all(offset <= stored.get(key, 0) for key, offset in offsets.items()), (offsets, written)
    assert consumer.stats.flushes == 2 and consumer.stats.rows_flushed == 4


def test_a_flush_that_fails_for_good_commits_nothing_of_it_or_after_it() -> None:
    second = threading.Event()
    _consumer, kafka, log, stop, thread, errors = start(
        [[span(0, 0), span(0, 1)], [span(0, 2), span(0, 3)], [span(0, 4), span(0, 5)]],
        gates={2: second},
        fail_offset=2,
    )
    try:
        wait_until(lambda: "wrote 0" in log and kafka.commits, "the first flush and its commit")
        wait_until(lambda: "wrote 4" in log, "the third flush (behind the failing one)")
        second.set()
        thread.join(10)
    finally:
        second.set()
        stop.set()
        thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], SinkConsumerError), errors
    assert kafka.commits and all(commit == {(TOPIC, 0): 2} for commit in kafka.commits)  # not the failed batch, not the one after
    assert kafka.closed


def test_revoke_waits_for_every_flush_in_flight_then_commits() -> None:
    gate = threading.Event()
    returned: list[list[dict[tuple[str, int], int]]] = []

    def revoke(kafka: FakeConsumer) -> None:
        threading.Timer(0.2, gate.set).start()
        assert kafka.on_revoke is not None
        kafka.on_revoke(kafka, [TopicPartition(TOPIC, 0)])
        returned.append(list(kafka.commits))

    _consumer, kafka, _log, stop, thread, errors = start(
        [[span(0, 0), span(0, 1)], [span(0, 2)], revoke], gates={0: gate}
    )
    try:
        wait_until(lambda: bool(returned), "the revoke callback to return")
    finally:
        gate.set()
        stop.set()
        thread.join(10)
    assert not errors, errors
    # the in-flight flush and the open (not yet due) batch were both stored and committed before it returned
    assert returned[0] == [{(TOPIC, 0): 3}]
    assert kafka.commits == returned[0]


def test_a_stop_drains_the_open_batch_and_every_flush_in_flight() -> None:
    gate = threading.Event()
    consumer, kafka, _log, stop, thread, errors = start([[span(0, 0), span(0, 1)], [span(0, 2)]], gates={0: gate})
    wait_until(lambda: consumer.stats.in_flight == 1 and not kafka.script, "one flush in flight and one row open")
    stop.set()
    threading.Timer(0.1, gate.set).start()
    thread.join(10)
    assert not errors, errors
    assert kafka.commits == [{(TOPIC, 0): 3}]  # the stop waited for both, then committed once


def test_undecodable_messages_become_dead_letters_and_their_offsets_are_committed() -> None:
    consumer, kafka, _log, stop, thread, errors = start(
        [[span(0, 0), MessageView(TOPIC, 0, 1, b"junk", b"k"), MessageView(TOPIC, 0, 2, None, b"k"), span(0, 3)]]
    )
    try:
        wait_until(lambda: bool(kafka.commits), "the commit")
    finally:
        stop.set()
        thread.join(10)
    assert not errors, errors
    assert kafka.commits == [{(TOPIC, 0): 4}]
    written = [batch for sink in [consumer.sink] for batch in sink.written]  # type: ignore[attr-defined]
    letters = [item for batch in written if batch.table == DEAD_LETTERS_TABLE for item in batch.items]
    assert sorted((item.value["source_offset"], item.value["error_kind"]) for item in letters) == [
        (1, "wrong_magic"),
        (2, "tombstone"),
    ]
    spans = [batch for batch in written if batch.table == "spans_enriched"]
    assert [item.offset for batch in spans for item in batch.items] == [0, 3]


def test_kafka_rows_give_the_token_and_records_of_the_same_records_one_by_one() -> None:
    messages = [span(1, 5), span(1, 6), span(0, 9), span(1, 8), span(0, 10)]  # holes and interleaved partitions
    runs = [(1, 5, 7), (0, 9, 10), (1, 8, 9), (0, 10, 11)]
    rows = KafkaRows("spans_enriched", TOPIC, CODEC.split(VALUES[0])[0], 10, messages, runs)
    records = list(rows)
    assert [(r.partition, r.offset, r.raw_key) for r in records] == [(1, 5, b"k5"), (1, 6, b"k6"), (0, 9, b"k9"), (1, 8, b"k8"), (0, 10, b"k10")]
    assert rows.dedup_token() == dedup_token("spans_enriched", records)
    assert rows.dedup_token() != dedup_token("spans_enriched", records[:-1])
    assert rows[1:3] == tuple(records[1:3])
    assert rows.bodies() == [bytes(r.avro_body) for r in records]


@pytest.mark.clickhouse
def test_a_refused_row_among_fast_path_rows_is_isolated_with_its_coordinates(tmp_path: Any) -> None:
    from sinks.clickhouse import ClickHouseSink

    spans = enriched_spans(50, seed=9)
    spans[17]["end_time_unix_nano"] = spans[17]["start_time_unix_nano"] - 1  # violates span_ends_after_start
    messages = [MessageView(TOPIC, 0, offset, CODEC.encode(record), b"key%d" % offset) for offset, record in enumerate(spans)]
    rows = KafkaRows("spans_enriched", TOPIC, CODEC.split(messages[0].value())[0], 10, messages, [(0, 0, 50)])
    sink = ClickHouseSink(SinkSettings(url=f"chdb://{tmp_path / 'chdb'}"))
    try:
        sink.add_rows("spans_enriched", rows, rows.dedup_token())
        assert sink.flush() == 50 + 1
        assert sink.count("spans_enriched") == 49
        letters = sink.query("SELECT source_offset, raw_key, error_kind FROM dead_letters FINAL", binary_strings=True)
        assert letters == [(17, b"key17", b"rejected_by_sink")]
    finally:
        sink.close()
