"""The same writer against a ClickHouse server: runs when CLICKHOUSE_URL is set, skipped (saying so) otherwise.

Start one with ``docker compose -f infra/docker-compose.yml up -d clickhouse`` and run
``CLICKHOUSE_URL=clickhouse://default:reloadtrace@127.0.0.1:8123/default pytest tests/sinks/test_clickhouse_server.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from sinks.base import SinkRecord
from sinks.clickhouse import ClickHouseSink
from sinks.settings import SinkSettings
from sinks.testing import enriched_spans
from tests.sinks.test_clickhouse_sink import land, message

CLICKHOUSE_URL = os.environ.get("CLICKHOUSE_URL")

pytestmark = [
    pytest.mark.clickhouse,
    pytest.mark.skipif(
        not CLICKHOUSE_URL,
        reason="no ClickHouse server: set CLICKHOUSE_URL=clickhouse://user:pass@host:8123/db "
        "(docker compose -f infra/docker-compose.yml up -d clickhouse) to run the server-path tests",
    ),
]


@pytest.fixture
def server_sink() -> Iterator[ClickHouseSink]:
    database = f"rt_test_{uuid.uuid4().hex[:10]}"
    url = urlunsplit(urlsplit(CLICKHOUSE_URL or "")._replace(path=f"/{database}"))  # a database per test
    sink = ClickHouseSink(SinkSettings(url=url, retry_timeout_ms=5_000))
    assert sink.database == database
    try:
        yield sink
    finally:
        sink.client.command(f"DROP DATABASE IF EXISTS {database} SYNC")
        sink.close()


def test_server_same_batch_twice_keeps_counts_exact(server_sink: ClickHouseSink) -> None:
    items = [message("spans_enriched", span, i % 2, i) for i, span in enumerate(enriched_spans(300))]
    land(server_sink, items)
    land(server_sink, items)
    assert server_sink.count("spans_enriched", final=False) == 300
    assert server_sink.query("SELECT sum(spans) FROM span_minutes")[0][0] == 600


def test_server_highest_revision_wins_and_rejects_are_dead_lettered(server_sink: ClickHouseSink) -> None:
    spans = enriched_spans(20)
    land(server_sink, [message("spans_enriched", span, 0, i) for i, span in enumerate(spans)])
    backwards = dict(spans[3], end_time_unix_nano=spans[3]["start_time_unix_nano"] - 1, enrichment_revision=1)
    land(
        server_sink,
        [message("spans_enriched", dict(spans[0], enrichment_revision=1, versions={"model": "late"}), 0, 50),
         message("spans_enriched", backwards, 0, 51),
         SinkRecord("spans_enriched", dict(spans[5], enrichment_revision=-1), "tools")],
    )
    assert server_sink.count("spans_enriched") == 20
    assert server_sink.query(
        "SELECT enrichment_revision, model_version FROM spans_enriched FINAL WHERE span_id = {id:String}", {"id": spans[0]["span_id"]}
    ) == [(1, "late")]
    kinds = sorted(row[0] for row in server_sink.query("SELECT error_kind FROM dead_letters FINAL"))
    assert kinds == ["rejected_by_sink", "unconvertible"]
