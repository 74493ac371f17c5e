"""Kafka topic names of the record contract, with an optional prefix for shared clusters and tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

SPANS = "spans"
RELOADS = "reloads"
SPANS_ENRICHED = "spans.enriched"
RELOAD_ANOMALIES = "reload.anomalies"
DEAD_LETTER = "dead-letter"

_LEGAL = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class TopicNames:
    """The five topics, each ``prefix + name``. A prefix such as ``"staging."`` isolates deployments.

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
    def reloads(self) -> str:
        return self.prefix + RELOADS

    @property
    def spans_enriched(self) -> str:
        return self.prefix + SPANS_ENRICHED

    @property
    def reload_anomalies(self) -> str:
        return self.prefix + RELOAD_ANOMALIES

    @property
    def dead_letter(self) -> str:
        return self.prefix + DEAD_LETTER

    def all(self) -> Iterator[str]:
        yield from (self.spans, self.reloads, self.spans_enriched, self.reload_anomalies, self.dead_letter)
