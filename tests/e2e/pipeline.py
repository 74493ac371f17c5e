"""A whole pipeline for one test: real broker, worker processes, a paced load with poison, and the tables it leaves.

What every fault test asserts, after the pipeline has drained and stopped (:meth:`PipelineRun.verify`):
the ClickHouse tables hold exactly the produced spans (no loss; no duplicates after FINAL), each
with the enrichment the offline replay gives when every reload is known, every reload event once,
and every poison message in ``dead_letters`` with its source partition and offset.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from infra.consumer_lag import consumer_group_lag
from infra.processes import ManagedProcess, wait_until
from schemas.records import ReloadEvent
from schemas.settings import KafkaSettings
from streams.app import consumer_groups
from streams.enrichment import enrich
from streams.settings import WorkerSettings
from streams.timeline import VersionTimeline

REPO = Path(__file__).resolve().parents[2]
POISON_EVERY = 100
"""One poison message per this many spans: 1%."""
GRACE_MS = 1_000


def poison_messages(kafka: KafkaSettings, rng: random.Random, template: dict[str, Any]) -> list[bytes]:
    """Kinds of bad span messages a real producer emits: garbage, broken framing, contract violations."""
    codec = kafka.codec("Span")
    end_before_start = dict(template, span_id=f"{rng.getrandbits(64):016x}", end_time_unix_nano=template["start_time_unix_nano"] - 1)
    missing_trace = dict(template, trace_id="", span_id=f"{rng.getrandbits(64):016x}")
    far_future = dict(
        template,
        span_id=f"{rng.getrandbits(64):016x}",
        start_time_unix_nano=4_102_444_800 * 10**9,
        end_time_unix_nano=4_102_444_801 * 10**9,
    )
    return [
        rng.randbytes(rng.randrange(1, 64)),
        codec.encode(template)[:-7],  # truncated body
        b"\xc3\x01" + rng.randbytes(8) + b"\x00",  # unknown fingerprint
        codec.encode(end_before_start),
        codec.encode(missing_trace),
        codec.encode(far_future),
    ]


@dataclass
class LoadResult:
    spans: int = 0
    reloads: int = 0
    poison: list[bytes] = field(default_factory=list)
    error: BaseException | None = None


class Load(threading.Thread):
    """Publishes a simulation at ``pace`` x event time, with a poison message every ``POISON_EVERY`` spans.

    ``on_progress(fraction)`` is called from this thread as publication goes on (fault triggers).
    """

    def __init__(self, kafka: KafkaSettings, simulation: Any, *, pace: float, seed: int = 0) -> None:
        super().__init__(name="load", daemon=True)
        self._kafka = kafka
        self._simulation = simulation
        self._pace = pace
        self._rng = random.Random(seed)
        self.result = LoadResult()
        self.progress = 0.0
        self._producer = Producer(kafka.confluent_config() | {"linger.ms": 5, "message.timeout.ms": 300_000})

    def run(self) -> None:
        try:
            self._publish()
        except BaseException as error:  # noqa: BLE001 - re-raised by the test
            self.result.error = error

    def _send(self, topic: str, key: bytes, value: bytes) -> None:
        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                self.result.error = RuntimeError(f"load delivery failed: {error}")

        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def _publish(self) -> None:
        topics = self._kafka.topics
        span_codec, reload_codec = self._kafka.codec("Span"), self._kafka.codec("ReloadEvent")
        order = self._simulation.publish_order
        first = order[0].time_unix_nano
        started = time.monotonic()
        poison_kinds: list[bytes] = []
        for number, item in enumerate(order, start=1):
            delay = started + (item.time_unix_nano - first) / 1e9 / self._pace - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if item.kind == "span":
                span = self._simulation.spans[item.index]
                self._send(topics.spans, span["trace_id"].encode(), span_codec.encode(span))
                self.result.spans += 1
                if self.result.spans % POISON_EVERY == 0:
                    if not poison_kinds:
                        poison_kinds = poison_messages(self._kafka, self._rng, span)
                    poison = poison_kinds.pop()
                    self._send(topics.spans, span["trace_id"].encode(), poison)
                    self.result.poison.append(poison)
            else:
                # Reloads go out after everything before them (a late reload really arrives late).
                self._producer.flush(60)
                reload = self._simulation.reloads[item.index]
                self._send(topics.reloads, reload.service_name.encode(), reload_codec.encode(reload.to_dict()))
                self._producer.flush(60)
                self.result.reloads += 1
            self.progress = number / len(order)
        remaining = self._producer.flush(120)
        if remaining:
            raise RuntimeError(f"{remaining} load messages undelivered")


class PipelineRun:
    """Workers (and optionally a separate sink) on one test's topics, and the checks of the outcome."""

    def __init__(self, kafka: KafkaSettings, directory: Path, *, env: dict[str, str] | None = None) -> None:
        self.kafka = kafka
        self.directory = directory
        self.extra_env = dict(env or {})
        self.group_id = f"e2e-{uuid.uuid4().hex[:8]}"
        self.sink_url = f"chdb://{directory / 'chdb'}"
        self.processes: list[ManagedProcess] = []
        self._started = 0

    def _env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "RELOADTRACE_TOPIC_PREFIX": self.kafka.topic_prefix,
            "RELOADTRACE_PARTITIONS": str(self.kafka.partitions),
            "RELOADTRACE_GROUP_ID": self.group_id,
            "RELOADTRACE_GRACE_PERIOD_MS": str(GRACE_MS),
            "RELOADTRACE_SESSION_TIMEOUT_MS": "6000",
            "RELOADTRACE_COMMIT_INTERVAL_MS": "500",
            "RELOADTRACE_SINK_FLUSH_INTERVAL_MS": "500",
        } | self.extra_env

    def start_worker(self, *, with_sink: bool = True) -> ManagedProcess:
        self._started += 1
        argv = [sys.executable, "-m", "streams.cli", "worker", "--sink-url", self.sink_url if with_sink else ""]
        log = self.directory / f"worker-{self._started}.log"
        process = ManagedProcess(argv, log_path=log, env=self._env(), cwd=REPO).start()
        self.processes.append(process)
        return process

    def start_sink(self) -> ManagedProcess:
        self._started += 1
        env = self._env() | {"RELOADTRACE_SINK_GROUP_ID": f"{self.group_id}-sink"}
        argv = [sys.executable, "-m", "streams.cli", "sink", "--sink-url", self.sink_url]
        process = ManagedProcess(argv, log_path=self.directory / f"sink-{self._started}.log", env=env, cwd=REPO).start()
        self.processes.append(process)
        return process

    def live(self) -> list[ManagedProcess]:
        return [process for process in self.processes if process.running() or process.returncode is None]

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.log_tail(25)}" for p in self.processes)

    def lag(self) -> int:
        groups = consumer_groups(self.kafka, WorkerSettings(group_id=self.group_id, sink_url=self.sink_url))
        return sum(consumer_group_lag(self.kafka.bootstrap_servers, group, names) for group, names in groups.items())

    def drain(self, alive: list[ManagedProcess], timeout_s: float = 120.0) -> None:
        """Wait until every group has committed the end of its topics (twice, a second apart)."""
        for _ in range(2):
            try:
                wait_until(lambda: self.lag() == 0, timeout_s=timeout_s, interval_s=1.0, what="pipeline drained", alive=alive)
            except TimeoutError as error:
                raise AssertionError(f"{error}\n{self.logs()}") from None
            time.sleep(1.0)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def tables(self) -> dict[str, Any]:
        out = self.directory / "tables.json"
        subprocess.run(
            [sys.executable, "-m", "tests.e2e.dump_tables", self.sink_url, str(out)],
            cwd=REPO, check=True, env={**os.environ},
        )
        return orjson.loads(out.read_bytes())

    def verify(self, simulation: Any, load: LoadResult) -> dict[str, Any]:
        """The outcome every fault test demands (see the module docstring); returns the tables."""
        assert load.error is None, load.error
        tables = self.tables()
        expected = expected_enrichment(simulation.spans, simulation.reloads)
        got = {(row[0], row[1]): row for row in tables["spans"]}
        assert len(tables["spans"]) == len(got), "duplicate spans after FINAL"
        missing = expected.keys() - got.keys()
        extra = got.keys() - expected.keys()
        assert not missing and not extra, f"{len(missing)} spans lost, {len(extra)} unexpected\n{self.logs()}"
        wrong = [key for key, want in expected.items() if tuple(_normal(got[key])) != want]
        assert not wrong, f"{len(wrong)} spans differ from the replay, e.g. {got[wrong[0]]} != {expected[wrong[0]]}"
        assert sorted(tables["reload_ids"]) == sorted(reload.reload_id for reload in simulation.reloads)
        poisoned = sorted(row[5].lower() for row in tables["dead_letters"] if row[0] == self.kafka.topics.spans)
        assert poisoned == sorted(value.hex() for value in load.poison), "poison messages not all dead-lettered once"
        assert all(row[2] >= 0 and row[1] >= 0 for row in tables["dead_letters"])
        return tables


