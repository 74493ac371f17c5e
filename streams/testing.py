"""Test doubles shipped with the stage runtime: a scripted consumer, a recording producer, a list outbox.

:class:`FakeConsumer` hands out scripted batches (a callable step runs inside ``consume``, as
librdkafka's rebalance callbacks do) and assigns every partition it is told of on the first call;
:class:`FakeProducer` records what is produced and delivers it at once. Both are what
:class:`streams.stage.StageRuntime` needs of its clients, no more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import OFFSET_INVALID, TopicPartition

from streams.stage import Outbox


class FakeConsumer:
    """Scripted batches for one consumer group; records commits, pauses and resumes."""

    def __init__(
        self,
        script: Sequence[Sequence[Any] | Callable[[FakeConsumer], None]] = (),
        *,
        partitions: Sequence[tuple[str, int]] = (),
        committed: dict[tuple[str, int], int] | None = None,
        high_watermark: int = 1_000_000,
    ) -> None:
        self.script = list(script)
        self.partitions = list(partitions)
        self.initial = dict(committed or {})
        self.high = high_watermark
        self.commits: list[dict[tuple[str, int], int]] = []
        self.paused: set[tuple[str, int]] = set()
        self.on_assign: Callable[..., None] | None = None
        self.on_revoke: Callable[..., None] | None = None
        self.assigned = False
        self.closed = False

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None, on_lost: Any = None) -> None:
        self.on_assign, self.on_revoke = on_assign, on_revoke
        if not self.partitions:
            self.partitions = [(topic, 0) for topic in topics]

    def consume(self, num_messages: int = 1, timeout: float = 0.0) -> list[Any]:
        if not self.assigned and self.on_assign is not None:
            self.assigned = True
            self.on_assign(self, [TopicPartition(topic, partition) for topic, partition in self.partitions])
            return []
        if not self.script:
            time.sleep(0.005)
            return []
        step = self.script.pop(0)
        if callable(step):
            step(self)
            return []
        return list(step)

    def committed(self, partitions: list[TopicPartition], timeout: float = 0.0) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.initial.get((tp.topic, tp.partition), OFFSET_INVALID)) for tp in partitions]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 0.0, cached: bool = False) -> tuple[int, int]:
        return 0, self.high

    def assign(self, partitions: list[TopicPartition]) -> None:
        pass

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = False) -> None:
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def close(self) -> None:
        self.closed = True

    def revoke(self) -> None:
        """Revoke every partition (call from a script step)."""
        if self.on_revoke is not None:
            self.on_revoke(self, [TopicPartition(topic, partition) for topic, partition in self.partitions])


class FakeProducer:
    """Records produced records; every delivery succeeds at once."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.produced: list[tuple[str, bytes | None, bytes, int | None]] = []

    def produce(self, topic: str, key: bytes | None = None, value: bytes = b"", on_delivery: Any = None, partition: int | None = None) -> None:
        self.produced.append((topic, key, value, partition))

    def poll(self, timeout: float = 0.0) -> int:
        return 0

    def flush(self, timeout: float = 0.0) -> int:
        return 0


class ListOutbox(Outbox):
    """An outbox that keeps what a stage publishes and rejects (unit tests of stages)."""

    def __init__(self, partitions: dict[str, int] | None = None, limit_bytes: int = 1_000_000) -> None:
        self.published: list[tuple[str, bytes | None, bytes, int | None]] = []
        self.rejected: list[tuple[Any, Exception, str, int]] = []
        self._partitions = partitions or {}
        self._limit = limit_bytes

    def publish(self, topic: str, key: bytes | None, value: bytes, *, partition: int | None = None) -> None:
        from streams.stage import MessageTooLarge

        size = len(value) + (len(key) if key else 0)
        if size > self._limit:
            raise MessageTooLarge(topic, size, self._limit)
        self.published.append((topic, key, value, partition))

    def reject(self, message: Any, error: Exception, *, stage: str, index: int = -1) -> None:
        self.rejected.append((message, error, stage, index))

    def partitions(self, topic: str) -> int:
        return self._partitions.get(topic, 1)

    def limit(self, topic: str) -> int:
        return self._limit
