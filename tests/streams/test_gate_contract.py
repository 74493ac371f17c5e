"""The delivery gate's contract on the real broker: a bad and a benign reload, live, through the whole pipeline.

The gateway simulator publishes two services' traffic in real time (event time = wall time): ``bad``
gets a model reload at 25 s that doubles latency and raises errors to 30%, rolled forward by a
clean model reload at 38 s; ``good`` gets a benign config reload at 25 s. The real enricher and
detector run in threads (window W = 20 s, looks at 2, 5, 10 and 20 s, max lateness 5 s, idle
partitions after 1 s), the gate and ``reloadtrace alerts --format alertmanager`` beside them, and
the test polls the gate over HTTP twice a second, as Argo Rollouts (the README's AnalysisTemplate,
its conditions evaluated with Argo's semantics) and Flagger (its webhook payload) would.
"""

from __future__ import annotations

import calendar
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from gateway.simulation.config import Regression, ScheduledReload, SimulationConfig
from gateway.simulation.produce import ProduceReport, StreamPublisher, simulation_items
from gateway.simulation.simulator import simulate
from infra.kafka import create_topics
from schemas.settings import KafkaSettings
from schemas.topics import TopicNames
from streams.alerts import AlertSettings, alerts_runtime
from streams.detection import DetectionSettings
from streams.detector import DetectorSettings, detector_runtime
from streams.enricher import enricher_runtime
from streams.gate.server import GateServer
from streams.gate.settings import GateSettings
from streams.settings import WorkerSettings
from tests.streams.alertmanager_shape import WEBHOOK_V4
from tests.streams.argo_expr import FAILED, INCONCLUSIVE, SUCCESSFUL, web_measurement
from tests.threads import start_stoppable

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

README = Path(__file__).resolve().parents[2] / "README.md"
NANOS = 1_000_000_000
WINDOW_MS = 20_000
LOOKS_MS = (2_000, 5_000, 10_000)
MAX_LATENESS_MS = 5_000
PIPELINE_SLACK_S = 6.0
"""Grace period (0.4 s), feed watermark and poll intervals, idle-partition detection (1 s), gate poll."""
DEADLINE_S = 150.0


def argo_metric() -> dict[str, Any]:
    """The README's AnalysisTemplate metric (the document users copy)."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    template = next(yaml.safe_load(block) for block in blocks if "kind: AnalysisTemplate" in block)
    assert template["apiVersion"] == "argoproj.io/v1alpha1"
    (metric,) = template["spec"]["metrics"]
    return metric


def argo_request(metric: dict[str, Any], gate_url: str, args: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The URL and headers Argo sends for ``metric`` with ``args`` substituted, pointed at the test's gate."""
    web = metric["provider"]["web"]

    def fill(text: str) -> str:
        return re.sub(r"\{\{\s*args\.([\w-]+)\s*\}\}", lambda m: args[m.group(1)], text)

    url = re.sub(r"^https?://[^/]+", gate_url, fill(web["url"]))
    return url, {header["key"]: fill(header["value"]) for header in web.get("headers", [])}


@dataclass
class Observation:
    wall_unix_nano: int
    status: int
    document: dict[str, Any]
    argo: str | None = None
    flagger_status: int | None = None
    flagger_pass_status: int | None = None


@dataclass
class Receiver:
    """An Alertmanager-webhook receiver (stdlib HTTP server) recording every payload."""

    payloads: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.payloads.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Scenario:
    kafka: KafkaSettings
    token: str
    reloads: dict[str, dict[str, Any]]
    """'bad', 'good', 'rollforward' -> the ReloadEvent record."""
    observations: dict[str, list[Observation]]
    anomalies_detected: dict[str, int]
    """metric -> detected_time_unix_nano of the bad reload's anomalies (from the gate's answers)."""
    final_answers: dict[str, dict[str, Any]]
    payloads: list[dict[str, Any]]


def scenario_config(start_unix_nano: int) -> SimulationConfig:
    return SimulationConfig(
        seed=17,
        services=("bad", "good"),
        instances_per_service=2,
        requests_per_second_per_service=20.0,
        duration_s=64.0,
        start_time_unix_nano=start_unix_nano,
        streaming_fraction=0.0,
        reloads=(
            ScheduledReload(25, "bad", "model"),
            ScheduledReload(25, "good", "config"),
            ScheduledReload(38, "bad", "model"),
        ),
        regressions=(Regression(reload_index=0, latency_factor=2.0, error_rate=0.3),),
    )


def scheduled(simulation: Any, service: str, at_s: float) -> dict[str, Any]:
    """The reload of the scenario's schedule that took effect at ``at_s`` in ``service``."""
    start = simulation.config.start_time_unix_nano
    (reload,) = [
        r
        for r in simulation.reloads
        if r.service_name == service and abs(r.effective_time_unix_nano - start - at_s * NANOS) < NANOS // 10
    ]
    return reload.to_dict()


def query(reload: dict[str, Any]) -> dict[str, str]:
    return {"service": reload["service_name"], "component": reload["component"], "version": reload["new_version"]}


