"""The worker's child processes: exact settings hand-over, lifetime (crash, stop, parent death), a real sink child."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from unittest.mock import patch

import pytest
from confluent_kafka import Producer
from pydantic import SecretStr

from schemas.settings import KafkaSettings
from sinks.errors import SinkConfigError, SinkEngineBusyError
from sinks.settings import SinkSettings
from streams import components
from streams.app import ChildProcessService
from streams.detection import DetectionSettings
from streams.detector import DetectorSettings
from tests.streams.test_app import FakeApp

REPO = Path(__file__).resolve().parents[2]


def _document(text: str) -> dict:
    return json.loads(text)


def test_the_spec_carries_the_exact_settings_secrets_included() -> None:
    kafka = KafkaSettings(
        bootstrap_servers="broker-a:9092,broker-b:9092",
        topic_prefix="prod.",
        partitions=12,
        kafka_sasl_username="svc",
        kafka_sasl_password=SecretStr("s3cret"),
    )
    sink = SinkSettings(url="clickhouse://writer:pw@ch.internal:8123/traces", flush_rows=1234, group_id="g-sink")
    document = _document(components.spec("sink", kafka, sink))

    assert document["component"] == "sink"
    rebuilt_kafka = KafkaSettings(**document["kafka"])
    rebuilt_sink = SinkSettings(**document["settings"])
    assert rebuilt_kafka.confluent_config() == kafka.confluent_config()  # the password survived
    assert rebuilt_kafka.topics == kafka.topics and rebuilt_kafka.partitions == 12
    assert rebuilt_sink.target() == sink.target()
    assert rebuilt_sink.password is not None and rebuilt_sink.password.get_secret_value() == "pw"
    assert (rebuilt_sink.flush_rows, rebuilt_sink.group_id) == (1234, "g-sink")


def test_the_spec_of_the_detector_keeps_detection_thresholds() -> None:
    detection = DetectionSettings(look_schedule_ms=(1_000, 4_000, 9_000), alpha=0.01, window_ms=60_000)
    document = _document(components.spec("detector", KafkaSettings(), DetectorSettings(group_id="d"), detection))
    rebuilt = DetectionSettings(**document["detection"])
    assert rebuilt == detection
    assert DetectorSettings(**document["settings"]).group_id == "d"


def test_an_unknown_component_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown component"):
        components.spec("enricher", KafkaSettings(), DetectorSettings())


def test_the_entry_point_refuses_bad_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(components.SPEC_ENV, raising=False)
    assert components.main(["sink"]) == 2
    monkeypatch.setenv(components.SPEC_ENV, components.spec("detector", KafkaSettings(), DetectorSettings()))
    assert components.main(["sink"]) == 2  # a spec for another component
    assert components.main(["nope"]) == 2


def test_opening_the_sink_waits_while_another_process_holds_the_engine() -> None:
    attempts = []

    def open_sink() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise SinkEngineBusyError("cannot open chdb://x: another process holds its data directory")
        return "opened"

    import threading

    assert components._open_sink_waiting(open_sink, threading.Event(), wait_s=10) == "opened"
    assert len(attempts) == 3


def test_opening_the_sink_fails_at_once_for_other_errors_and_after_the_wait() -> None:
    import threading

    def bad_url() -> None:
        raise SinkConfigError("cannot parse sink URL 'ftp://x'")

    started = time.monotonic()
    with pytest.raises(SinkConfigError, match="cannot parse"):
        components._open_sink_waiting(bad_url, threading.Event(), wait_s=10)
    assert time.monotonic() - started < 1

    def held() -> None:
        raise SinkEngineBusyError("Cannot lock file")

    with pytest.raises(SinkConfigError, match="lock"):
        components._open_sink_waiting(held, threading.Event(), wait_s=0.6)


def test_a_sink_child_waits_for_the_directory_a_stopping_process_still_holds(tmp_path: Path) -> None:
    url = f"chdb://{tmp_path / 'chdb'}"
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            f"from sinks.clickhouse import open_client; client = open_client({url!r}); print('held', flush=True);"
            " import time; time.sleep(4)"
        )],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code = (
            "import sys, threading, time\n"
            "from sinks.clickhouse import open_client\n"
            "from sinks.errors import SinkEngineBusyError\n"
            "from streams.components import _open_sink_waiting\n"
            "try:\n"
            "    open_client(sys.argv[1])\n"
            "except SinkEngineBusyError:\n"
            "    print('busy')\n"
            "started = time.monotonic()\n"
            "_open_sink_waiting(lambda: open_client(sys.argv[1]), threading.Event(), wait_s=60)\n"
            "print('opened after', round(time.monotonic() - started, 1))\n"
        )
        waited = subprocess.run([sys.executable, "-c", code, url], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
        lines = waited.stdout.split("\n")
        assert lines[0] == "busy", waited.stdout + waited.stderr[-2000:]
        assert lines[1].startswith("opened after"), waited.stdout + waited.stderr[-2000:]
        assert holder.wait(30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_child_that_exits_crashes_the_worker() -> None:
    async def scenario() -> list[BaseException]:
        app = FakeApp()
        service = ChildProcessService("sink", "{}", app, argv=[sys.executable, "-c", "raise SystemExit(3)"])  # type: ignore[arg-type]
        await service.on_start()
        await asyncio.wait_for(app.event.wait(), timeout=30)
        await service.on_stop()
        return app.crashed

    (error,) = asyncio.run(scenario())
    assert "sink process exited with code 3" in str(error)


def test_stop_terminates_the_child_gracefully_and_does_not_crash(tmp_path: Path) -> None:
    flag = tmp_path / "terminated"
    child = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *_: (open({str(flag)!r}, 'w').write('flushed'), sys.exit(0)))\n"
        "time.sleep(60)\n"
    )

    async def scenario() -> tuple[list[BaseException], int | None]:
        app = FakeApp()
        service = ChildProcessService("detector", "{}", app, argv=[sys.executable, "-c", child])  # type: ignore[arg-type]
        await service.on_start()
        await asyncio.sleep(1.0)  # the child installs its handler
        await service.on_stop()
        await asyncio.sleep(0.2)
        assert service.process is not None
        return app.crashed, service.process.returncode

    crashed, code = asyncio.run(scenario())
    assert crashed == [] and code == 0
    assert flag.read_text() == "flushed"


def test_the_child_gets_sigterm_when_its_parent_is_killed(tmp_path: Path) -> None:
    flag = tmp_path / "terminated"
    child = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *_: (open({str(flag)!r}, 'w').write('term'), sys.exit(0)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = (
        "import subprocess, sys, time\n"
        "from streams.components import die_with_parent\n"
        f"child = subprocess.Popen([sys.executable, '-c', {child!r}], preexec_fn=die_with_parent)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", parent], cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        time.sleep(2.0)  # the child is up with its handler
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        deadline = time.monotonic() + 15
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert flag.exists() and flag.read_text() == "term"
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_the_sink_child_lands_records_and_stops_on_sigterm(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    from schemas.kafka_io import ensure_topics
    from sinks.testing import enriched_spans

    ensure_topics(
        kafka_settings.confluent_config(), kafka_settings.topics.with_configs(), partitions=kafka_settings.partitions
    )
    codec = kafka_settings.codec("EnrichedSpan")
    records = enriched_spans(300, seed=11)
    producer = Producer(kafka_settings.confluent_config())
    for record in records:
        producer.produce(kafka_settings.topics.spans_enriched, key=record["trace_id"].encode(), value=codec.encode(record))
    assert producer.flush(30) == 0

    url = f"chdb://{tmp_path / 'chdb'}"
    settings = SinkSettings(url=url, group_id=f"test-child-{uuid.uuid4().hex[:6]}", flush_interval_ms=200)
    env = os.environ | {components.SPEC_ENV: components.spec("sink", kafka_settings, settings)}
    log = tmp_path / "sink.log"
    with log.open("wb") as output:
        child = subprocess.Popen(components.command("sink"), cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            from infra.consumer_lag import consumer_group_lag

            topics = [kafka_settings.topics.spans_enriched]
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if child.poll() is not None:
                    pytest.fail(f"sink child exited {child.returncode}: {log.read_text()[-2000:]}")
                if consumer_group_lag(kafka_settings.bootstrap_servers, settings.group_id, topics) == 0:
                    break
                time.sleep(0.5)
            else:
                pytest.fail(f"the sink child did not commit everything: {log.read_text()[-2000:]}")
            child.send_signal(signal.SIGTERM)
            assert child.wait(60) == 0, log.read_text()[-2000:]
        finally:
            if child.poll() is None:
                child.kill()
    # Read in a process of its own: this one may hold the embedded engine at another path already.
    code = (
        "import sys; from sinks.clickhouse import open_client\n"
        "client = open_client(sys.argv[1]); print(client.command('SELECT count() FROM reloadtrace.spans_enriched FINAL'))"
    )
    counted = subprocess.run([sys.executable, "-c", code, url], cwd=REPO, check=True, capture_output=True, text=True)
    assert int(counted.stdout.strip().splitlines()[-1]) == len(records)


def test_a_child_logs_at_the_workers_level(tmp_path: Path) -> None:
    """The worker's ``--loglevel`` reaches its children: at warn, a child's INFO lines are not written."""
    child = (
        "import logging\n"
        "from streams.serve import serve\n"
        "def entry(stop):\n"
        "    logging.getLogger('child').info('an info line')\n"
        "    logging.getLogger('child').warning('a warning line')\n"
        "raise SystemExit(serve('detector', entry))\n"
    )
    log = tmp_path / "child.log"

    async def scenario(loglevel: str) -> int | None:
        app = FakeApp()
        service = ChildProcessService("detector", "{}", app, argv=[sys.executable, "-c", child], loglevel=loglevel)  # type: ignore[arg-type]
        service._stopping = True  # its clean exit is this test's, not a reason to stop the test process
        with log.open("wb") as out, patch.object(subprocess, "Popen", functools.partial(subprocess.Popen, stderr=out, cwd=REPO)):
            await service.on_start()
            assert service.process is not None
            return await asyncio.to_thread(service.process.wait, 30)

    assert asyncio.run(scenario("warn")) == 0
    assert "a warning line" in log.read_text() and "an info line" not in log.read_text()
    assert asyncio.run(scenario("info")) == 0
    assert "an info line" in log.read_text()
