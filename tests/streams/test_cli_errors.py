"""Bad input to a command is one line on stderr and exit 2, never a traceback (issue 14, items 3 and 6)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
    )


@pytest.mark.parametrize(
    "env",
    [
        {"RELOADTRACE_GRACE_PERIOD_MS": "abc"},
        {"RELOADTRACE_GRACE_PERIOD_MS": "5000", "RELOADTRACE_CORRECTION_HORIZON_MS": "1000"},
        {"KAFKA_BOOTSTRAP_SERVERS": "localhost"},
    ],
)
def test_worker_settings_errors_are_one_line(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["worker"], env, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "invalid settings" in result.stderr


def _files(tmp_path: Path, bad_line: str) -> tuple[Path, Path]:
    spans, reloads = tmp_path / "spans.jsonl", tmp_path / "reloads.jsonl"
    spans.write_text(bad_line + "\n")
    reloads.write_text("")
    return spans, reloads


@pytest.mark.parametrize("ground_truth", [[1, 2], {"reloads": "x"}, {"reloads": [{"reload_id": 5}]}, "not json"])
def test_produce_refuses_a_ground_truth_that_is_not_one(ground_truth: object, tmp_path: Path) -> None:
    spans, reloads = _files(tmp_path, "{}")
    truth = tmp_path / "ground_truth.json"
    truth.write_text(ground_truth if isinstance(ground_truth, str) else json.dumps(ground_truth))
    result = run(
        ["produce", "--spans", str(spans), "--reloads", str(reloads), "--order", "event-time", "--ground-truth", str(truth)],
        {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_replay_reports_hostile_lines_literally(tmp_path: Path) -> None:
    line = json.dumps({"trace_id": "[/bold]\x1b]8;;http://evil\x1b\\", "changed_keys": 5})
    spans, reloads = _files(tmp_path, line)
    reloads.write_text(json.dumps({"reload_id": "[/]", "changed_keys": 5}) + "\n")
    result = run(["replay", "--spans", str(spans), "--reloads", str(reloads), "--out", str(tmp_path / "out")], {}, tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "[/bold]" in result.stderr and "\x1b" not in result.stderr and "\\x1b" in result.stderr


def test_produce_prints_skipped_lines_literally(tmp_path: Path) -> None:
    spans, reloads = _files(tmp_path, json.dumps({"trace_id": "[/bold]", "name": "\x1b[2J"}))
    result = run(["produce", "--spans", str(spans), "--reloads", str(reloads)], {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "skipped" in result.stderr and "[/bold]" in result.stderr and "\x1b" not in result.stderr


def test_a_flag_not_given_leaves_the_environment_or_default_in_force(monkeypatch: pytest.MonkeyPatch) -> None:
    from schemas.settings import KafkaSettings
    from streams.cli import _settings

    monkeypatch.setenv("RELOADTRACE_TOPIC_PREFIX", "env.")
    monkeypatch.delenv("RELOADTRACE_PARTITIONS", raising=False)
    from_env = _settings("sink", KafkaSettings, topic_prefix=None, partitions=None)
    assert from_env.topic_prefix == "env." and from_env.partitions == KafkaSettings.model_fields["partitions"].default
    assert _settings("sink", KafkaSettings, topic_prefix="flag.", partitions=7).topic_prefix == "flag."
    assert _settings("sink", KafkaSettings, topic_prefix="").topic_prefix == ""  # given, even if empty


def test_invalid_flags_are_one_line_without_the_value_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from sinks.settings import SinkSettings
    from streams.cli import _settings

    with pytest.raises(typer.Exit) as ended:
        _settings("sink", SinkSettings, url="clickhouse://u:S3cr3t@host:abc/db")
    assert ended.value.exit_code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("reloadtrace sink: invalid settings") and len(stderr.strip().splitlines()) == 1
    assert "S3cr3t" not in stderr
