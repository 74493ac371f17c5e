"""The Collector launcher without building anything: config shapes, the Go-less paths, a missing binary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.otelcol import collector as launcher
from infra.otelcol.collector import Collector, CollectorError, collector_config, kafka_exporter, kafka_receiver

REPO = Path(__file__).resolve().parents[2]


def test_config_builders_refuse_unknown_encodings_and_split_brokers() -> None:
    with pytest.raises(ValueError, match="encoding"):
        kafka_exporter("127.0.0.1:9092", encoding="avro")
    with pytest.raises(ValueError, match="encoding"):
        kafka_receiver("127.0.0.1:9092", topic="t", encoding="json", group_id="g")
    exporter = kafka_exporter(" a:1, b:2 ", encoding="otlp_json", partition_traces_by_id=True)
    assert exporter["brokers"] == ["a:1", "b:2"]
    assert exporter["traces"] == {"topic": "otlp_spans", "encoding": "otlp_json"}
    config = collector_config({"otlp": {}}, {"kafka": exporter}, {"traces": (["otlp"], ["kafka"])})
    assert config["service"]["pipelines"] == {"traces": {"receivers": ["otlp"], "exporters": ["kafka"]}}
    assert config["service"]["telemetry"]["metrics"] == {"level": "none"}  # no port 8888 to collide on


def test_without_go_build_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "go_binary", lambda: None)
    with pytest.raises(CollectorError, match="Go"):
        launcher.build()
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "go").exists())
    done = subprocess.run([sys.executable, "-m", "infra.otelcol", "build", "--if-go"], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PATH": path, "GOROOT": ""}, timeout=60)
    assert done.returncode == 0 and "Go is not on PATH" in done.stdout


def test_a_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    collector = Collector({}, tmp_path, binary=tmp_path / "nope")
    with pytest.raises(CollectorError, match="python -m infra.otelcol build"):
        collector.start()


def test_a_failed_build_does_not_stop_make_test_but_is_reported(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def failing(**_kwargs):
        raise CollectorError("go build of the Collector failed (exit 1): module lookup disabled")

    monkeypatch.setattr(launcher, "go_binary", lambda: "/usr/bin/go")
    monkeypatch.setattr(launcher, "build", failing)
    assert launcher.main(["build", "--if-go"]) == 0
    assert "the interop tests will fail with it" in capsys.readouterr().err
    assert launcher.main(["build"]) == 1
