"""Partition progress: what 'every message before P has been consumed' may claim."""

from __future__ import annotations

from streams.engine import NEVER
from streams.progress import PartitionProgress, overall_progress


def test_lagging_partition_claims_only_the_last_arrival() -> None:
    progress = PartitionProgress(next_offset=0)
    assert progress.progress_ms(clock_skew_ms=0) == NEVER
    progress.consumed(offset=0, arrival_ms=1_000)
    progress.observed_high_watermark(high_watermark=5, wall_ms=9_000)  # 4 messages still unread
    assert progress.progress_ms(clock_skew_ms=200) == 1_000


def test_caught_up_partition_claims_the_query_time_less_the_skew() -> None:
    progress = PartitionProgress(next_offset=0)
    progress.consumed(offset=4, arrival_ms=1_000)
    progress.observed_high_watermark(high_watermark=5, wall_ms=9_000)
    assert progress.progress_ms(clock_skew_ms=200) == 8_800
    progress.observed_high_watermark(high_watermark=7, wall_ms=9_500)  # new messages: not caught up now
    assert progress.progress_ms(clock_skew_ms=200) == 8_800  # but what was true at 9000 stays true


def test_empty_partition_and_overall_progress() -> None:
    empty = PartitionProgress(next_offset=0)
    empty.observed_high_watermark(high_watermark=0, wall_ms=5_000)
    lagging = PartitionProgress(next_offset=0)
    lagging.consumed(offset=0, arrival_ms=3_000)
    assert overall_progress([empty, lagging], clock_skew_ms=0) == 3_000
    assert overall_progress([], clock_skew_ms=0) == NEVER
