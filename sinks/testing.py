"""Test doubles shipped with the sinks: deterministic contract records and an in-memory destination."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from sinks.base import BatchingSink, SinkBatch

BASE_TIME_UNIX_NANO = 1_764_547_200_000_000_000  # 2025-12-01T00:00:00Z
_SERVICES = ("llm-gateway", "api-gateway", "search")
_MODELS = ("gpt-4o-2024-08-06", "claude-sonnet-4", "llama-3.1-70b")


def enriched_spans(
    count: int, *, seed: int = 0, base_time_unix_nano: int = BASE_TIME_UNIX_NANO, revision: int = 0
) -> list[dict[str, Any]]:
    """``count`` valid EnrichedSpan records (Avro field names), the same for the same arguments.

    Spans are 1 ms apart, 4 spans per trace, with string, int, float and bool attributes.
    """
    generator = random.Random(seed)
    records = []
    for index in range(count):
        start = base_time_unix_nano + index * 1_000_000
        trace = index // 4
        service = _SERVICES[trace % len(_SERVICES)]
        error = generator.random() < 0.05
        records.append(
            {
                "trace_id": f"{seed:08x}{trace:024x}",
                "span_id": f"{index + 1:016x}",
                "parent_span_id": None if index % 4 == 0 else f"{index - index % 4 + 1:016x}",
                "name": "chat" if index % 4 == 0 else "llm.call",
                "kind": "SERVER" if index % 4 == 0 else "CLIENT",
                "service_name": service,
                "service_instance_id": f"{service}-{index % 2}",
                "start_time_unix_nano": start,
                "end_time_unix_nano": start + generator.randint(1_000_000, 300_000_000),
                "status_code": "ERROR" if error else "OK",
                "status_message": "upstream timeout" if error else None,
                "attributes": {
                    "gen_ai.request.model": _MODELS[index % len(_MODELS)],
                    "gen_ai.request.temperature": generator.choice((0.0, 0.2, 0.7, 1.0)),
                    "gen_ai.usage.input_tokens": generator.randint(10, 4000),
                    "gen_ai.request.stream": index % 3 == 0,
                    "http.route": "/v1/chat",
                },
                "resource_attributes": {"service.version": "1.4.2", "deployment.environment.name": "test"},
                "versions": {"model": f"m{(index // 1000) % 3}", "config": "c1"},
                "versions_at_end": {"model": f"m{(index // 1000) % 3}", "config": "c1"},
                "reload_ids": {"model": f"reload-{(index // 1000) % 3}", "config": "reload-c1"},
                "mid_flight": False,
                "mid_flight_reload_ids": [],
                "enrichment_revision": revision,
            }
        )
    return records


class ListSink(BatchingSink):
    """A sink that keeps every written batch in memory (for unit tests of the batching contract)."""

    def __init__(self, *, fail_times: int = 0, error: Exception | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.written: list[SinkBatch] = []
        self._fail_times = fail_times
        self._error = error

    def write(self, batch: SinkBatch) -> None:
        if self._fail_times > 0:
            self._fail_times -= 1
            raise self._error or RuntimeError("injected failure")
        self.written.append(batch)

    def rows(self, table: str) -> Sequence[dict[str, Any]]:
        return [item.value for batch in self.written if batch.table == table for item in batch.items]
