"""Sink URLs and settings: both backends, secrets kept out of reprs, bad values refused."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from sinks.errors import SinkConfigError
from sinks.settings import SinkSettings, parse_sink_url


def test_default_is_the_embedded_engine_under_data() -> None:
    target = SinkSettings().target()
    assert target.embedded and target.path == "./data/chdb" and target.database == "reloadtrace"


def test_chdb_urls_relative_absolute_and_with_a_database() -> None:
    assert parse_sink_url("chdb:///var/lib/rt").path == "/var/lib/rt"
    target = parse_sink_url("chdb://./x?database=analyst")
    assert (target.path, target.database) == ("./x", "analyst")
    with pytest.raises(SinkConfigError, match="data directory"):
        parse_sink_url("chdb://memory")


def test_server_url_parts_and_defaults() -> None:
    target = parse_sink_url("clickhouse://alice:s3cr%40t@ch.example:9000/traces")
    assert (target.host, target.port, target.username, target.database) == ("ch.example", 9000, "alice", "traces")
    assert target.password.get_secret_value() == "s3cr@t"
    assert "s3cr" not in target.describe()
    assert parse_sink_url("clickhouse://ch").port == 8123
    secure = parse_sink_url("clickhouses://ch")
    assert secure.secure and secure.port == 8443 and secure.database == "reloadtrace"


def test_bad_urls_fail_with_a_clear_error() -> None:
    with pytest.raises(SinkConfigError, match="chdb:// or clickhouse"):
        parse_sink_url("postgres://x:pw@h/db")
    with pytest.raises(SinkConfigError, match="no host"):
        parse_sink_url("clickhouse:///db")
    with pytest.raises(SinkConfigError, match="identifier"):
        parse_sink_url("clickhouse://h/bad-name")


def test_a_password_in_the_url_moves_into_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELOADTRACE_SINK_URL", "clickhouse://bob:hunter2@db:8123/rt")
    monkeypatch.setenv("RELOADTRACE_SINK_FLUSH_ROWS", "123")
    monkeypatch.setenv("RELOADTRACE_SINK_FLUSH_INTERVAL_MS", "250")
    monkeypatch.setenv("RELOADTRACE_SINK_TTL_DAYS", "7")
    settings = SinkSettings()
    assert "hunter2" not in repr(settings) and "hunter2" not in settings.url
    assert isinstance(settings.password, SecretStr) and settings.password.get_secret_value() == "hunter2"
    assert settings.target().password.get_secret_value() == "hunter2"
    assert (settings.flush_rows, settings.flush_interval_ms, settings.ttl_days) == (123, 250, 7)


def test_limits_are_validated() -> None:
    with pytest.raises(ValidationError):
        SinkSettings(flush_rows=0)
    with pytest.raises(ValidationError):
        SinkSettings(url="ftp://nowhere")
    with pytest.raises(ValidationError):
        SinkSettings(database="x;DROP")