def _normal(row: list[Any]) -> tuple:
    _, _, versions, at_end, reload_ids, mid_flight, mid_ids, _revision = row
    return (dict(versions), dict(at_end), dict(reload_ids), bool(mid_flight), sorted(mid_ids))


def expected_enrichment(spans: list[dict[str, Any]], reloads: list[ReloadEvent]) -> dict[tuple[str, str], tuple]:
    """The answer with every reload known (what replay computes), per (trace_id, span_id)."""
    timeline = VersionTimeline()
    for reload in reloads:
        timeline.add(reload)
    out = {}
    for span in spans:
        enriched = enrich(span, timeline)
        out[(span["trace_id"], span["span_id"])] = (
            enriched["versions"], enriched["versions_at_end"], enriched["reload_ids"],
            enriched["mid_flight"], sorted(enriched["mid_flight_reload_ids"]),
        )
    return out


def run_with_fault(
    run: PipelineRun,
    simulation: Any,
    *,
    pace: float,
    fault: Callable[[], None],
    at_fraction: float = 0.4,
    watch: Callable[[], list[ManagedProcess]] | None = None,
) -> LoadResult:
    """Publish the load, call ``fault()`` once publication passes ``at_fraction``, then drain."""
    load = Load(run.kafka, simulation, pace=pace)
    load.start()
    fired = False
    while load.is_alive():
        if not fired and load.progress >= at_fraction:
            fault()
            fired = True
        time.sleep(0.1)
    load.join()
    if not fired:
        fault()
    assert load.result.error is None, load.result.error
    run.drain(alive=watch() if watch else [])
    run.stop()
    return load.result
