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
