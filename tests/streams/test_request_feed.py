"""The request feed's wire format: round trips, chunking below the broker limit, and refusal of malformed messages."""

from __future__ import annotations

import pytest

from schemas.errors import InvalidRecordError
from schemas.records import ReloadEvent
from streams.request_feed import (
    ROWS_PER_MESSAGE,
    AppliedReload,
    RequestRow,
    Requests,
    Watermarks,
    encode_reload,
    encode_requests,
    encode_watermarks,
    parse,
)


def test_a_backlog_of_requests_is_split_into_messages_below_the_broker_limit() -> None:
    rows = [
        RequestRow("llm-gateway-1", 1_796_000_000_000_000_000 + n, 1_796_000_000_500_000_000 + n, n % 7 == 0, "SERVER")
        for n in range(2 * ROWS_PER_MESSAGE + 1)
    ]
    messages, skipped = encode_requests("llm-gateway", rows)
    assert len(messages) == 3 and skipped == 0 and all(len(value) < 900_000 for value in messages)
    parsed = [parse(value) for value in messages]
    assert all(isinstance(item, Requests) and item.service_name == "llm-gateway" for item in parsed)
    assert [row for item in parsed for row in item.rows] == rows  # type: ignore[union-attr]


def test_reloads_and_watermarks_round_trip() -> None:
    reload = ReloadEvent("r1", "svc", "model", "v2", 10, 20, "SUCCEEDED", "test", old_version="v1")
    assert parse(encode_reload(reload)) == AppliedReload(reload)
    assert parse(encode_watermarks(4, {0: 5, 3: -(2**63)})) == Watermarks(4, {0: 5, 3: -(2**63)})


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"{not json",
        b"[1, 2]",
        b'{"service_name": "s", "requests": [["i", 5, 1, false, "SERVER"]]}',  # ends before it starts
        b'{"service_name": "s", "requests": [["i", 1, 5, 0, "SERVER"]]}',  # is_error not a bool
        b'{"service_name": "s", "requests": [["i", true, 5, false, "SERVER"]]}',  # a bool is not a time
        b'{"service_name": "s", "requests": [["i", 1, 99999999999999999999, false, "SERVER"]]}',
        b'{"service_name": "s", "requests": "no"}',
        b'{"service_name": "s"}',
        b'{"requests": []}',
        b'{"service_name": "", "requests": []}',
        b'{"service_name": "s", "reload": {"reload_id": "x"}}',
        b'{"service_name": "s", "reload": []}',
        (b'{"service_name": "t", "reload": {"reload_id": "r", "service_name": "s", "component": "c", "new_version": "v",'
        b' "requested_time_unix_nano": 1, "effective_time_unix_nano": 2, "status": "SUCCEEDED", "source": ""}}'),
        b'{"watermarks": {"partitions": 2, "times": {"2": 5}}}',  # partition out of range
        b'{"watermarks": {"partitions": 0, "times": {}}}',
        b'{"watermarks": {"partitions": 2, "times": {"-1": 5}}}',
        b'{"watermarks": {"partitions": 2, "times": {"0": "5"}}}',
        b'{"watermarks": {"partitions": 2, "times": {"\xd9\xa1": 5}}}',  # a non-ASCII digit
        b'{"watermarks": [1]}',
    ],
)
def test_malformed_messages_are_refused(value: bytes | None) -> None:
    with pytest.raises(InvalidRecordError):
        parse(value)


def test_rows_with_huge_names_are_chunked_by_size_and_a_row_that_cannot_fit_is_left_out() -> None:
    big = [RequestRow("i" * 20_000 + str(n), n, n + 1, False, "SERVER") for n in range(200)]  # ~4 MB of rows
    rows = [*big[:100], RequestRow("\x00" * 400_000, 1, 2, True, "SERVER"), *big[100:]]  # 2.4 MB escaped
    messages, skipped = encode_requests("svc", rows, max_bytes=1_000_000 - 512)
    assert skipped == 1 and all(len(value) <= 1_000_000 - 512 for value in messages)
    assert [row for value in messages for row in parse(value).rows] == big  # type: ignore[union-attr]


def test_no_rows_no_message() -> None:
    assert encode_requests("svc", []) == ([], 0)