def without_clock(document: dict[str, Any]) -> dict[str, Any]:
    """An answer less what depends on when it was asked (the ages and answered_at)."""
    shown = json.loads(json.dumps(document))
    for key in ("verdict_age_ms", "detector_age_ms", "answered_at", "detector_last_published_at"):
        shown["freshness"].pop(key)
    return shown


@pytest.fixture(scope="module")
def scenario(kafka_bootstrap_servers: str) -> Iterator[Scenario]:
    names = TopicNames(prefix=f"g{uuid.uuid4().hex[:10]}.")
    create_topics(kafka_bootstrap_servers, names.with_configs(), partitions=2)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap_servers, topic_prefix=names.prefix, partitions=2)
    token = secrets.token_urlsafe(24)
    gate = GateServer(kafka, GateSettings(port=0, token=token, poll_timeout_ms=50))
    gate_thread, gate_stop, gate_errors = start_stoppable(gate.run)
    assert gate.serving.wait(30) and gate.runtime.ready.wait(60)
    base = f"http://127.0.0.1:{gate.port}"
    receiver = Receiver()
    alerts = alerts_runtime(
        kafka,
        AlertSettings(
            webhook_urls=[receiver.url], format="alertmanager", group_id=f"al-{uuid.uuid4().hex}", poll_timeout_ms=50
        ),
    )
    alerts_thread, alerts_stop, alerts_errors = start_stoppable(alerts.run)
    worker = WorkerSettings(
        group_id=f"enr-{uuid.uuid4().hex}",
        grace_period_ms=400,
        idle_partition_ms=1_000,
        max_lateness_ms=MAX_LATENESS_MS,
        sink_url=None,
    )
    enricher = enricher_runtime(kafka, worker)
    enricher_thread, enricher_stop, enricher_errors = start_stoppable(enricher.run)
    detection = DetectionSettings(window_ms=WINDOW_MS, look_schedule_ms=LOOKS_MS)
    detector = detector_runtime(
        kafka,
        detection,
        DetectorSettings(group_id=f"det-{uuid.uuid4().hex}", commit_interval_ms=200, poll_timeout_ms=50),
    )
    detector_thread, detector_stop, detector_errors = start_stoppable(detector.run)

    simulation = simulate(scenario_config(time.time_ns() + 2 * NANOS))
    reloads = {
        "bad": scheduled(simulation, "bad", 25),
        "good": scheduled(simulation, "good", 25),
        "rollforward": scheduled(simulation, "bad", 38),
    }
    publisher = threading.Thread(
        target=lambda: StreamPublisher(kafka).publish(simulation_items(simulation), ProduceReport(), pace=1.0),
        daemon=True,
    )
    publisher.start()

    metric = argo_metric()
    observations: dict[str, list[Observation]] = {name: [] for name in reloads}
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + DEADLINE_S
    try:
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                for name, reload in reloads.items():
                    response = client.get(f"{base}/v1/verdict", params=query(reload), headers=headers)
                    seen = Observation(time.time_ns(), response.status_code, response.json())
                    url, argo_headers = argo_request(metric, base, query(reload) | {"gate-token": token})
                    argo_response = client.get(url, headers=argo_headers)
                    seen.argo = web_measurement(argo_response.status_code, argo_response.content, metric)
                    flagger = {
                        "name": reload["service_name"],
                        "namespace": "prod",
                        "phase": "Progressing",
                        "checksum": "6f1c2d",
                        "metadata": {
                            "component": reload["component"],
                            "version": reload["new_version"],
                            "token": token,
                        },
                    }
                    seen.flagger_status = client.post(f"{base}/v1/flagger/check", json=flagger).status_code
                    flagger["metadata"]["pending"] = "pass"
                    seen.flagger_pass_status = client.post(f"{base}/v1/flagger/check", json=flagger).status_code
                    observations[name].append(seen)
                done = all(o[-1].status == 200 and o[-1].document["phase"] != "pending" for o in observations.values())
                resolved = any(p["status"] == "resolved" for p in receiver.payloads)
                if done and resolved:
                    break
                time.sleep(0.5)
        final = {name: observations[name][-1].document for name in reloads}
        anomalies = {a["metric"]: a for a in final["bad"]["anomalies"]}
        detected = {metric_name: _parse_time(a["detected_time"]) for metric_name, a in anomalies.items()}
        yield Scenario(kafka, token, reloads, observations, detected, final, list(receiver.payloads))
    finally:
        for stop in (detector_stop, enricher_stop, alerts_stop, gate_stop):
            stop.set()
        for thread in (detector_thread, enricher_thread, alerts_thread, gate_thread):
            thread.join(60)
        receiver.close()
    assert gate_errors == [] and alerts_errors == [] and enricher_errors == [] and detector_errors == []


def _parse_time(text: str) -> int:
    seconds, _, fraction = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(seconds, "%Y-%m-%dT%H:%M:%S")) * NANOS + int(fraction.ljust(9, "0"))


def first(observations: list[Observation], phase: str) -> Observation | None:
    return next((o for o in observations if o.status == 200 and o.document["phase"] == phase), None)


