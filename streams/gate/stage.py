"""The gate's Kafka side: a stage that reads ``reload.verdicts``, ``reload.anomalies`` and ``reloads`` as tables.

Every gate instance reads the three topics whole (loaded before it serves, then followed; no consumer
group, nothing committed) into its :class:`~streams.gate.store.VerdictStore`. A record that does not
decode or breaks the contract is counted and logged (bounded), never dead-lettered: its producer's
consumers (the enricher, the alerts hooks) dead-letter it once, and every gate replica would again.
Guarantee: once :attr:`StageRuntime.ready` is set the store holds every record the topics had when
the gate started; later records reach it within about one poll (``poll_timeout_ms``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from confluent_kafka import Message

from schemas.errors import DecodeError, InvalidRecordError
from schemas.records import Anomaly, ReloadEvent
from schemas.settings import KafkaSettings
from schemas.text import safe_text
from streams.gate.settings import GateSettings
from streams.gate.store import VerdictStore
from streams.stage import Outbox, Position, RuntimeSettings, Stage, StageRuntime

logger = logging.getLogger(__name__)

_NANOS_PER_MS = 1_000_000


class GateStage(Stage):
    """Feeds the store from the table topics (on the runtime's thread)."""

    name = "gate"

    def __init__(self, kafka: KafkaSettings, store: VerdictStore) -> None:
        topics = kafka.topics
        self._verdicts, self._anomalies, self._reloads = topics.reload_verdicts, topics.reload_anomalies, topics.reloads
        self._verdict_codec = kafka.codec("ReloadVerdict")
        self._anomaly_codec = kafka.codec("Anomaly")
        self._reload_codec = kafka.codec("ReloadEvent")
        self.store = store
        self.unreadable = 0
        self.records = 0

    def topics(self) -> Sequence[str]:
        return ()

    def table_topics(self) -> Sequence[str]:
        return (self._verdicts, self._anomalies, self._reloads)

    def ingest(self, messages: Sequence[Message], arrivals: Sequence[int] | None, outbox: Outbox) -> None:
        """Never called: the gate joins no group."""

    def ingest_table(self, messages: Sequence[Message], arrivals: Sequence[int] | None, outbox: Outbox) -> None:
        for index, message in enumerate(messages):
            value = message.value()
            if value is None:
                continue  # a tombstone (compaction of a deleted key): nothing to learn
            topic = message.topic()
            try:
                if topic == self._verdicts:
                    published_ms = arrivals[index] if arrivals is not None else message.timestamp()[1]
                    self.store.add_verdict(self._verdict_codec.decode(value), published_ms * _NANOS_PER_MS)
                elif topic == self._anomalies:
                    self.store.add_anomaly(Anomaly.from_dict(self._anomaly_codec.decode(value)))
                else:
                    self.store.add_reload(ReloadEvent.from_dict(self._reload_codec.decode(value)).to_dict())
            except (DecodeError, InvalidRecordError) as error:
                self.unreadable += 1
                logger.warning(
                    "gate: unreadable record at %s[%d]@%d skipped: %s",
                    topic,
                    message.partition(),
                    message.offset(),
                    safe_text(error, 300),
                )
                continue
            self.records += 1

    def snapshot(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Position]:
        return {}


def gate_runtime(kafka: KafkaSettings, settings: GateSettings, store: VerdictStore) -> StageRuntime:
    """The gate's table readers on the stage runtime (topics are created when missing, as by every stage)."""
    return StageRuntime(
        kafka,
        GateStage(kafka, store),
        RuntimeSettings(group_id=settings.group_id, poll_timeout_ms=settings.poll_timeout_ms),
    )
