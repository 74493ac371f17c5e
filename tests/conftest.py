"""Session-scoped real services for the integration tests, and unique names per test.

The broker, in order of preference: an existing one from ``KAFKA_BOOTSTRAP_SERVERS`` (what
``make test`` passes), else ``infra/docker-compose.yml`` through pytest-docker when a Docker
engine answers, else the native KRaft launcher (``infra/kafka.py``) on a free port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "reloadtrace", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
settings.load_profile("reloadtrace")

from infra.kafka import KafkaBroker, create_topics, free_port, wait_for_kafka
from schemas.settings import KafkaSettings
from schemas.topics import TopicNames

REPO = Path(__file__).resolve().parent.parent


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    """pytest-docker: the compose file that gives Kafka (and ClickHouse) to Docker users."""
    return str(REPO / "infra" / "docker-compose.yml")


@pytest.fixture(scope="session")
def kafka_bootstrap_servers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real, running Kafka broker for the whole session."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    if _docker_engine_answers():
        services = request.getfixturevalue("docker_services")
        port = services.port_for("kafka", 9092)
        bootstrap = f"127.0.0.1:{port}"
        wait_for_kafka(bootstrap, timeout_s=120)
        yield bootstrap
        return
    broker = KafkaBroker(port=free_port(), controller_port=free_port(), data_dir=tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def topics(kafka_bootstrap_servers: str) -> TopicNames:
    """Every topic of the pipeline (:meth:`TopicNames.with_configs`) under a prefix unique to this test, created
    with 2 partitions."""
    names = TopicNames(prefix=f"t{uuid.uuid4().hex[:10]}.")
    create_topics(kafka_bootstrap_servers, names.with_configs(), partitions=2)
    return names


@pytest.fixture
def kafka_settings(kafka_bootstrap_servers: str, topics: TopicNames) -> KafkaSettings:
    """Settings pointing at the session broker and this test's topics."""
    return KafkaSettings(bootstrap_servers=kafka_bootstrap_servers, topic_prefix=topics.prefix, partitions=2)
