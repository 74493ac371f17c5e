"""Fixtures of the interop tests: the project's Collector (built once per session) and a factory of running ones.

The Collector comes from ``python -m infra.otelcol build`` (``make test`` builds it first); without Go
and without a built binary the tests skip, saying so. A started Collector is always stopped at the end
of its test, and its log is printed when the test failed.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.kafka import create_topics
from infra.otelcol.collector import BINARY, Collector, CollectorError, build, go_binary, is_built

NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.fixture(scope="session")
def collector_binary() -> Path:
    """The Collector binary, current with ``infra/otelcol`` (built here when ``make test`` did not)."""
    if go_binary() is None:
        if not is_built():
            pytest.skip("Go is not on PATH and no Collector is built: the interop tests need the OpenTelemetry "
                        "Collector that `python -m infra.otelcol build` makes from infra/otelcol with Go 1.26+")
        return BINARY
    try:
        return build().binary
    except CollectorError as error:
        pytest.fail(f"the Collector does not build: {error}")


@pytest.fixture
def start_collector(
    collector_binary: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[Collector], Collector]]:
    """``start(collector)`` starts it and registers it to be stopped after the test."""
    started: list[Collector] = []

    def start(collector: Collector) -> Collector:
        collector.binary = collector_binary
        started.append(collector)
        return collector.start()

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for collector in started:
        collector.stop()
        if failed:
            print(f"--- {collector.log_path} ---\n{collector.log_text()[-6000:]}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def otlp_topic(kafka_bootstrap_servers: str) -> str:
    """``<unique prefix>.otlp_spans`` with 4 partitions (the default topic name, under a per-test prefix)."""
    name = f"t{uuid.uuid4().hex[:10]}.otlp_spans"
    create_topics(kafka_bootstrap_servers, [name], partitions=4)
    return name


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    """``tests/interop/node`` with its npm packages installed (``make test`` runs ``npm ci`` there)."""
    if shutil.which("node") is None:
        pytest.skip("Node.js ('node') is not on PATH: the second-SDK test sends its spans with the JavaScript SDK")
    installed = NODE_DIR / "node_modules" / "@opentelemetry" / "exporter-trace-otlp-proto"
    if not installed.exists() and shutil.which("npm") is not None:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"],
                       cwd=NODE_DIR, stdin=subprocess.DEVNULL, check=False, timeout=600)
    if not installed.exists():
        pytest.skip("the JavaScript SDK is not installed and npm could not install it: "
                    "run `npm ci --prefix tests/interop/node` (make test does)")
    return NODE_DIR
