"""The recovery benchmark's group check: a revoke while running counts, the clean stop's own revokes do not."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks.bench_recovery import _left_group

RUNNING = b"2026-12-02 01:04:45 INFO __main__: detector DetectorStats(...)\n"
STOPPING = b"2026-12-02 01:04:56 INFO streams.stage: sink: partitions revoked: t.spans.enriched[0]\n"


def test_the_stops_own_revokes_are_not_a_member_leaving(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_bytes(RUNNING + STOPPING)
    assert not _left_group(log, len(RUNNING))


def test_a_revoke_or_a_lost_assignment_while_running_is(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    for line in (STOPPING, b"WARNING streams.stage: enricher: partitions lost (this member left its group): t[1]\n",
                 b"%4|rdkafka| MAXPOLL: Application maximum poll interval (300000ms) exceeded\n"):
        log.write_bytes(line + RUNNING)
        assert _left_group(log, len(line + RUNNING))
