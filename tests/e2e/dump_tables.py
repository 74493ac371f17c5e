"""Print, as JSON, what a pipeline left in ClickHouse: ``python -m tests.e2e.dump_tables SINK_URL OUT.json``.

A separate process, because chDB lets one process open one data path: the test process reads
the worker's engine only after the worker has exited, and never holds it itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from sinks.report import open_report_client


def dump(sink_url: str) -> dict:
    client, _ = open_report_client(sink_url)
    try:
        def rows(sql: str) -> list:
            return [list(row) for row in client.query(sql).result_rows]

        return {
            "spans": rows(
                "SELECT trace_id, span_id, versions, versions_at_end, reload_ids, mid_flight, mid_flight_reload_ids,"
                " enrichment_revision FROM spans_enriched FINAL"
            ),
            "span_rows_without_final": rows("SELECT count() FROM spans_enriched")[0][0],
            "reload_ids": [row[0] for row in rows("SELECT reload_id FROM reload_events FINAL")],
            "dead_letters": rows(
                "SELECT source_topic, source_partition, source_offset, error_kind, stage, hex(ifNull(raw_value, '')),"
                " source_record FROM dead_letters FINAL"
            ),
            "lossless": rows(
                "SELECT trace_id, span_id, trace_state, scope_name, scope_version, `Events.Name`, `Links.SpanId`"
                " FROM spans_enriched FINAL"
            ),
            "anomalies": rows("SELECT anomaly_id, reload_id, metric, toString(severity) FROM anomalies FINAL"),
        }
    finally:
        client.close()


def main() -> int:
    sink_url, out = sys.argv[1], Path(sys.argv[2])
    out.write_bytes(orjson.dumps(dump(sink_url)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
