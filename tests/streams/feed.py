"""Request feeds for detector tests: the messages an enricher would send, with exact watermarks, in any delivery.

A feed is a list of :class:`FeedItem` in publication order. Each span partition's watermark is
computed from the data (the least start among its requests not yet sent, and the least effective
time among the reloads not yet sent), so it always keeps the promise of
:mod:`streams.request_feed` however the rows are chunked or ordered.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import Producer

from schemas.records import ReloadEvent
from schemas.settings import KafkaSettings
from streams.detection import RequestObservation
from streams.request_feed import RequestRow, encode_reload, encode_requests, encode_watermarks

_FOREVER = 2**63 - 1


@dataclass(frozen=True)
class FeedItem:
    key: bytes | None
    value: bytes
    broadcast: bool = False
    """A watermark message: sent to every partition of the feed topic."""


def _row(request: RequestObservation) -> RequestRow:
    return RequestRow(
        request.service_instance_id, request.start_time_unix_nano, request.end_time_unix_nano, request.is_error, request.kind
    )


def feed(
    requests: Sequence[RequestObservation],
    reloads: Sequence[ReloadEvent],
    *,
    source_partitions: int = 1,
    rows_per_message: int = 100,
    sent_after_ns: dict[int, int] | None = None,
    reload_delay_ns: int = 3_000_000_000,
    order: str = "time",
    seed: int = 0,
) -> list[FeedItem]:
    """The feed of these requests and reloads.

    Requests go to span partition ``index % source_partitions`` and are sent at their end plus
    ``sent_after_ns.get(index, 2 s)`` (a request's own lateness); reloads at their effective time
    plus ``reload_delay_ns``. ``order``: ``"time"`` sends everything in send-time order, interleaving
    partitions; ``"partition"`` sends one span partition's rows after another within each send
    round (as a backlog's first answers leave the enricher), with watermarks at the end of each round.
    """
    delays = sent_after_ns or {}
    events: list[tuple[int, int, int, int]] = []  # (send time, kind 0 = request / 1 = reload, partition, index)
    for index, request in enumerate(requests):
        events.append((request.end_time_unix_nano + delays.get(index, 2_000_000_000), 0, index % source_partitions, index))
    for index, reload in enumerate(reloads):
        events.append((reload.effective_time_unix_nano + reload_delay_ns, 1, 0, index))
    events.sort()
    rng = random.Random(seed)
    items: list[FeedItem] = []
    # Per partition, the starts (and reload effective times) still to be sent, for exact watermarks.
    pending: list[list[int]] = [[] for _ in range(source_partitions)]
    for _, kind, partition, index in events:
        pending[partition].append(requests[index].start_time_unix_nano if kind == 0 else reloads[index].effective_time_unix_nano)
    for heap in pending:
        heapq.heapify(heap)
    sent: list[dict[int, int]] = [{} for _ in range(source_partitions)]  # value -> times sent, to drop from pending

    def least_unsent(partition: int) -> int:
        heap, done = pending[partition], sent[partition]
        while heap and done.get(heap[0], 0) > 0:
            done[heap[0]] -= 1
            heapq.heappop(heap)
        return heap[0] if heap else _FOREVER

    round_size = max(1, len(events) // 40)
    for first in range(0, len(events), round_size):
        round_events = events[first : first + round_size]
        if order == "partition":
            round_events = sorted(round_events, key=lambda e: (e[2], e[0]))
        rows: dict[tuple[int, str], list[RequestRow]] = {}
        for _, kind, partition, index in round_events:
            if kind == 1:
                items.append(FeedItem(reloads[index].service_name.encode(), encode_reload(reloads[index])))
                sent[partition][reloads[index].effective_time_unix_nano] = sent[partition].get(reloads[index].effective_time_unix_nano, 0) + 1
            else:
                request = requests[index]
                rows.setdefault((partition, request.service_name), []).append(_row(request))
                sent[partition][request.start_time_unix_nano] = sent[partition].get(request.start_time_unix_nano, 0) + 1
        groups = list(rows.items())
        if order == "shuffled":
            rng.shuffle(groups)
        for (_, service), service_rows in groups:
            for start in range(0, len(service_rows), rows_per_message):
                values, _ = encode_requests(service, service_rows[start : start + rows_per_message])
                items.extend(FeedItem(service.encode(), value) for value in values)
        times = {partition: min(least_unsent(partition), _FOREVER - 1) for partition in range(source_partitions)}
        items.append(FeedItem(None, encode_watermarks(source_partitions, times), broadcast=True))
    return items


def produce_feed(kafka: KafkaSettings, items: Sequence[FeedItem], *, feed_partitions: int) -> None:
    """Publish a feed to the requests-by-service topic (watermarks to every partition)."""
    producer = Producer(kafka.confluent_config() | {"linger.ms": 5, "enable.idempotence": True})
    topic = kafka.topics.requests_by_service
    for item in items:
        if item.broadcast:
            for partition in range(feed_partitions):
                producer.produce(topic, key=item.key, value=item.value, partition=partition)
        else:
            producer.produce(topic, key=item.key, value=item.value)
        producer.poll(0)
    assert producer.flush(30) == 0
