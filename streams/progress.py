"""How far each input partition has been read, in broker arrival time (the engine's progress values).

For a partition, progress P means: every message that arrived before P has been consumed.
Broker log-append timestamps never go back within a partition, so after consuming a message
that arrived at ``a`` the partition's progress is at least ``a``; once the consumer has read up to
the partition's end as of a high-watermark query made at wall time ``w``, anything appended later
arrives after ``w`` (less the allowed clock skew), so progress is ``w - skew``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streams.engine import NEVER


@dataclass
class PartitionProgress:
    """Read position and arrival-time progress of one partition."""

    next_offset: int = -1
    """Offset of the next message to consume (-1 until known)."""
    last_arrival_ms: int = NEVER
    caught_up_at_ms: int = NEVER
    """Wall time of the last high-watermark query that found nothing left to read."""

    def consumed(self, offset: int, arrival_ms: int) -> None:
        self.next_offset = offset + 1
        self.last_arrival_ms = max(self.last_arrival_ms, arrival_ms)

    def observed_high_watermark(self, high_watermark: int, wall_ms: int) -> None:
        """Record a high-watermark query result made at ``wall_ms``."""
        if high_watermark >= 0 and self.next_offset >= high_watermark:
            self.caught_up_at_ms = wall_ms

    def progress_ms(self, clock_skew_ms: int) -> int:
        caught_up = self.caught_up_at_ms - clock_skew_ms if self.caught_up_at_ms != NEVER else NEVER
        return max(self.last_arrival_ms, caught_up)


def overall_progress(partitions: Iterable[PartitionProgress], clock_skew_ms: int) -> int:
    """Progress of a set of partitions: the least advanced one (NEVER when there are none)."""
    values = [partition.progress_ms(clock_skew_ms) for partition in partitions]
    return min(values) if values else NEVER
