"""Publishing record streams to the spans and reloads topics: backfills from files, and simulations.

One producer writes both topics: spans keyed by trace_id, reloads keyed by service_name. The
order of a stream is kept across the two topics by flushing before and after every reload (reloads
are few), so a reload published "late" really reaches the broker after the spans before it.
Within a topic, order per partition follows the stream order; nothing else is promised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from gateway.delivery import DeliveryStats
from schemas.errors import ReloadtraceError
from schemas.files import read_records
from schemas.records import ReloadEvent, validate_span
from schemas.settings import KafkaSettings

_DEFAULT_FLUSH_TIMEOUT_S = 30.0


class Interleaving(StrEnum):
    """How ``produce`` orders the two files."""

    RELOADS_FIRST = "reloads-first"  # the whole reloads file, then the whole spans file
    SPANS_FIRST = "spans-first"  # the whole spans file, then the reloads file (every reload late)
    EVENT_TIME = "event-time"  # spans at their end time, reloads at effective time + publication delay


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One record of a stream: ``kind`` "span" or "reload", the record, and when it is published."""

    kind: str
    record: dict[str, Any]
    publish_time_unix_nano: int = 0


@dataclass
class ProduceReport:
    """Counts of what was published, and every skipped line with its file and position."""

    spans: int = 0
    reloads: int = 0
    skipped: list[tuple[str, int, str]] = field(default_factory=list)
    delivery: DeliveryStats = field(default_factory=DeliveryStats)

    @property
    def undelivered(self) -> int:
        return self.delivery.delivery_failed + self.delivery.in_flight


def read_stream(path: Path | str, kind: str, report: ProduceReport) -> Iterator[dict[str, Any]]:
    """Valid records of a spans or reloads file in file order; bad lines go to ``report.skipped``."""
    for item in read_records(path):
        if item.record is None:
            report.skipped.append((str(path), item.position, item.error or "unreadable"))
            continue
        try:
            if kind == "span":
                validate_span(item.record)
                yield item.record
            else:
                yield ReloadEvent.from_dict(item.record).to_dict()
        except ReloadtraceError as error:
            report.skipped.append((str(path), item.position, str(error)))


def file_stream(
    spans_path: Path | str,
    reloads_path: Path | str,
    report: ProduceReport,
    *,
    interleaving: Interleaving = Interleaving.RELOADS_FIRST,
    publication_delays_ns: dict[str, int] | None = None,
) -> list[StreamItem]:
    """The items of two files in the chosen order (``publication_delays_ns``: reload_id → delay,
    e.g. from a simulator ground truth; used by ``event-time`` only, missing ids publish on time)."""
    spans = [
        StreamItem("span", record, record["end_time_unix_nano"]) for record in read_stream(spans_path, "span", report)
    ]
    delays = publication_delays_ns or {}
    reloads = [
        StreamItem("reload", record, record["effective_time_unix_nano"] + delays.get(record["reload_id"], 0))
        for record in read_stream(reloads_path, "reload", report)
    ]
    if interleaving is Interleaving.RELOADS_FIRST:
        return reloads + spans
    if interleaving is Interleaving.SPANS_FIRST:
        return spans + reloads
    indexed = [
        (item.publish_time_unix_nano, 0 if item.kind == "reload" else 1, n, item)
        for n, item in enumerate(reloads + spans)
    ]
    return [entry[-1] for entry in sorted(indexed, key=lambda entry: entry[:3])]


class StreamPublisher:
    """Writes stream items to the two topics with one producer (see the module docstring for order)."""

    def __init__(self, kafka: KafkaSettings, *, producer: Any = None) -> None:
        self.topics = kafka.topics
        self._span_codec = kafka.codec("Span")
        self._reload_codec = kafka.codec("ReloadEvent")
        self._producer = producer if producer is not None else Producer(kafka.confluent_config() | {"linger.ms": 20})

    def publish(
        self,
        items: Iterable[StreamItem],
        report: ProduceReport,
        *,
        pace: float | None = None,
        on_item: Callable[[int], None] | None = None,
    ) -> ProduceReport:
        """Publish in order; ``pace`` (a speed factor, 1.0 = real time) sleeps to follow publish times.

        Returns the report after a final flush; ``report.undelivered`` says what did not make it.
        """
        first_time: int | None = None
        wall_start = time.monotonic()
        for number, item in enumerate(items, start=1):
            if pace is not None and pace > 0:
                first_time = item.publish_time_unix_nano if first_time is None else first_time
                delay = wall_start + (item.publish_time_unix_nano - first_time) / 1e9 / pace - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if item.kind == "span":
                self._produce(self.topics.spans, item.record["trace_id"], self._span_codec.encode(item.record), report)
                report.spans += 1
            else:
                self._producer.flush(_DEFAULT_FLUSH_TIMEOUT_S)
                self._produce(
                    self.topics.reloads, item.record["service_name"], self._reload_codec.encode(item.record), report
                )
                self._producer.flush(_DEFAULT_FLUSH_TIMEOUT_S)
                report.reloads += 1
            if on_item is not None:
                on_item(number)
        self._producer.flush(_DEFAULT_FLUSH_TIMEOUT_S)
        return report

    def _produce(self, topic: str, key: str, value: bytes, report: ProduceReport) -> None:
        while True:
            try:
                self._producer.produce(topic, key=key.encode(), value=value, on_delivery=report.delivery.on_delivery)
                report.delivery.add("produced")
                break
            except BufferError:  # a backfill waits for room rather than dropping
                self._producer.poll(0.5)
        self._producer.poll(0)


def simulation_items(simulation: Any) -> list[StreamItem]:
    """A :class:`~gateway.simulation.simulator.Simulation` as stream items in its publication order."""
    items = []
    for entry in simulation.publish_order:
        if entry.kind == "span":
            items.append(StreamItem("span", simulation.spans[entry.index], entry.time_unix_nano))
        else:
            items.append(StreamItem("reload", simulation.reloads[entry.index].to_dict(), entry.time_unix_nano))
    return items


def publication_delays(ground_truth: Any) -> dict[str, int]:
    """reload_id → publication delay (ns) from a simulator ground truth (a parsed ``ground_truth.json``).

    Raises:
        ValueError: not an object whose ``reloads`` is a list of objects with a text ``reload_id``
            and an integer ``publication_delay_ns``.
    """
    reloads = ground_truth.get("reloads", []) if isinstance(ground_truth, dict) else None
    if not isinstance(reloads, list):
        raise ValueError("ground truth must be a JSON object whose 'reloads' is a list (a simulator ground_truth.json)")
    delays = {}
    for number, row in enumerate(reloads, start=1):
        delay = row.get("publication_delay_ns") or 0 if isinstance(row, dict) else None
        if not isinstance(row, dict) or not isinstance(row.get("reload_id"), str) or not isinstance(delay, int):
            raise ValueError(f"ground truth reload #{number} needs a text reload_id and an integer publication_delay_ns")
        delays[row["reload_id"]] = delay
    return delays
