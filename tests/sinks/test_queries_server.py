"""The analyst cookbook on a ClickHouse server: runs when CLICKHOUSE_URL is set, skipped (saying so) otherwise.

Same DDL, same writer, same SQL blocks of docs/queries.md and the same independent answers as
``test_queries.py`` on chDB. Start a server with
``docker compose -f infra/docker-compose.yml up -d clickhouse`` and run
``CLICKHOUSE_URL=clickhouse://default:reloadtrace@127.0.0.1:8123/default pytest tests/sinks/test_queries_server.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.sinks.test_queries import (
    CASES,
    WINDOW_SECONDS,
    assert_rows,
    check_query,
    expect_latency_before_after_reload,
    run,
    since_of,
    since_parameter,
)
from tests.sinks.test_queries_data import AnalystDataset, build_reference_dataset, load_through_sink

CLICKHOUSE_URL = os.environ.get("CLICKHOUSE_URL")

pytestmark = [
    pytest.mark.clickhouse,
    pytest.mark.skipif(
        not CLICKHOUSE_URL,
        reason="no ClickHouse server: set CLICKHOUSE_URL=clickhouse://user:pass@host:8123/db "
        "(docker compose -f infra/docker-compose.yml up -d clickhouse) to run the cookbook on a server",
    ),
]


@pytest.fixture(scope="module")
def dataset() -> AnalystDataset:
    return build_reference_dataset()


@pytest.fixture(scope="module")
def client(dataset: AnalystDataset) -> Iterator[Any]:
    """A fresh database on the server, loaded through the sink with merges stopped; dropped afterwards."""
    from sinks.clickhouse import ClickHouseSink
    from sinks.settings import SinkSettings

    database = f"rt_cookbook_{uuid.uuid4().hex[:10]}"
    settings = SinkSettings(url=urlunsplit(urlsplit(CLICKHOUSE_URL or "")._replace(path=f"/{database}")))
    sink = ClickHouseSink(settings, retry_timeout_ms=5_000)  # applies the DDL
    client = sink.client
    try:
        for table in ("spans_enriched", "reload_events", "anomalies", "dead_letters"):
            client.command(f"SYSTEM STOP MERGES {table}")
        load_through_sink(client, dataset, settings)
        yield client
    finally:
        client.command(f"DROP DATABASE IF EXISTS {database} SYNC")
        sink.close()


@pytest.mark.parametrize(("name", "since"), CASES)
def test_server_query_answers_what_python_computes(client: Any, dataset: AnalystDataset, name: str, since: str) -> None:
    check_query(client, dataset, name, since)


def test_server_latency_before_after_each_reload(client: Any, dataset: AnalystDataset) -> None:
    since_ns = since_of(dataset, "start")
    actual = run(client, "latency_before_after_reload", since=since_parameter(since_ns), window_seconds=WINDOW_SECONDS)
    assert_rows(actual, expect_latency_before_after_reload(dataset, since_ns))
