"""The native launcher: a real broker comes up on a chosen port, serves, and stops leaving nothing behind."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from infra.kafka import KafkaBroker, KafkaLauncherError, create_topics, free_port, main, port_is_open
from schemas.topics import TopicNames

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_up_creates_topics_and_down_leaves_no_process_or_port(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    port, controller_port = free_port(), free_port()
    args = ["--port", str(port), "--controller-port", str(controller_port), "--data-dir", str(tmp_path), "--partitions", "3"]
    assert main(["up", *args, "--topic-prefix", "launcher."]) == 0
    broker = KafkaBroker(port=port, controller_port=controller_port, data_dir=tmp_path)
    pid = broker.pid()
    assert pid is not None and psutil.pid_exists(pid)
    assert main(["status", *args]) == 0

    from confluent_kafka.admin import AdminClient

    metadata = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=10)
    for name in TopicNames(prefix="launcher.").all():
        assert len(metadata.topics[name].partitions) == 3
    create_topics(broker.bootstrap_servers, ["launcher.spans"], partitions=3)  # idempotent

    assert main(["down", *args]) == 0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not port_is_open("127.0.0.1", port) and not port_is_open("127.0.0.1", controller_port)
    assert main(["status", *args]) == 3
    capsys.readouterr()


def test_restart_keeps_data_and_a_taken_port_is_refused(tmp_path: Path) -> None:
    broker = KafkaBroker(port=free_port(), controller_port=free_port(), data_dir=tmp_path)
    broker.start()
    try:
        create_topics(broker.bootstrap_servers, ["kept"], partitions=1)
        broker.kill()
        broker.start()
        from confluent_kafka.admin import AdminClient

        assert "kept" in AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=10).topics
        squatter = KafkaBroker(port=broker.port, controller_port=free_port(), data_dir=tmp_path / "other")
        with pytest.raises(KafkaLauncherError, match="already in use"):
            squatter.start()
    finally:
        broker.stop()
    assert not broker.is_running()


def test_run_stops_the_broker_even_when_the_command_fails(tmp_path: Path) -> None:
    port = free_port()
    code = main(["run", "--port", str(port), "--controller-port", str(free_port()), "--data-dir", str(tmp_path), "--", "false"])
    assert code == 1
    assert not port_is_open("127.0.0.1", port)
    assert not KafkaBroker(port=port, data_dir=tmp_path).is_running()


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage tool takes ``-t -abc`` for a missing argument: an id starting with "-" failed 1 broker start in 64."""
    import uuid

    import infra.kafka as kafka_module

    # 0xf8 as first byte: URL-safe base64 starts with "-"; then an ordinary id
    draws = iter([uuid.UUID(bytes=bytes([0xF8]) + bytes(15)), uuid.UUID(bytes=bytes([0x10]) + bytes(15))])
    monkeypatch.setattr(kafka_module.uuid, "uuid4", lambda: next(draws))
    cluster_id = kafka_module._kafka_uuid()
    assert not cluster_id.startswith("-")
    assert cluster_id == "EAAAAAAAAAAAAAAAAAAAAA"
