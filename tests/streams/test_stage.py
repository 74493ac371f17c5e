"""The stage runtime without a broker: the commit cycle's order, restores in the poll loop, metadata, dead letters."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import TopicPartition

from schemas.errors import InvalidRecordError
from schemas.kafka_io import MessageView
from schemas.settings import KafkaSettings
from streams.stage import (
    Committed,
    Outbox,
    Position,
    RestorePlan,
    RuntimeSettings,
    Stage,
    StageError,
    StageRuntime,
    decode_metadata,
    encode_metadata,
)
from streams.testing import FakeConsumer, FakeProducer
from tests.threads import start_stoppable

KAFKA = KafkaSettings(topic_prefix="")
TOPIC = "in"


class RecordingStage(Stage):
    """Counts messages; publishes one record per message; restores by re-reading the window before the commit."""

    name = "recording"

    def __init__(self, log: list[str], *, plan: RestorePlan | None = None) -> None:
        self.log = log
        self.plan = plan
        self.positions: dict[tuple[str, int], int] = {}
        self.restored_offsets: list[int] = []
        self.ingested: list[int] = []

    def topics(self) -> Sequence[str]:
        return (TOPIC,)

    def assigned(self, partitions: Sequence[Committed]) -> dict[tuple[str, int], RestorePlan]:
        self.log.append(f"assigned {[(c.partition, c.offset, dict(c.state or {})) for c in partitions]}")
        return {(c.topic, c.partition): self.plan for c in partitions if self.plan is not None}

    def restore_messages(self, partition, messages, arrivals, outbox) -> None:
        self.restored_offsets += [message.offset() for message in messages]

    def restored(self, partition, committed, position, outbox) -> None:
        self.log.append(f"restored {partition[1]} at {position}")

    def ingest(self, messages: Sequence[Any], arrivals: Sequence[int] | None, outbox: Outbox) -> None:
        for message in messages:
            if message.value() == b"bad":
                outbox.reject(message, InvalidRecordError("bad value"), stage="test")
            else:
                outbox.publish("out", message.key(), message.value())
            self.ingested.append(message.offset())
            self.positions[(message.topic(), message.partition())] = message.offset() + 1

    def prepare_commit(self, outbox: Outbox, *, draining: bool) -> None:
        self.log.append("prepare")

    def snapshot(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Position]:
        self.log.append("snapshot")
        return {key: Position(self.positions[key], {"seen": self.positions[key]}) for key in partitions if key in self.positions}

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        self.log.append(f"forget {sorted(p for _, p in partitions)}")


class OrderedProducer(FakeProducer):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def flush(self, timeout: float = 0.0) -> int:
        self.log.append("flush")
        return 0


class LoggingConsumer(FakeConsumer):
    def __init__(self, log: list[str], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log = log
        self.metadata: list[str] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = False) -> None:
        self.log.append("commit")
        self.metadata += [tp.metadata for tp in offsets]
        super().commit(offsets, asynchronous)


def runtime_for(stage: Stage, consumer: FakeConsumer, producer: FakeProducer, *, reader: FakeConsumer | None = None) -> StageRuntime:
    """The runtime on fakes: ``reader`` serves restore reads, ``consumer`` everything else (group and queries)."""

    def consumers(config: dict[str, Any]) -> FakeConsumer:
        return reader if reader is not None and config["group.id"].endswith("-reader") else consumer

    return StageRuntime(
        KAFKA,
        stage,
        RuntimeSettings(group_id="g", commit_interval_ms=50, poll_timeout_ms=10, create_topics=False),
        consumer_factory=consumers,  # type: ignore[arg-type]
        producer_factory=lambda config: producer,  # type: ignore[arg-type,return-value]
        message_limit=lambda topic: 1_000_000,
    )


def message(offset: int, value: bytes = b"v", partition: int = 0) -> MessageView:
    return MessageView(TOPIC, partition, offset, value, b"k%d" % offset)


def run_until(runtime: StageRuntime, condition, what: str) -> list[BaseException]:
    thread, stop, errors = start_stoppable(runtime.run)
    deadline = time.monotonic() + 10
    while not condition() and not errors:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)
    stop.set()
    thread.join(10)
    return errors


def test_every_commit_prepares_then_flushes_the_producer_then_snapshots_then_commits() -> None:
    log: list[str] = []
    consumer = LoggingConsumer(log, [[message(0), message(1)], [message(2)]], partitions=[(TOPIC, 0)])
    producer = OrderedProducer(log)
    stage = RecordingStage(log)
    errors = run_until(runtime_for(stage, consumer, producer), lambda: len(stage.ingested) == 3, "every message")
    assert errors == []
    commits = [i for i, entry in enumerate(log) if entry == "commit"]
    assert commits
    for index in commits:
        assert log[index - 3 : index] == ["prepare", "flush", "snapshot"]
    assert consumer.commits[-1] == {(TOPIC, 0): 3}
    assert [value for _, _, value, _ in producer.produced] == [b"v", b"v", b"v"]
    assert decode_metadata(consumer.metadata[-1]) == (2, {"seen": 3})


def test_an_unchanged_position_is_not_committed_again() -> None:
    log: list[str] = []
    consumer = LoggingConsumer(log, [[message(0)]] + [[]] * 40, partitions=[(TOPIC, 0)])
    stage = RecordingStage(log)
    errors = run_until(runtime_for(stage, consumer, OrderedProducer(log)), lambda: not consumer.script, "the script")
    assert errors == [] and consumer.commits == [{(TOPIC, 0): 1}]


def test_a_restore_reads_its_window_in_the_poll_loop_with_the_partition_paused_and_skips_what_it_read() -> None:
    log: list[str] = []
    reader = FakeConsumer([[message(3), message(4), message(5), message(6), message(7)]])
    # The group consumer delivers again from the committed offset 5 after the resume: 5 and 6 were read by the restore.
    consumer = LoggingConsumer(log, [[], [message(5), message(6), message(7)]], partitions=[(TOPIC, 0)], committed={(TOPIC, 0): 5})
    paused_during_restore: list[bool] = []

    class Planned(RecordingStage):
        def restore_messages(self, partition, messages, arrivals, outbox) -> None:
            paused_during_restore.append((TOPIC, 0) in consumer.paused)
            super().restore_messages(partition, messages, arrivals, outbox)

    stage = Planned(log, plan=RestorePlan(until_offset=5, since_time_ms=0, more=lambda m, arrival: m.offset() < 7))
    runtime = runtime_for(stage, consumer, OrderedProducer(log), reader=reader)
    runtime._query_client().offsets_for_times = lambda tps, timeout=0: [TopicPartition(TOPIC, 0, 3)]  # type: ignore[method-assign]
    errors = run_until(runtime, lambda: 7 in stage.ingested, "the message after the restore")
    assert errors == []
    assert stage.restored_offsets == [3, 4, 5, 6] and paused_during_restore == [True]
    assert "restored 0 at 7" in log and (TOPIC, 0) not in consumer.paused
    assert stage.ingested == [7]  # 5 and 6 came again from the group consumer and were skipped
    assert runtime.stats.restored_partitions == 1


def test_revoke_commits_the_revoked_partitions_then_forgets_them() -> None:
    log: list[str] = []
    consumer = LoggingConsumer(log, [[message(0), message(1, partition=1)], lambda kafka: kafka.revoke()], partitions=[(TOPIC, 0), (TOPIC, 1)])
    stage = RecordingStage(log)
    errors = run_until(runtime_for(stage, consumer, OrderedProducer(log)), lambda: any(e.startswith("forget") for e in log), "the revoke")
    assert errors == []
    forget = next(i for i, e in enumerate(log) if e.startswith("forget"))
    assert log[forget - 1] == "commit" and log[forget] == "forget [0, 1]"


def test_a_failed_delivery_stops_the_runtime_before_its_commit() -> None:
    log: list[str] = []

    class Failing(OrderedProducer):
        def produce(self, topic, key=None, value=b"", on_delivery=None, partition=None) -> None:
            super().produce(topic, key, value, on_delivery, partition)
            on_delivery(_Error(), _Delivered(topic))

    consumer = LoggingConsumer(log, [[message(0)]], partitions=[(TOPIC, 0)])
    errors = run_until(runtime_for(RecordingStage(log), consumer, Failing(log)), lambda: False, "the failure")
    assert len(errors) == 1 and isinstance(errors[0], StageError) and "not committing" in str(errors[0])
    assert consumer.commits == []


class _Error:
    def __str__(self) -> str:
        return "Broker: Message size too large"


class _Delivered:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


def test_a_rejected_message_becomes_a_dead_letter_that_fits_the_topic() -> None:
    log: list[str] = []
    consumer = LoggingConsumer(log, [[MessageView(TOPIC, 0, 0, b"bad", b"K" * 3_000_000)]], partitions=[(TOPIC, 0)])
    producer = OrderedProducer(log)
    runtime = runtime_for(RecordingStage(log), consumer, producer)
    errors = run_until(runtime, lambda: bool(producer.produced), "the dead letter")
    assert errors == []
    topic, key, value, _ = producer.produced[0]
    assert topic == KAFKA.topics.dead_letter and len(value) + len(key or b"") <= 1_000_000
    record = KAFKA.codec("DeadLetter").decode(value)
    assert record["error_kind"] == "invalid_record" and record["raw_key_length"] == 3_000_000 and record["truncated"]


def test_commit_metadata_is_versioned_and_older_versions_are_handed_to_the_stage() -> None:
    assert decode_metadata(encode_metadata("s", {"a": 1})) == (2, {"a": 1})
    assert decode_metadata('{"v": 1, "w": [1, 2, 3]}') == (1, {"v": 1, "w": [1, 2, 3]})
    assert decode_metadata("not json") == (None, None) and decode_metadata(None) == (None, None)
    assert decode_metadata("[1]") == (None, None)


def test_partitions_of_a_stage_that_is_restoring_hold_no_progress() -> None:
    runtime = StageRuntime(KAFKA, RecordingStage([]), RuntimeSettings(group_id="g", create_topics=False))
    runtime._jobs[(TOPIC, 0)] = object()  # type: ignore[assignment]
    assert runtime.progress(TOPIC, 0) is None


def test_the_stop_event_is_seen_by_stages_through_stopping() -> None:
    log: list[str] = []
    consumer = LoggingConsumer(log, [], partitions=[(TOPIC, 0)])
    runtime = runtime_for(RecordingStage(log), consumer, OrderedProducer(log))
    thread, stop, errors = start_stoppable(runtime.run)
    assert not runtime.stopping.wait(0.2)
    stop.set()
    assert runtime.stopping.wait(5)
    thread.join(10)
    assert errors == [] and consumer.closed
