"""The hostile-producer soak: mutated and oversized messages into a running worker beside valid simulated traffic.

:func:`run_soak` starts one ``reloadtrace worker`` (real broker, embedded ClickHouse), publishes a
simulation paced in event time and, spread among its spans, ``bad_messages`` hostile messages of
every kind in :data:`KINDS` (each kind at least twice). It waits until every consumer group has
committed the end of its topics, stops the worker and reads the tables. :class:`SoakResult` says:

* ``restarts``: how often the worker had to be started again because it exited (must be 0);
* ``lost`` / ``unexpected`` / ``wrong``: valid spans missing from ``spans_enriched FINAL``, rows there
  that are not valid spans, rows whose enrichment differs from the offline replay of the valid spans;
* ``not_dead_lettered`` / ``dead_lettered_twice`` / ``dead_lettered_valid``: bad messages without a
  ``dead_letters`` row (by source topic, partition and offset), with more than one, and valid ones with one.

Which messages are bad is decided by the contract itself (the codec, ``validate_span`` /
``ReloadEvent.from_dict``, and sizes far from the limits), never by what the worker did.
"""

from __future__ import annotations

import hashlib
import io
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from fastavro import schemaless_writer

from schemas.errors import ReloadtraceError
from schemas.records import ReloadEvent, validate_span
from schemas.settings import KafkaSettings
from tests.e2e.pipeline import REPO, PipelineRun, expected_enrichment, _normal

PRODUCER_MESSAGE_MAX_BYTES = 1_040_000
"""The fuzz producer's limit: above librdkafka's default (1,000,000) that every stage produces with, below the
broker's 1,048,588, so inputs can be larger than anything a stage may write back."""
OVERSIZED_BYTES = 1_030_000
HOSTILE_SERVICE = "[/bold]evil\x1b]8;;https://evil.example\x1b\\svc"
HOSTILE_RELOAD_SERVICE = "hostile-reload-svc"
_MAX_RESTARTS = 3
"""A worker that exits this often is crash-looping: the soak stops and reports what landed."""
_DRAIN_TIMEOUT_S = 300.0


@dataclass
class Message:
    topic: str
    key: bytes | None
    value: bytes | None
    kind: str
    bad: bool
    reload: ReloadEvent | None = None
    span: dict[str, Any] | None = None


def _varint(number: int) -> bytes:
    number = (number << 1) ^ (number >> 63)
    out = bytearray()
    while number & ~0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


