"""python -m infra.otelcol's Collector: ready when start returns, a clean exit on stop, a bad config quoted."""

from __future__ import annotations

import time

import pytest

from infra.kafka import free_port, port_is_open
from infra.otelcol.collector import Collector, CollectorError, collector_config, otlp_receiver

pytestmark = pytest.mark.interop


def test_start_waits_for_ready_and_stop_exits_cleanly(start_collector, tmp_path) -> None:
    http_port, grpc_port = free_port(), free_port()
    config = collector_config({"otlp": otlp_receiver(http_port, grpc_port)}, {"debug": {}},
                              {"traces": (["otlp"], ["debug"])})
    started = time.monotonic()
    collector = start_collector(Collector(config, tmp_path, http_port=http_port, grpc_port=grpc_port))
    ready_s = time.monotonic() - started
    assert port_is_open("127.0.0.1", http_port) and port_is_open("127.0.0.1", grpc_port)
    assert collector.stop() == 0 and "Shutdown complete" in collector.log_text()
    assert not port_is_open("127.0.0.1", http_port)
    print(f"start to ready: {ready_s:.2f} s")


def test_a_config_the_collector_refuses_is_an_error_quoting_its_log(start_collector, tmp_path) -> None:
    config = collector_config({"otlp": {"protocols": {"carrier_pigeon": {}}}}, {"debug": {}},
                              {"traces": (["otlp"], ["debug"])})
    with pytest.raises(CollectorError, match="carrier_pigeon"):
        start_collector(Collector(config, tmp_path))
