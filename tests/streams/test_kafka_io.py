"""produce_waiting never drops under backpressure; commit_quietly reports failures instead of raising."""

from __future__ import annotations

from confluent_kafka import KafkaException

from streams.kafka_io import commit_quietly, produce_waiting


class _FullThenFreeProducer:
    def __init__(self, full_times: int) -> None:
        self.full_times = full_times
        self.polls = 0
        self.produced: list[tuple[str, bytes | None, bytes]] = []

    def produce(self, topic, key, value, on_delivery) -> None:
        if self.full_times:
            self.full_times -= 1
            raise BufferError("Local: Queue full")
        self.produced.append((topic, key, value))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0


def test_a_full_queue_is_waited_out_and_the_message_is_produced_once() -> None:
    producer = _FullThenFreeProducer(full_times=3)
    produce_waiting(producer, "t", b"k", b"v", on_delivery=lambda *args: None)  # type: ignore[arg-type]
    assert producer.produced == [("t", b"k", b"v")] and producer.polls == 3


class _Consumer:
    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.calls: list[list] = []

    def commit(self, offsets, asynchronous: bool) -> None:
        assert asynchronous is False
        self.calls.append(offsets)
        if self.error is not None:
            raise self.error


def test_commit_quietly_says_whether_the_commit_went_through() -> None:
    assert commit_quietly(_Consumer(None), ["tp"]) is True  # type: ignore[arg-type, list-item]
    failing = _Consumer(KafkaException("coordinator not available"))
    assert commit_quietly(failing, ["tp"]) is False  # type: ignore[arg-type, list-item]
    assert failing.calls == [["tp"]]


def test_group_consumers_commit_by_hand_and_heartbeat_well_inside_the_session() -> None:
    from streams.kafka_io import group_consumer_config

    for session_ms in (2, 6_000, 45_000):
        config = group_consumer_config("g", session_ms)
        assert config["group.id"] == "g" and config["enable.auto.commit"] is False
        assert config["auto.offset.reset"] == "earliest"
        assert 1 <= config["heartbeat.interval.ms"] <= max(1, session_ms // 3) and config["heartbeat.interval.ms"] <= 3_000
        assert config["session.timeout.ms"] == session_ms
