"""The gate's HTTP routes: authentication, hostile queries and payloads, Flagger answers, /healthz, the command."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from schemas.settings import KafkaSettings
from streams.gate.app import GateApp
from streams.gate.auth import BearerAuth
from streams.gate.settings import GateSettings
from streams.gate.store import VerdictStore
from tests.streams.test_gate_store import anomaly, reload_event, verdict

TOKEN = "s3cr3t-gate-token-value"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def store_with_reloads() -> VerdictStore:
    store = VerdictStore()
    store.add_reload(reload_event("pending-one", new_version="v2"))
    store.add_verdict(verdict("passed-one", index=2, new_version="v3", effective_time_unix_nano=10**18), 10**18)
    store.add_reload(reload_event("failed-one", new_version="v4"))
    store.add_anomaly(anomaly("failed-one"))
    return store


def run(
    test: Callable[[TestClient], Awaitable[None]], *, healthy: bool = True, settings: GateSettings | None = None
) -> BearerAuth:
    settings = settings or GateSettings(token=TOKEN)
    auth = BearerAuth(settings.bearer_token(), logs_per_s=settings.refusal_logs_per_s)
    routes = GateApp(
        store_with_reloads(), settings, auth, lambda: (healthy, {"kafka": "following" if healthy else "loading"})
    )

    async def main() -> None:
        async with TestClient(TestServer(routes.app)) as client:
            await test(client)

    asyncio.run(main())
    return auth


def test_v1_routes_need_the_token_and_refusals_are_logged_without_it(caplog: pytest.LogCaptureFixture) -> None:
    async def test(client: TestClient) -> None:
        for headers in (
            {},
            {"Authorization": "Basic abc"},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {TOKEN}x"},
        ):
            response = await client.get("/v1/verdict", params={"reload_id": "pending-one"}, headers=headers)
            assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
        response = await client.post(
            "/v1/flagger/check",
            json={"name": "svc", "namespace": "ns", "metadata": {"reload_id": "pending-one", "token": "nope"}},
        )
        assert response.status == 401
        assert (await client.get("/v1/verdict", params={"reload_id": "pending-one"}, headers=AUTH)).status == 200
        assert (await client.get("/healthz")).status == 200

    with caplog.at_level(logging.WARNING, logger="streams.gate.auth"):
        auth = run(test)
    assert auth.refused == 5
    text = caplog.text
    assert "refused GET /v1/verdict" in text and "wrong bearer token" in text and "no bearer token" in text
    assert TOKEN not in text and "nope" not in text and "abc" not in text


def test_refusal_logs_are_throttled_but_every_refusal_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    async def test(client: TestClient) -> None:
        for _ in range(50):
            assert (await client.get("/v1/verdict", params={"reload_id": "x"})).status == 401

    with caplog.at_level(logging.WARNING, logger="streams.gate.auth"):
        auth = run(test, settings=GateSettings(token=TOKEN, refusal_logs_per_s=2))
    assert auth.refused == 50
    assert 1 <= len([r for r in caplog.records if "refused" in r.getMessage()]) <= 5


def test_every_phase_answers_200_and_unknown_or_bad_queries_do_not() -> None:
    async def test(client: TestClient) -> None:
        phases = {}
        for version in ("v2", "v3", "v4"):
            response = await client.get(
                "/v1/verdict", params={"service": "svc", "component": "model", "version": version}, headers=AUTH
            )
            assert response.status == 200 and response.content_type == "application/json"
            phases[version] = (await response.json())["phase"]
        assert phases == {"v2": "pending", "v3": "passed", "v4": "failed"}
        for params in ({}, {"service": "svc"}, {"reload_id": ""}, {"reload_id": "x" * 5000}):
            response = await client.get("/v1/verdict", params=params, headers=AUTH)
            assert response.status == 400 and "error" in await response.json()
        hostile = {"service": "\x1b[31m\u202e\x00svc", "component": "model", "version": "v2"}
        response = await client.get("/v1/verdict", params=hostile, headers=AUTH)
        assert response.status == 404 and "no reload" in (await response.json())["error"]
        assert (await client.get("/v1/verdict?reload_id=%ff%fe", headers=AUTH)).status == 404

    run(test)


def test_flagger_check_maps_phases_to_statuses_and_refuses_unreadable_payloads() -> None:
    async def check(
        client: TestClient, metadata: dict[str, Any] | None, body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        payload = (
            body
            if body is not None
            else {"name": "svc", "namespace": "prod", "phase": "Progressing", "metadata": metadata}
        )
        response = await client.post("/v1/flagger/check", json=payload, headers=AUTH)
        return response.status, await response.json()

    async def test(client: TestClient) -> None:
        assert (await check(client, {"component": "model", "version": "v3"}))[0] == 200
        status, document = await check(client, {"component": "model", "version": "v4"})
        assert status == 412 and document["phase"] == "failed" and document["reason"].startswith("regression")
        assert (await check(client, {"component": "model", "version": "v2"}))[0] == 409
        assert (await check(client, {"component": "model", "version": "v2", "pending": "pass"}))[0] == 200
        assert (await check(client, {"reload_id": "pending-one"}))[0] == 409
        assert (await check(client, {"component": "model", "version": "v9"}))[0] == 404
        for metadata in (
            {},
            {"component": "model"},
            {"component": 3, "version": "v2"},
            {"reload_id": "r", "pending": "maybe"},
        ):
            assert (await check(client, metadata))[0] == 400
        assert (await check(client, None, body=[1, 2]))[0] == 400
        response = await client.post("/v1/flagger/check", data=b"\xff{not json", headers=AUTH)
        assert response.status == 400
        response = await client.post("/v1/flagger/check", data=b"x" * 100_000, headers=AUTH)
        assert response.status == 413
        # Flagger sends no headers: the token may come in the metadata, and is never echoed.
        response = await client.post(
            "/v1/flagger/check",
            json={
                "name": "svc",
                "namespace": "p",
                "metadata": {"reload_id": "pending-one", "token": TOKEN, "pending": "pass"},
            },
        )
        assert response.status == 200 and TOKEN not in await response.text()

    run(test)


def test_pending_flagger_checks_pass_when_the_gate_says_so() -> None:
    async def test(client: TestClient) -> None:
        response = await client.post(
            "/v1/flagger/check",
            json={"name": "svc", "namespace": "p", "metadata": {"reload_id": "pending-one"}},
            headers=AUTH,
        )
        assert response.status == 200 and (await response.json())["flagger"]["pending"] == "pass"

    run(test, settings=GateSettings(token=TOKEN, flagger_pending="pass"))


def test_healthz_needs_no_token_and_says_503_until_the_tables_are_loaded() -> None:
    async def test(client: TestClient) -> None:
        response = await client.get("/healthz")
        assert response.status == 503 and (await response.json())["kafka"] == "loading"

    run(test, healthy=False)


def test_settings_refuse_to_run_without_a_token_unless_anonymous_and_read_token_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        GateSettings()
    assert GateSettings(allow_anonymous=True).bearer_token() is None
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    assert GateSettings(token_file=token_file).bearer_token() == TOKEN
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="empty"):
        GateSettings(token_file=tmp_path / "empty").bearer_token()
    with pytest.raises(ValueError):
        GateSettings(token=TOKEN, fail_severity="SEVERE")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.kafka
def test_gate_command_serves_logs_refusals_without_the_token_and_stops_on_sigterm(
    kafka_settings: KafkaSettings,
) -> None:
    port = _free_port()
    env = os.environ | {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "RELOADTRACE_TOPIC_PREFIX": kafka_settings.topics.prefix,
        "RELOADTRACE_GATE_TOKEN": TOKEN,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "gate", "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        healthy = None
        while time.monotonic() < deadline:
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                if healthy.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert healthy is not None and healthy.status_code == 200 and healthy.json()["kafka"] == "following"
        refused = httpx.get(
            f"http://127.0.0.1:{port}/v1/verdict?reload_id=x", headers={"Authorization": "Bearer guess"}
        )
        assert refused.status_code == 401
        found = httpx.get(f"http://127.0.0.1:{port}/v1/verdict?reload_id=x", headers=AUTH)
        assert found.status_code == 404
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "refused GET /v1/verdict" in stderr and "wrong bearer token" in stderr
    assert TOKEN not in stderr and "guess" not in stderr and "Traceback" not in stderr


def test_gate_command_refuses_bad_settings_without_quoting_them() -> None:
    env = os.environ | {"RELOADTRACE_GATE_TOKEN": TOKEN, "RELOADTRACE_GATE_FAIL_SEVERITY": "LOUD"}
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "gate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "fail_severity" in done.stderr and TOKEN not in done.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELOADTRACE_GATE_")}
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "gate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "no token" in done.stderr
