"""Kafka topic names of the record contract, with an optional prefix for shared clusters and tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

SPANS = "spans"
OTLP_SPANS = "otlp_spans"
RELOADS = "reloads"
SPANS_ENRICHED = "spans.enriched"
RELOAD_ANOMALIES = "reload.anomalies"
DEAD_LETTER = "dead-letter"
RELOAD_VERDICTS = "reload.verdicts"
REQUESTS_BY_SERVICE = "reloadtrace.requests-by-service"

# The worker orders spans and reloads by broker arrival time, so both input topics must carry
# log-append timestamps; reloads are the version history and are never deleted.
_ARRIVAL_ORDERED = {"message.timestamp.type": "LogAppendTime"}
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    SPANS: _ARRIVAL_ORDERED,
    OTLP_SPANS: _ARRIVAL_ORDERED,  # what the Collector's kafkaexporter writes (its default topic name)
    RELOADS: {**_ARRIVAL_ORDERED, "retention.ms": "-1", "retention.bytes": "-1"},
    SPANS_ENRICHED: {},
    RELOAD_ANOMALIES: {},
    RELOAD_VERDICTS: {"cleanup.policy": "compact"},  # the latest look of each reload (keyed by reload_id) is its state
    DEAD_LETTER: {},
    REQUESTS_BY_SERVICE: {},
}

_LEGAL = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class TopicNames:
    """The pipeline's topics, each ``prefix + name``. A prefix such as ``"staging."`` isolates deployments.

    Raises:
        ValueError: the prefix holds characters Kafka does not allow in topic names.
    """

    prefix: str = ""

    def __post_init__(self) -> None:
        if not set(self.prefix) <= _LEGAL:
            raise ValueError(f"topic prefix {self.prefix!r} may only hold letters, digits, '.', '_' and '-'")

    @property
    def spans(self) -> str:
        return self.prefix + SPANS

    @property
    def otlp_spans(self) -> str:
        """OTLP ``ExportTraceServiceRequest`` messages, as an OpenTelemetry Collector's kafkaexporter writes them."""
        return self.prefix + OTLP_SPANS

    @property
    def reloads(self) -> str:
        return self.prefix + RELOADS

    @property
    def spans_enriched(self) -> str:
        return self.prefix + SPANS_ENRICHED

    @property
    def reload_anomalies(self) -> str:
        return self.prefix + RELOAD_ANOMALIES

    @property
    def reload_verdicts(self) -> str:
        """Every look of the detector at every reload (ReloadVerdict), keyed by reload_id."""
        return self.prefix + RELOAD_VERDICTS

    @property
    def dead_letter(self) -> str:
        return self.prefix + DEAD_LETTER

    @property
    def requests_by_service(self) -> str:
        """Internal: request summaries and reloads re-keyed by service for the regression detector."""
        return self.prefix + REQUESTS_BY_SERVICE

    def all(self) -> Iterator[str]:
        """The topics of the record contract: every one but the internal request feed (:meth:`with_configs` has all)."""
        yield from (
            self.spans, self.otlp_spans, self.reloads, self.spans_enriched, self.reload_anomalies, self.reload_verdicts,
            self.dead_letter,
        )

    def with_configs(self) -> dict[str, dict[str, str]]:
        """Every topic the pipeline uses (internal ones too) with the configs it relies on."""
        return {self.prefix + name: dict(config) for name, config in TOPIC_CONFIGS.items()}
