"""The enricher's commit state: the applied position written by every earlier version still restores."""

from __future__ import annotations

import pytest

from schemas.settings import KafkaSettings
from streams.enricher import SpanEnricher, _applied_position
from streams.settings import WorkerSettings
from streams.timeline import VersionTimeline


@pytest.fixture
def enricher() -> SpanEnricher:
    return SpanEnricher(KafkaSettings(), WorkerSettings(), timeline_factory=VersionTimeline)


def test_version_1_metadata_restores_its_applied_position(enricher: SpanEnricher) -> None:
    state = enricher.upgrade_state({"v": 1, "w": [1_700_000_000_000, 2, 41]})
    assert _applied_position(state) == (True, (1_700_000_000_000, 2, 41))
    assert enricher.upgrade_state({"v": 1, "w": None}) is not None
    assert _applied_position(enricher.upgrade_state({"v": 1, "w": None})) == (True, None)
    assert enricher.upgrade_state({"v": 2, "frontier": [1, 2, 3]}) is None  # not version 1: read as it is


def test_version_2_state_restores_its_applied_position() -> None:
    assert _applied_position({"frontier": [1_700_000_000_000, 0, 7], "max_emitted_start": None}) == (
        True,
        (1_700_000_000_000, 0, 7),
    )
    assert _applied_position({"frontier": None, "max_emitted_start": 5}) == (True, None)


def test_missing_or_unreadable_state_means_no_applied_position() -> None:
    assert _applied_position(None) == (False, None)
    assert _applied_position({"max_emitted_start": 5}) == (False, None)
    assert _applied_position({"frontier": ["x", 1, 2]}) == (False, None)
