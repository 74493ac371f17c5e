"""The enricher's request feed to the detector: chunked so a backlog never makes a message the broker refuses."""

from __future__ import annotations

import orjson

from streams.enricher import REQUEST_ROWS_PER_MESSAGE, KafkaRequestFeed


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery) -> None:
        self.sent.append((topic, key, value))

    def poll(self, timeout: float) -> int:
        return 0


def test_a_backlog_of_requests_is_split_into_messages_below_the_broker_limit() -> None:
    producer = _Producer()
    feed = KafkaRequestFeed(producer, "requests", on_delivery=lambda *args: None)  # type: ignore[arg-type]
    rows = [("llm-gateway-1", 1_796_000_000_000_000_000 + n, 1_796_000_000_500_000_000 + n, n % 7 == 0, "SERVER")
            for n in range(2 * REQUEST_ROWS_PER_MESSAGE + 1)]
    feed.requests("llm-gateway", rows)
    assert len(producer.sent) == 3
    assert all(key == b"llm-gateway" and len(value) < 900_000 for _, key, value in producer.sent)
    decoded = [orjson.loads(value) for _, _, value in producer.sent]
    assert all(message["service_name"] == "llm-gateway" for message in decoded)
    assert [tuple(row) for message in decoded for row in message["requests"]] == rows


def test_no_rows_no_message() -> None:
    producer = _Producer()
    KafkaRequestFeed(producer, "requests", on_delivery=lambda *args: None).requests("svc", [])  # type: ignore[arg-type]
    assert producer.sent == []


def test_rows_with_huge_names_are_chunked_by_size_and_a_row_that_cannot_fit_is_not_sent() -> None:
    producer = _Producer()
    feed = KafkaRequestFeed(producer, "requests", on_delivery=lambda *args: None)  # type: ignore[arg-type]
    big = [("i" * 20_000 + str(n), n, n + 1, False, "SERVER") for n in range(200)]  # ~4 MB of rows
    feed.requests("svc", [*big[:100], ("\x00" * 400_000, 1, 2, True, "SERVER"), *big[100:]])  # 2.4 MB escaped
    assert all(len(key) + len(value) <= 1_000_000 - 512 for _, key, value in producer.sent)
    sent = [tuple(row) for _, _, value in producer.sent for row in orjson.loads(value)["requests"]]
    assert sent == big and feed.unsent == 1


def test_a_reload_too_large_for_the_topic_is_not_sent() -> None:
    from schemas.records import ReloadEvent
    from streams.engine import ReloadArrival

    producer = _Producer()
    feed = KafkaRequestFeed(producer, "requests", on_delivery=lambda *args: None)  # type: ignore[arg-type]
    reload = ReloadEvent("r", "svc", "model", "\x01" * 300_000, 1, 2, "SUCCEEDED", "op")  # 1.8 MB as JSON
    feed.reload(ReloadArrival(reload, 1, 0, 0))
    assert producer.sent == [] and feed.unsent == 1
    feed.reload(ReloadArrival(ReloadEvent("r2", "svc", "model", "v2", 1, 2, "SUCCEEDED", "op"), 1, 0, 1))
    assert len(producer.sent) == 1
