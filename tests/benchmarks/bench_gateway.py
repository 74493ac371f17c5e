"""Gateway costs: span-processor overhead beside a bare SDK run, exporter throughput to the real broker,
and simulator speed, each beside the limit it is judged against in the same run.

CPU time of this process is the measure for the in-process figures (the machine is shared);
the exporter figure is wall time from the first span to the last delivery report.
"""

from __future__ import annotations

import gc
import os
import time
import uuid

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from gateway.exporter import KafkaSpanExporter
from gateway.handle import ReloadRegistry
from gateway.pinning import pin
from gateway.processor import ReloadStampingSpanProcessor, kafka_span_processor
from gateway.simulation.config import SimulationConfig
from gateway.simulation.simulator import simulate
from gateway.versioning import COMPONENT_KINDS
from infra.kafka import create_topics
from schemas.settings import KafkaSettings

SPANS = int(os.environ.get("BENCH_GATEWAY_SPANS", "20000"))
OVERHEAD_LIMIT_US = 50.0  # stamping 7 components + the mid-flight mark must cost less than this per span
# An LLM gateway process serving 1,000 requests/s with 2 spans each (request + model call).
EXPORT_TARGET_SPANS_PER_S = 2_000


class _Null(SpanExporter):
    def export(self, spans) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _provider() -> TracerProvider:
    return TracerProvider(
        resource=Resource({"service.name": "bench", "service.instance.id": "b-1"}), shutdown_on_exit=False
    )


def _registry(provider: TracerProvider) -> ReloadRegistry:
    registry = ReloadRegistry("bench", "b-1", tracer=provider.get_tracer("bench"))
    for component in COMPONENT_KINDS:
        registry.register(component, {"component": component})
    return registry


def _cpu_per_span(setup) -> float:
    best = None
    for _ in range(3):
        tracer, registry = setup()
        gc.collect()
        started = time.process_time()
        for number in range(SPANS):
            if registry is None:
                with tracer.start_as_current_span("request"):
                    pass
            else:
                with pin(registry), tracer.start_as_current_span("request"):
                    pass
        elapsed = (time.process_time() - started) / SPANS * 1e6
        best = elapsed if best is None else min(best, elapsed)
    return best or 0.0


def _bare():
    provider = _provider()
    provider.add_span_processor(SimpleSpanProcessor(_Null()))
    return provider.get_tracer("bench"), None


def _stamped():
    provider = _provider()
    registry = _registry(provider)
    provider.add_span_processor(ReloadStampingSpanProcessor(registry, SimpleSpanProcessor(_Null())))
    return provider.get_tracer("bench"), registry


def _export_rate() -> tuple[float, dict]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:6]}.")
    create_topics(bootstrap, kafka.topics.with_configs(), partitions=2)
    provider = _provider()
    registry = _registry(provider)
    exporter = KafkaSpanExporter(kafka)
    provider.add_span_processor(
        kafka_span_processor(registry, exporter, max_queue_size=SPANS, max_export_batch_size=512)
    )
    tracer = provider.get_tracer("bench")
    started = time.perf_counter()
    for number in range(SPANS):
        with pin(registry), tracer.start_as_current_span("request", attributes={"n": number}):
            pass
    provider.force_flush(60_000)
    elapsed = time.perf_counter() - started
    provider.shutdown()
    return exporter.stats.delivered / elapsed, exporter.stats.as_dict()


def _export_only_cpu_per_span() -> float:
    """CPU of ``export`` alone (convert, redact, validate, Avro-encode, hand to librdkafka) on ready spans."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = _provider()
    registry = _registry(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(ReloadStampingSpanProcessor(registry, SimpleSpanProcessor(memory)))
    tracer = provider.get_tracer("bench")
    for number in range(SPANS):
        with pin(registry), tracer.start_as_current_span("request", attributes={"n": number, "http.route": "/v1/chat"}):
            pass
    spans = memory.get_finished_spans()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:6]}.")
    create_topics(bootstrap, kafka.topics.with_configs(), partitions=2)
    exporter = KafkaSpanExporter(kafka)
    gc.collect()
    started = time.process_time()
    for offset in range(0, len(spans), 512):
        exporter.export(spans[offset : offset + 512])
    elapsed = time.process_time() - started
    exporter.shutdown()
    return elapsed / len(spans) * 1e6


def main() -> str:
    bare = _cpu_per_span(_bare)
    stamped = _cpu_per_span(_stamped)
    overhead = stamped - bare
    rate, stats = _export_rate()
    export_us = _export_only_cpu_per_span()
    config = SimulationConfig(seed=1, duration_s=120, requests_per_second_per_service=10)
    cpu = time.process_time()
    simulation = simulate(config)
    sim_cpu = time.process_time() - cpu
    sim_rate = len(simulation.spans) / sim_cpu
    real_time_rate = len(simulation.spans) / config.duration_s
    return (
        "## Gateway\n\n"
        "| figure | measured | limit (same run) | verdict |\n|---|---|---|---|\n"
        f"| span cost, bare SDK (SimpleSpanProcessor, null exporter) | {bare:.1f} µs CPU/span | reference | |\n"
        f"| span cost with pinning + version stamping (7 components) + mid-flight mark | {stamped:.1f} µs CPU/span | bare + {OVERHEAD_LIMIT_US:.0f} µs | {'ok' if overhead <= OVERHEAD_LIMIT_US else 'OVER'} (+{overhead:.1f} µs) |\n"
        f"| end to end: create + stamp + BatchSpanProcessor + KafkaSpanExporter, wall time to last delivery | {rate:,.0f} spans/s delivered ({stats['delivered']:,} of {SPANS:,}, dropped {stats['dropped_queue_full']}) | {EXPORT_TARGET_SPANS_PER_S:,} spans/s | {'ok' if rate >= EXPORT_TARGET_SPANS_PER_S else 'UNDER'} |\n"
        f"| `KafkaSpanExporter.export` alone (convert, redact, validate, Avro, produce) | {export_us:.1f} µs CPU/span = {1e6 / export_us:,.0f} spans/s per core | {EXPORT_TARGET_SPANS_PER_S:,} spans/s | {'ok' if 1e6 / export_us >= EXPORT_TARGET_SPANS_PER_S else 'UNDER'} |\n"
        f"| simulator, 3 services x 2 instances, 10 req/s/service, 120 s | {sim_rate:,.0f} spans/s CPU ({len(simulation.spans):,} spans in {sim_cpu:.2f} s) | real time = {real_time_rate:,.0f} spans/s | {sim_rate / real_time_rate:,.0f}x faster than real time |\n"
        "\nCommand: `KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 .venv/bin/python -m tests.benchmarks gateway` "
        f"(BENCH_GATEWAY_SPANS={SPANS}).\n"
    )


if __name__ == "__main__":
    print(main())