class Corpus:
    """Builds hostile messages of each kind; ``span(now)`` gives a fresh valid span of the hostile service."""

    def __init__(self, kafka: KafkaSettings, rng: random.Random) -> None:
        self.kafka = kafka
        self.rng = rng
        self.topics = kafka.topics
        self.span_codec = kafka.codec("Span")
        self.reload_codec = kafka.codec("ReloadEvent")
        self.enriched_codec = kafka.codec("EnrichedSpan")
        self.dead_letter_codec = kafka.codec("DeadLetter")
        self._reloads = 0

    def span(self, now_ns: int, **changes: Any) -> dict[str, Any]:
        rng = self.rng
        start = now_ns - rng.randrange(1, 5_000) * 1_000_000
        return {
            "trace_id": f"{rng.getrandbits(128) | 1:032x}", "span_id": f"{rng.getrandbits(64) | 1:016x}",
            "parent_span_id": None, "name": "chat [/]\x00\u202e", "kind": "SERVER", "service_name": HOSTILE_SERVICE,
            "service_instance_id": "i-\x1b[2J", "start_time_unix_nano": start, "end_time_unix_nano": start + 1_000_000,
            "status_code": "OK", "status_message": None,
            "attributes": {"gen_ai.prompt": "[link=https://evil.example]x[/link]", "tokens": 42, "nul\x00": "v\x00"},
            "resource_attributes": None,
        } | changes  # fmt: skip

    def _span_message(self, kind: str, record: dict[str, Any], *, key: bytes | None = None) -> Message:
        value = self.span_codec.encode(record)
        return Message(self.topics.spans, key if key is not None else record["trace_id"].encode()[:64], value, kind, False, span=record)

    def _bad(self, kind: str, value: bytes | None, topic: str | None = None, key: bytes | None = b"k") -> Message:
        return Message(topic or self.topics.spans, key, value, kind, True)

    # --- the kinds ---------------------------------------------------------------------------

    def oversized_wrong_magic(self, now_ns: int) -> Message:
        return self._bad("oversized_wrong_magic", b"\x00" + self.rng.randbytes(64) * (OVERSIZED_BYTES // 64))

    def huge_trace_id(self, now_ns: int) -> Message:
        return self._bad("huge_trace_id", self.span_codec.encode(self.span(now_ns, trace_id="X" * 520_000)))

    def huge_valid_span(self, now_ns: int) -> Message:
        """Valid, but its enriched form cannot fit the 1,000,000 bytes a stage may produce."""
        span = self.span(now_ns, attributes={"blob": "b" * (OVERSIZED_BYTES - 1_000)})
        return self._bad("huge_valid_span", self.span_codec.encode(span), key=span["trace_id"].encode())

    def huge_key_valid(self, now_ns: int) -> Message:
        return self._span_message("huge_key_valid", self.span(now_ns), key=b"K" * 500_000)

    def hostile_strings_valid(self, now_ns: int) -> Message:
        return self._span_message("hostile_strings_valid", self.span(now_ns, status_message="[/bold]\x1b[31m", status_code="ERROR"))

    def bad_utf8_attribute(self, now_ns: int) -> Message:
        value = self.span_codec.encode(self.span(now_ns, attributes={"k": "ab"}))
        return self._bad("bad_utf8_attribute", value.replace(b"\x02k\x00\x04ab", b"\x02k\x00\x04\xff\xfe", 1))

    def _negative_block(self, now_ns: int, *, count_error: int, size_error: int) -> tuple[bytes, dict]:
        span = self.span(now_ns, attributes={"a": "x", "b": 7})
        entries = io.BytesIO()
        schema = {"type": "record", "name": "E", "fields": [
            {"name": "k", "type": "string"}, {"name": "v", "type": ["string", "boolean", "long", "double"]}]}
        for key, item in span["attributes"].items():
            schemaless_writer(entries, schema, {"k": key, "v": item})
        good = self.span_codec.encode(span)
        empty = self.span_codec.encode({**span, "attributes": {}})
        at = next(i for i in range(len(empty)) if good[i] != empty[i])
        block = _varint(-(2 + count_error)) + _varint(len(entries.getvalue()) + size_error) + entries.getvalue() + b"\x00"
        return good[:at] + block + empty[at + 1 :], span

    def negative_block_bad_count(self, now_ns: int) -> Message:
        return self._bad("negative_block_bad_count", self._negative_block(now_ns, count_error=1, size_error=0)[0])

    def negative_block_wrong_size(self, now_ns: int) -> Message:
        """A negative-count block whose byte size lies: the items are read, the size is advisory (valid)."""
        value, span = self._negative_block(now_ns, count_error=0, size_error=5)
        return Message(self.topics.spans, span["trace_id"].encode(), value, "negative_block_wrong_size", False, span=span)

    def tombstone(self, now_ns: int) -> Message:
        return self._bad("tombstone", None)

    def random_bytes(self, now_ns: int) -> Message:
        return self._bad("random_bytes", self.rng.randbytes(self.rng.randrange(1, 2_000)))

    def truncated(self, now_ns: int) -> Message:
        value = self.span_codec.encode(self.span(now_ns))
        return self._bad("truncated", value[: self.rng.randrange(1, len(value) - 1)])

    def trailing_bytes(self, now_ns: int) -> Message:
        return self._bad("trailing_bytes", self.span_codec.encode(self.span(now_ns)) + b"\x00\x01")

    def unknown_fingerprint(self, now_ns: int) -> Message:
        return self._bad("unknown_fingerprint", b"\xc3\x01" + self.rng.randbytes(8) + self.rng.randbytes(40))

    def wrong_record_type(self, now_ns: int) -> Message:
        return self._bad("wrong_record_type", self.reload_codec.encode(self._reload(now_ns).to_dict()))

    def broken_rules(self, now_ns: int) -> Message:
        change = self.rng.choice([
            {"end_time_unix_nano": 0},
            {"trace_id": "1" * 32 + "\n"},
            {"span_id": "0" * 16},
            {"parent_span_id": "abc"},
            {"service_name": ""},
            {"start_time_unix_nano": now_ns + 10**15, "end_time_unix_nano": now_ns + 10**15},
            {"start_time_unix_nano": 5, "end_time_unix_nano": 6},
        ])
        return self._bad("broken_rules", self.span_codec.encode(self.span(now_ns, **change)))

    def _reload(self, now_ns: int, **changes: Any) -> ReloadEvent:
        self._reloads += 1
        record = {
            "reload_id": f"hostile-{self._reloads}-\x00[/]", "service_name": HOSTILE_RELOAD_SERVICE,
            "service_instance_id": None, "component": "model\x1b[2J", "old_version": "--no-dry-run\x00",
            "new_version": "[link=https://evil.example]v2[/link]", "requested_time_unix_nano": now_ns - 2_000_000,
            "effective_time_unix_nano": now_ns - 1_000_000, "status": "SUCCEEDED", "source": "fuzz",
            "trace_id": None, "span_id": None, "model_context": {"api_key": "x"}, "changed_keys": ["a\x00"],
        } | changes  # fmt: skip
        return ReloadEvent(**{**record, "changed_keys": tuple(record["changed_keys"])})

    def reload_hostile_valid(self, now_ns: int) -> Message:
        reload = self._reload(now_ns)
        return Message(
            self.topics.reloads, reload.service_name.encode(), self.reload_codec.encode(reload.to_dict()),
            "reload_hostile_valid", False, reload=reload,
        )

    def reload_effective_before_requested(self, now_ns: int) -> Message:
        record = self._reload(now_ns).to_dict() | {"requested_time_unix_nano": now_ns, "effective_time_unix_nano": now_ns - 10}
        return self._bad("reload_effective_before_requested", self.reload_codec.encode(record), self.topics.reloads)

    def reload_truncated(self, now_ns: int) -> Message:
        value = self.reload_codec.encode(self._reload(now_ns).to_dict())
        return self._bad("reload_truncated", value[: self.rng.randrange(11, len(value) - 1)], self.topics.reloads)

    def reload_tombstone(self, now_ns: int) -> Message:
        return self._bad("reload_tombstone", None, self.topics.reloads, key=HOSTILE_RELOAD_SERVICE.encode())

    def reload_random_bytes(self, now_ns: int) -> Message:
        return self._bad("reload_random_bytes", self.rng.randbytes(self.rng.randrange(1, 300)), self.topics.reloads)

    def dead_letter_topic_junk(self, now_ns: int) -> Message:
        """A message on the dead-letter topic itself with a good header and a cut body: the sink dead-letters it."""
        whole = self.dead_letter_codec.encode({
            "source_topic": "x" * 40, "source_partition": 0, "source_offset": 0, "raw_key": None, "raw_value": b"v" * 40,
            "error_kind": "x", "error": "x", "stage": "x", "dead_lettered_time_unix_nano": now_ns,
        })  # fmt: skip
        return self._bad("dead_letter_topic_junk", whole[: 10 + self.rng.randrange(1, 30)], self.topics.dead_letter)

    def enriched_topic_junk(self, now_ns: int) -> Message:
        whole = self.enriched_codec.encode({
            **self.span(now_ns), "versions": {}, "versions_at_end": {}, "reload_ids": {}, "mid_flight": False,
            "mid_flight_reload_ids": [], "enrichment_revision": 0,
        })  # fmt: skip
        return self._bad("enriched_topic_junk", whole[: 10 + self.rng.randrange(1, 20)], self.topics.spans_enriched)


KINDS: dict[str, float] = {
    # weight per kind; the oversized ones stay rare (each is ~1 MB through the broker and the store)
    "oversized_wrong_magic": 0.1, "huge_trace_id": 0.1, "huge_valid_span": 0.1, "huge_key_valid": 0.1,
    "hostile_strings_valid": 4, "bad_utf8_attribute": 8, "negative_block_bad_count": 6, "negative_block_wrong_size": 4,
    "tombstone": 6, "random_bytes": 14, "truncated": 10, "trailing_bytes": 6, "unknown_fingerprint": 6,
    "wrong_record_type": 4, "broken_rules": 12, "reload_hostile_valid": 0.5, "reload_effective_before_requested": 2,
    "reload_random_bytes": 3, "reload_truncated": 2, "reload_tombstone": 1, "dead_letter_topic_junk": 2, "enriched_topic_junk": 2,
}  # fmt: skip


def schedule(count: int, rng: random.Random) -> list[str]:
    """``count`` kind names: each kind at least twice, the rest drawn by weight, shuffled."""
    kinds = [name for name in KINDS for _ in range(2)]
    kinds += rng.choices(list(KINDS), weights=list(KINDS.values()), k=max(0, count - len(kinds)))
    rng.shuffle(kinds)
    return kinds


def judge(message: Message, kafka: KafkaSettings) -> bool:
    """True when the contract refuses ``message`` (checked against the codec, not taken from the generator)."""
    if message.topic == kafka.topics.spans:
        if message.value is None:
            return True
        try:
            span = kafka.codec("Span").decode(message.value)
            validate_span(span)
        except ReloadtraceError:
            return True
        now = time.time_ns()
        plausible = now - 30 * 86_400 * 10**9 <= span["start_time_unix_nano"] and span["end_time_unix_nano"] <= now + 3_600 * 10**9
        return not plausible or len(message.value) + len(message.key or b"") > 990_000
    if message.topic == kafka.topics.reloads:
        if message.value is None:
            return True
        try:
            ReloadEvent.from_dict(kafka.codec("ReloadEvent").decode(message.value))
        except ReloadtraceError:
            return True
        return False
    return True  # junk on the sink's own input topics


@dataclass
class SoakResult:
    valid_spans: int = 0
    bad_messages: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    lost: int = 0
    unexpected: int = 0
    wrong: int = 0
    duplicate_spans: int = 0
    reloads_missing: int = 0
    not_dead_lettered: int = 0
    dead_lettered_twice: int = 0
    dead_lettered_valid: int = 0
    truncated_letters: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.restarts or self.lost or self.unexpected or self.wrong or self.duplicate_spans or self.reloads_missing
            or self.not_dead_lettered or self.dead_lettered_twice or self.dead_lettered_valid
        )


class HostileLoad(threading.Thread):
    """Publishes the simulation at ``pace`` and the hostile messages spread evenly among its spans."""

    def __init__(self, kafka: KafkaSettings, simulation: Any, kinds: list[str], *, pace: float, seed: int) -> None:
        super().__init__(name="hostile-load", daemon=True)
        self.kafka = kafka
        self.simulation = simulation
        self.kinds = kinds
        self.pace = pace
        self.corpus = Corpus(kafka, random.Random(seed))
        self.sent: list[tuple[Message, list[int]]] = []  # message, [partition, offset] once delivered
        self.error: BaseException | None = None
        self._producer = Producer(
            kafka.confluent_config()
            | {"linger.ms": 5, "message.timeout.ms": 300_000, "message.max.bytes": PRODUCER_MESSAGE_MAX_BYTES}
        )

    def run(self) -> None:
        try:
            self._publish()
        except BaseException as error:  # noqa: BLE001 - re-raised by the caller
            self.error = error

    def _send(self, topic: str, key: bytes | None, value: bytes | None, position: list[int] | None = None) -> None:
        def delivered(error: Any, message: Any) -> None:
            if error is not None:
                self.error = RuntimeError(f"load delivery to {topic} failed: {error}")
            elif position is not None:
                position.extend((message.partition(), message.offset()))

        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def _publish(self) -> None:
        topics = self.kafka.topics
        span_codec, reload_codec = self.kafka.codec("Span"), self.kafka.codec("ReloadEvent")
        order = self.simulation.publish_order
        spans_total = sum(1 for item in order if item.kind == "span")
        per_span = len(self.kinds) / max(1, spans_total)
        owed = 0.0
        pending = list(reversed(self.kinds))
        first = order[0].time_unix_nano
        started = time.monotonic()
        for item in order:
            delay = started + (item.time_unix_nano - first) / 1e9 / self.pace - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if item.kind == "span":
                span = self.simulation.spans[item.index]
                self._send(topics.spans, span["trace_id"].encode(), span_codec.encode(span))
                owed += per_span
                while owed >= 1 and pending:
                    owed -= 1
                    self._send_hostile(pending.pop())
            else:
                self._producer.flush(60)
                reload = self.simulation.reloads[item.index]
                self._send(topics.reloads, reload.service_name.encode(), reload_codec.encode(reload.to_dict()))
                self._producer.flush(60)
        while pending:
            self._send_hostile(pending.pop())
        if self._producer.flush(300):
            raise RuntimeError("load messages undelivered")

    def _send_hostile(self, kind: str) -> None:
        message: Message = getattr(self.corpus, kind)(time.time_ns())
        message.bad = judge(message, self.kafka)
        position: list[int] = []
        if message.topic == self.kafka.topics.reloads:
            self._producer.flush(60)  # a reload is ordered after what came before, as the simulation's are
        self._send(message.topic, message.key, message.value, position)
        self.sent.append((message, position))
        if message.value is not None and len(message.value) > 100_000:
            message.value = hashlib.sha256(message.value).digest()  # keep memory flat: only the hash is needed


def _dump(run: PipelineRun) -> dict[str, Any]:
    code = (
        "import sys, orjson\n"
        "from sinks.report import open_report_client\n"
        "client, _ = open_report_client(sys.argv[1])\n"
        "q = lambda sql: [list(r) for r in client.query(sql).result_rows]\n"
        "out = {\n"
        " 'spans': q('SELECT trace_id, span_id, versions, versions_at_end, reload_ids, mid_flight, mid_flight_reload_ids,"
        " enrichment_revision FROM spans_enriched FINAL'),\n"
        " 'reload_ids': [r[0] for r in q('SELECT reload_id FROM reload_events FINAL')],\n"
        " 'dead_letters': q('SELECT source_topic, source_partition, source_offset, error_kind, stage, truncated,"
        " raw_value_length, raw_value_sha256 FROM dead_letters FINAL'),\n"
        "}\n"
        "open(sys.argv[2], 'wb').write(orjson.dumps(out))\n"
    )
    out = run.directory / "soak_tables.json"
    subprocess.run([sys.executable, "-c", code, run.sink_url, str(out)], cwd=REPO, check=True)
    return orjson.loads(out.read_bytes())


def run_soak(
    kafka: KafkaSettings,
    directory: Path,
    *,
    simulation: Any,
    bad_messages: int,
    pace: float = 2.0,
    seed: int = 14,
    log: Callable[[str], None] = lambda text: None,
) -> SoakResult:
    """Publish ``simulation`` and ``bad_messages`` hostile messages into one worker; judge the tables (module docstring)."""
    result = SoakResult()
    started = time.monotonic()
    run = PipelineRun(kafka, directory)
    kinds = schedule(bad_messages, random.Random(seed))
    workers = [run.start_worker()]
    load = HostileLoad(kafka, simulation, kinds, pace=pace, seed=seed)
    try:
        time.sleep(3.0)
        load.start()
        drained_by: float | None = None
        while result.restarts <= _MAX_RESTARTS:
            if not workers[-1].running():
                result.restarts += 1
                log(f"worker exited ({workers[-1].returncode}); restarting:\n{workers[-1].first_error()}")
                workers.append(run.start_worker())
            elif not load.is_alive():
                drained_by = drained_by or time.monotonic() + _DRAIN_TIMEOUT_S
                if run.lag() == 0 or time.monotonic() > drained_by:
                    break
            time.sleep(1.0)
        load.join()
        if load.error is not None:
            raise load.error
        if result.restarts == 0:
            run.drain(alive=[workers[-1]], timeout_s=_DRAIN_TIMEOUT_S)
            result.restarts += 0 if workers[-1].running() else 1
    finally:
        run.stop()
    tables = _dump(run)
    result.seconds = time.monotonic() - started

    valid_spans = list(simulation.spans)
    valid_reloads = list(simulation.reloads)
    bad: dict[tuple[str, int, int], Message] = {}
    good_positions: set[tuple[str, int, int]] = set()
    for message, position in load.sent:
        result.by_kind[message.kind] = result.by_kind.get(message.kind, 0) + 1
        where = (message.topic, position[0], position[1])
        if message.bad:
            bad[where] = message
        else:
            good_positions.add(where)
            if message.span is not None:
                valid_spans.append(message.span)
            if message.reload is not None:
                valid_reloads.append(message.reload)
    result.valid_spans, result.bad_messages = len(valid_spans), len(bad)

    expected = expected_enrichment(valid_spans, valid_reloads)
    got = {(row[0], row[1]): row for row in tables["spans"]}
    result.duplicate_spans = len(tables["spans"]) - len(got)
    result.lost = len(expected.keys() - got.keys())
    result.unexpected = len(got.keys() - expected.keys())
    wrong = [key for key in expected.keys() & got.keys() if tuple(_normal(got[key])) != expected[key]]
    result.wrong = len(wrong)
    result.reloads_missing = len({r.reload_id for r in valid_reloads} ^ set(tables["reload_ids"]))

    letters: dict[tuple[str, int, int], int] = {}
    for topic, partition, offset, *_ in tables["dead_letters"]:
        letters[(topic, partition, offset)] = letters.get((topic, partition, offset), 0) + 1
    result.truncated_letters = sum(1 for row in tables["dead_letters"] if row[5])
    missing = [where for where in bad if where not in letters]
    result.not_dead_lettered = len(missing)
    result.dead_lettered_twice = sum(1 for where in bad if letters.get(where, 0) > 1)
    result.dead_lettered_valid = sum(1 for where in letters if where in good_positions)
    result.examples = [f"not dead-lettered: {bad[w].kind} at {w}" for w in missing[:5]]
    result.examples += [f"lost span {key}" for key in list(expected.keys() - got.keys())[:3]]
    result.examples += [f"wrong span {key}: {got[key]} != {expected[key]}" for key in wrong[:3]]
    if not result.clean:
        log(run.logs())
    return result


def report_lines(result: SoakResult) -> list[str]:
    """The soak's figures as Markdown lines."""
    return [
        f"- {result.bad_messages:,} bad messages and {result.valid_spans:,} valid spans in {result.seconds:,.0f} s",
        f"- worker restarts: {result.restarts} (must be 0)",
        f"- valid spans: {result.lost} lost, {result.unexpected} unexpected, {result.duplicate_spans} duplicated after"
        f" FINAL, {result.wrong} enriched unlike the replay; reloads missing or extra: {result.reloads_missing}",
        f"- bad messages: {result.not_dead_lettered} not in dead_letters, {result.dead_lettered_twice} there twice or"
        f" more, {result.dead_lettered_valid} valid messages dead-lettered; {result.truncated_letters} letters kept"
        " a prefix (truncated)",
        "- by kind: " + ", ".join(f"{kind} {count:,}" for kind, count in sorted(result.by_kind.items())),
        *(f"- {example}" for example in result.examples),
    ]