def test_the_bad_reload_fails_within_time_to_detect_plus_the_watermark_wait(scenario: Scenario) -> None:
    seen = scenario.observations["bad"]
    failed = first(seen, "failed")
    assert failed is not None, [o.document.get("phase") for o in seen]
    assert first(seen, "passed") is None
    assert {"latency", "error_rate"} & set(scenario.anomalies_detected)
    detected = min(scenario.anomalies_detected.values())
    reload = scenario.reloads["bad"]
    assert (
        detected - reload["effective_time_unix_nano"] <= max(LOOKS_MS) * 1_000_000
    )  # detected at one of the early looks
    assert failed.wall_unix_nano - detected <= (MAX_LATENESS_MS / 1000 + PIPELINE_SLACK_S) * NANOS
    document = failed.document
    assert document["reload"]["reload_id"] == reload["reload_id"] and document["reload"]["status"] == "SUCCEEDED"
    assert document["reason"].startswith("regression:")
    failing = {m["metric"]: m for m in document["metrics"] if m["emitted_severity"] in ("WARNING", "CRITICAL")}
    assert failing and all(m["observed_value"] > m["baseline_value"] and m["p_value"] < 0.001 for m in failing.values())
    assert all(m["baseline_count"] >= 30 and m["observed_count"] >= 20 and m["look_time"] for m in failing.values())
    # Once failed, always failed; Argo's measurement fails and Flagger's check is refused, pending or not.
    after = seen[seen.index(failed) :]
    assert all(o.document["phase"] == "failed" and o.argo == FAILED for o in after)
    assert all(o.flagger_status == 412 and o.flagger_pass_status == 412 for o in after)


def test_the_benign_reload_is_pending_then_passes_at_window_end(scenario: Scenario) -> None:
    seen = scenario.observations["good"]
    passed = first(seen, "passed")
    assert passed is not None, [o.document.get("phase") for o in seen]
    assert first(seen, "failed") is None
    looked = [
        o
        for o in seen
        if o.status == 200 and o.document["phase"] == "pending" and o.document["looks"]["look_index"] is not None
    ]
    assert looked and looked[0].wall_unix_nano < passed.wall_unix_nano
    window_end = _parse_time(passed.document["looks"]["window_end"])
    assert (
        passed.document["looks"]["final"]
        and passed.document["looks"]["look_time"] == passed.document["looks"]["window_end"]
    )
    assert window_end == scenario.reloads["good"]["effective_time_unix_nano"] + WINDOW_MS * 1_000_000
    assert window_end <= passed.wall_unix_nano <= window_end + (MAX_LATENESS_MS / 1000 + PIPELINE_SLACK_S) * NANOS
    pending = [o for o in seen if o.status == 200 and o.document["phase"] == "pending"]
    assert all(o.argo == INCONCLUSIVE and o.flagger_status == 409 and o.flagger_pass_status == 200 for o in pending)
    after = seen[seen.index(passed) :]
    assert all(o.argo == SUCCESSFUL and o.flagger_status == 200 for o in after)
    assert passed.document["freshness"]["based_on_look_time"] == passed.document["looks"]["look_time"]
    assert passed.document["freshness"]["verdict_age_ms"] is not None


def test_a_clean_rollforward_passes_and_resolves_the_bad_reloads_alerts(scenario: Scenario) -> None:
    assert scenario.final_answers["rollforward"]["phase"] == "passed"
    for payload in scenario.payloads:
        jsonschema.validate(payload, WEBHOOK_V4)
    bad_id = scenario.reloads["bad"]["reload_id"]
    firing = {a["fingerprint"]: a for p in scenario.payloads for a in p["alerts"] if a["status"] == "firing"}
    assert firing and all(a["labels"]["reload_id"] == bad_id for a in firing.values())
    assert {a["labels"]["metric"] for a in firing.values()} == set(scenario.anomalies_detected)
    resolved = {a["fingerprint"]: a for p in scenario.payloads for a in p["alerts"] if a["status"] == "resolved"}
    assert set(firing) <= set(resolved)
    ends = _parse_time(scenario.final_answers["rollforward"]["reload"]["effective_time"])
    top = {fingerprint: a for fingerprint, a in resolved.items() if fingerprint in firing}
    assert all(_parse_time(a["endsAt"]) == ends for a in top.values())
    assert all(a["labels"] == firing[f]["labels"] for f, a in top.items())


def test_a_restarted_gate_gives_the_same_answers(scenario: Scenario) -> None:
    gate = GateServer(scenario.kafka, GateSettings(port=0, token=scenario.token))
    thread, stop, errors = start_stoppable(gate.run)
    try:
        assert gate.serving.wait(30) and gate.runtime.ready.wait(60)
        headers = {"Authorization": f"Bearer {scenario.token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{gate.port}", headers=headers, timeout=5) as client:
            for name, reload in scenario.reloads.items():
                again = client.get("/v1/verdict", params=query(reload)).json()
                by_id = client.get("/v1/verdict", params={"reload_id": reload["reload_id"]}).json()
                assert without_clock(again) == without_clock(scenario.final_answers[name]) == without_clock(by_id)
    finally:
        stop.set()
        thread.join(60)
    assert errors == []
