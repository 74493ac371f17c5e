"""`reloadtrace replay` fills DIR/anomalies.jsonl with the detection core: same records as detect_offline."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from gateway.simulation.simulator import simulate
from schemas.records import Anomaly
from streams.cli import app
from streams.detection import DetectionSettings, detect_offline
from tests.streams.test_detection_simulated import scenario


def test_replay_writes_the_offline_anomalies_with_their_reload(tmp_path: Path) -> None:
    simulation = simulate(scenario(2))
    spans_path, reloads_path = tmp_path / "spans.jsonl", tmp_path / "reloads.jsonl"
    spans_path.write_bytes(b"".join(orjson.dumps(span, option=orjson.OPT_APPEND_NEWLINE) for span in simulation.spans))
    reloads_path.write_bytes(
        b"".join(orjson.dumps(reload.to_dict(), option=orjson.OPT_APPEND_NEWLINE) for reload in simulation.reloads)
    )
    arguments = ["replay", "--spans", str(spans_path), "--reloads", str(reloads_path), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*arguments, "--no-progress"])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "out" / "anomalies.jsonl").read_bytes().splitlines()
    written = [Anomaly.from_dict(orjson.loads(line)) for line in lines]
    expected = detect_offline(simulation.spans, simulation.reloads, DetectionSettings())
    key = lambda a: (a.anomaly_id, a.severity)
    assert sorted(written, key=key) == sorted(expected, key=key)
    assert {a.metric for a in written} >= {"latency", "error_rate"}
    reload_ids = {reload.reload_id for reload in simulation.reloads}
    assert all(a.reload_id in reload_ids for a in written)
