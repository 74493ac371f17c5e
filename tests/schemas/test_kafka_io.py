"""produce_waiting never drops under backpressure; commit_quietly reports failures instead of raising; a group's lag."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException

from schemas.kafka_io import commit_quietly, produce_waiting, uncommitted


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
    from schemas.kafka_io import group_consumer_config

    for session_ms in (2, 6_000, 45_000):
        config = group_consumer_config("g", session_ms)
        assert config["group.id"] == "g" and config["enable.auto.commit"] is False
        assert config["auto.offset.reset"] == "earliest"
        assert 1 <= config["heartbeat.interval.ms"] <= max(1, session_ms // 3) and config["heartbeat.interval.ms"] <= 3_000
        assert config["session.timeout.ms"] == session_ms


@pytest.mark.parametrize(
    ("committed", "bounds", "lag"),
    [
        ({0: 10, 1: 5}, {0: (0, 10), 1: (0, 5)}, 0),  # everything committed
        ({0: 7}, {0: (0, 10), 1: (0, 5)}, 3 + 5),  # partition 1 never committed: the group starts at low
        ({0: -1001}, {0: (4, 10)}, 6),  # OFFSET_INVALID: from the low watermark
        ({0: 2}, {0: (4, 10)}, 6),  # committed below low (retention deleted it): from low
        ({}, {0: (0, 0)}, 0),  # an empty partition holds nothing back
    ],
)
def test_uncommitted_counts_what_the_group_has_not_committed(
    committed: dict[int, int], bounds: dict[int, tuple[int, int]], lag: int
) -> None:
    assert uncommitted(committed, bounds) == lag
