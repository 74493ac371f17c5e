"""A correction re-reads the span bytes the enricher dropped, Avro and OTLP alike, and counts a span gone from the log."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.kafka_io import MessageView
from schemas.otlp import span_otlp_request
from schemas.records import ReloadEvent
from schemas.settings import KafkaSettings
from streams.enricher import SpanEnricher
from streams.progress import PartitionProgress
from streams.settings import WorkerSettings
from streams.testing import ListOutbox
from streams.timeline import VersionTimeline
from tests.schemas.test_codec import SPAN

KAFKA = KafkaSettings()
T0_MS = SPAN["start_time_unix_nano"] // 1_000_000  # the span arrives as it starts
GRACE_MS = 1_000


class LogRuntime:
    """What the enricher asks of its runtime: partitions, arrival progress, and the log to read back."""

    def __init__(self, topics: list[str], log: dict[tuple[str, int, int], MessageView]) -> None:
        self.log = log
        self.reads: list[tuple[str, int, set[int]]] = []
        self.progresses = {(topic, 0): PartitionProgress() for topic in topics}

    def partition_count(self, topic: str) -> int:
        return 1

    def active_partitions(self) -> list[tuple[str, int]]:
        return sorted(key for key in self.progresses if key[0] != KAFKA.topics.reloads)

    def progress(self, topic: str, partition: int) -> PartitionProgress | None:
        return self.progresses.get((topic, partition))

    def arrive(self, at_ms: int) -> None:
        for progress in self.progresses.values():
            progress.consumed(max(progress.next_offset, 0), at_ms)

    def read(self, topic: str, partition: int, offsets: set[int]) -> dict[int, Any]:
        self.reads.append((topic, partition, set(offsets)))
        return {offset: self.log[(topic, partition, offset)] for offset in offsets if (topic, partition, offset) in self.log}


def late_reload() -> MessageView:
    """A model reload effective before the span started, arriving after the span was answered."""
    reload = ReloadEvent(
        reload_id="r-late", service_name=SPAN["service_name"], component="model", new_version="m2",
        requested_time_unix_nano=SPAN["start_time_unix_nano"] - 10**9,
        effective_time_unix_nano=SPAN["start_time_unix_nano"] - 10**9, status="SUCCEEDED", source="test",
    )  # fmt: skip
    return MessageView(KAFKA.topics.reloads, 0, 0, KAFKA.codec("ReloadEvent").encode(reload.to_dict()), timestamp_ms=T0_MS + 5_000)


def run(encoding: str, spans: list[dict[str, Any]], *, keep_log: bool = True) -> tuple[SpanEnricher, LogRuntime, list[dict[str, Any]]]:
    """Span(s) answered, then a late reload corrects them; the enriched records published, in order."""
    settings = WorkerSettings(
        grace_period_ms=GRACE_MS, refetch_corrections=True, detection_enabled=False, otlp_enabled=encoding != "avro",
        max_span_age_ms=10**12, max_future_ms=10**12,
    )  # fmt: skip
    enricher = SpanEnricher(KAFKA, settings, timeline_factory=VersionTimeline)
    if encoding == "avro":
        topic, value = KAFKA.topics.spans, KAFKA.codec("Span").encode(spans[0])
    else:
        topic, value = KAFKA.topics.otlp_spans, span_otlp_request(spans).SerializeToString()
    message = MessageView(topic, 0, 7, value, spans[0]["trace_id"].encode(), timestamp_ms=T0_MS)
    runtime = LogRuntime(list(enricher.topics()) + [KAFKA.topics.reloads], {(topic, 0, 7): message} if keep_log else {})
    enricher.start(runtime)  # type: ignore[arg-type]
    outbox = ListOutbox()
    enricher.ingest([message], [T0_MS], outbox)
    runtime.arrive(T0_MS + GRACE_MS + 1)
    enricher.advance(outbox)  # revision 0 of every span: its bytes are dropped
    enricher.ingest_table([late_reload()], [T0_MS + 5_000], outbox)
    runtime.arrive(T0_MS + 5_000 + GRACE_MS + 1)
    enricher.advance(outbox)
    codec = KAFKA.codec("EnrichedSpan")
    published = [codec.decode(value) for topic, _, value in _published(outbox) if topic == KAFKA.topics.spans_enriched]
    return enricher, runtime, published


def _published(outbox: ListOutbox) -> list[tuple[str, bytes | None, bytes]]:
    return [(topic, key, value) for topic, key, value, *_ in outbox.published]


@pytest.mark.parametrize("encoding", ["avro", "otlp_proto"])
def test_a_correction_re_reads_the_dropped_span_and_publishes_it_whole(encoding: str) -> None:
    spans = [SPAN] if encoding == "avro" else [SPAN, dict(SPAN, span_id="00f067aa0ba902b8", name="second")]
    enricher, runtime, published = run(encoding, spans)
    assert runtime.reads == [(KAFKA.topics.spans if encoding == "avro" else KAFKA.topics.otlp_spans, 0, {7})]
    assert enricher.stats.refetches == 1 and enricher.stats.unfetchable == 0
    first, corrected = published[: len(spans)], published[len(spans) :]
    assert [record["enrichment_revision"] for record in first] == [0] * len(spans)
    assert [record["versions"] for record in first] == [{}] * len(spans)
    assert [record["enrichment_revision"] for record in corrected] == [1] * len(spans)
    assert [record["versions"] for record in corrected] == [{"model": "m2"}] * len(spans)
    for span, record in zip(spans, corrected, strict=True):  # the span itself, as first read
        assert {name: record[name] for name in span} == span


def test_a_span_gone_from_the_log_is_counted_and_not_published() -> None:
    enricher, runtime, published = run("avro", [SPAN], keep_log=False)
    assert runtime.reads == [(KAFKA.topics.spans, 0, {7})]
    assert enricher.stats.unfetchable == 1
    assert [record["enrichment_revision"] for record in published] == [0]
