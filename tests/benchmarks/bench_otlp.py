"""OTLP decode (schemas.otlp) beside Avro decode of the same spans, in the same run, on one core.

The spans are the simulator's (gateway spans with realistic attributes, reload spans included),
encoded once per format before timing. Avro: one span per message, as on the ``spans`` topic.
OTLP: as the Collector's kafkaexporter writes them, batched (512 spans per message) or one trace per
message (``partition_traces_by_id``). Every decode yields validated contract spans (Avro: decode +
``validate_span``; OTLP: decode, map, validate, derive reload events). CPU time of this process,
best of three rounds (the machine is shared). The limit is issue 15's: OTLP within 30% of Avro.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Sequence

from gateway.simulation.config import SimulationConfig
from gateway.simulation.simulator import simulate
from schemas.codec import ProjectedDecoder, SingleObjectCodec
from schemas.otlp import decode_otlp_json, decode_otlp_proto, otlp_json_bytes, span_otlp_request
from schemas.records import validate_span
from streams.enricher import SPAN_FIELDS_ENRICHMENT_READS

SPANS = int(os.environ.get("BENCH_OTLP_SPANS", "20000"))
BATCH_SPANS = 512
WITHIN = 0.30  # issue 15: OTLP ingest within 30% of Avro ingest spans/s


def _spans() -> list[dict]:
    spans: list[dict] = []
    seed = 1
    while len(spans) < SPANS:
        spans += simulate(SimulationConfig(seed=seed, duration_s=120, requests_per_second_per_service=10)).spans
        seed += 1
    return spans[:SPANS]


def _rate(decode_all: Callable[[], int]) -> float:
    """Spans per CPU second of ``decode_all`` (which returns how many spans it decoded), best of 3."""
    best = 0.0
    for _ in range(3):
        gc.collect()
        started = time.process_time()
        count = decode_all()
        elapsed = time.process_time() - started
        best = max(best, count / elapsed if elapsed > 0 else 0.0)
    return best


def _avro_full(codec: SingleObjectCodec, messages: Sequence[bytes]) -> Callable[[], int]:
    def run() -> int:
        decode, validate = codec.decode, validate_span
        for message in messages:
            validate(decode(message))
        return len(messages)

    return run


def _avro_projected(decoder: ProjectedDecoder, messages: Sequence[bytes]) -> Callable[[], int]:
    def run() -> int:
        decode, validate = decoder.decode, validate_span
        for message in messages:
            validate(decode(message), check_attributes=False)
        return len(messages)

    return run


def _otlp(decode: Callable[[bytes], object], messages: Sequence[bytes], to_avro: SingleObjectCodec | None = None):
    def run() -> int:
        count = 0
        for message in messages:
            decoded = decode(message)
            count += len(decoded.spans)  # type: ignore[attr-defined]
            if to_avro is not None:
                for span in decoded.spans:  # type: ignore[attr-defined]
                    to_avro.encode(span)
        return count

    return run


def main() -> str:
    spans = _spans()
    codec = SingleObjectCodec("Span")
    avro_messages = [codec.encode(span) for span in spans]
    batched = [span_otlp_request(spans[i : i + BATCH_SPANS]) for i in range(0, len(spans), BATCH_SPANS)]
    proto_batched = [request.SerializeToString() for request in batched]
    json_batched = [otlp_json_bytes(request) for request in batched]
    by_trace: dict[str, list[dict]] = {}
    for span in spans:
        by_trace.setdefault(span["trace_id"], []).append(span)
    proto_by_trace = [span_otlp_request(trace).SerializeToString() for trace in by_trace.values()]
    assert sum(len(decode_otlp_proto(message).spans) for message in proto_batched) == len(spans)

    avro = _rate(_avro_full(codec, avro_messages))
    projected = _rate(_avro_projected(ProjectedDecoder(codec, SPAN_FIELDS_ENRICHMENT_READS), avro_messages))
    rows = [
        ("Avro `Span` decode + `validate_span`, one span per message (the `spans` topic)", avro, None),
        ("Avro projected decode + `validate_span` (what the enricher reads of a span today)", projected, None),
        (f"OTLP proto decode, {BATCH_SPANS} spans per message (kafkaexporter batches)",
         _rate(_otlp(decode_otlp_proto, proto_batched)), avro),
        (f"OTLP proto decode, one trace per message (`partition_traces_by_id`, {len(spans) / len(by_trace):.1f}"
         " spans each)", _rate(_otlp(decode_otlp_proto, proto_by_trace)), avro),
        (f"OTLP JSON decode, {BATCH_SPANS} spans per message", _rate(_otlp(decode_otlp_json, json_batched)), avro),
        (f"OTLP proto decode + Avro `Span` encode of each span, {BATCH_SPANS} per message (OTLP into the Avro"
         " enricher)", _rate(_otlp(decode_otlp_proto, proto_batched, codec)), avro),
    ]
    lines = [
        "## OTLP decode beside Avro decode\n",
        f"{len(spans):,} simulator spans ({sum(len(m) for m in avro_messages) / len(spans):.0f} B each as Avro,"
        f" {sum(len(m) for m in proto_batched) / len(spans):.0f} B as batched OTLP proto,"
        f" {sum(len(m) for m in json_batched) / len(spans):.0f} B as OTLP JSON); CPU time, best of 3.\n",
        "| decode | spans/s (one core) | limit (same run) | verdict |\n|---|---|---|---|",
    ]
    for label, rate, reference in rows:
        if reference is None:
            lines.append(f"| {label} | {rate:,.0f} | reference | |")
        else:
            floor = (1 - WITHIN) * reference
            verdict = "ok" if rate >= floor else "UNDER"
            lines.append(f"| {label} | {rate:,.0f} ({rate / reference:.0%} of Avro) | >= {floor:,.0f}"
                         f" (Avro - {WITHIN:.0%}) | {verdict} |")
    lines.append(f"\nCommand: `.venv/bin/python -m tests.benchmarks otlp` (BENCH_OTLP_SPANS={SPANS}).\n")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
