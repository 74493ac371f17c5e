"""Offline replay: enrich a file of spans with a file of reloads, every reload known (``reloadtrace replay``).

Reads JSON Lines or Avro container files, or OTLP files (``.otlp.jsonl``, ``.otlp.pb``) whose reload
spans are reloads too. Loads every reload into a :class:`~streams.timeline.VersionTimeline`, then
streams the spans once, writing ``enriched_spans.jsonl`` (revision 0) and ``anomalies.jsonl``: the
answers the streaming worker converges to (same :class:`~streams.enrichment.SegmentCache` and
:func:`~streams.detection.detect_offline`).

Guarantees: every input record is written or reported as skipped (file, position, reason); spans
are written in input order. Non-guarantees: a reload_id present twice with different content keeps
its first occurrence in file order (the worker: the first in arrival order); timestamps are not
checked against a clock (there is none offline).
"""

from __future__ import annotations

import gc
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import fastavro
import orjson

from schemas.errors import InvalidRecordError, ReloadtraceError
from schemas.files import SUFFIXES, RecordFileError, read_records
from schemas.otlp import INVALID_SPAN
from schemas.otlp_files import OTLP_SUFFIXES, otlp_suffix, read_otlp_messages
from schemas.records import (
    ENRICHMENT_FIELDS,
    LOSSLESS_FIELDS,
    SPAN_KINDS,
    STATUS_CODES,
    ReloadEvent,
    Span,
    validate_span,
)
from schemas.text import bounded_repr, safe_text
from streams.enrichment import SegmentCache
from streams.timeline import VersionTimeline

if TYPE_CHECKING:
    from streams.detection import DetectionSettings

ENRICHED_FILE = "enriched_spans.jsonl"
ANOMALIES_FILE = "anomalies.jsonl"
_SKIPPED_KEPT = 1_000
_CHUNK_LINES = 4_096
_SPAN_FIELD_COUNT = len(Span.__annotations__)


_TRACE_ID = re.compile(r"[0-9a-f]{32}").fullmatch
_SPAN_ID = re.compile(r"[0-9a-f]{16}").fullmatch
_ZERO_TRACE_ID, _ZERO_SPAN_ID = "0" * 32, "0" * 16
_KINDS, _STATUS_CODES = frozenset(SPAN_KINDS), frozenset(STATUS_CODES)
_ATTRIBUTE_TYPES = frozenset((str, bool, int, float))
_INT64_MAX = 2**63 - 1
_V1_FIELD_COUNT = _SPAN_FIELD_COUNT - len(LOSSLESS_FIELDS)
_LOSSLESS_TEXTS = ("trace_state", "scope_name", "scope_version")
_LOSSLESS_COUNTS = ("dropped_attributes_count", "dropped_events_count", "dropped_links_count")


def plainly_valid(span: dict[str, Any]) -> bool:
    """A fast sufficient check that :func:`schemas.records.validate_span` accepts ``span``.

    True only for spans ``validate_span`` accepts (a test holds the two together); False means
    "ask ``validate_span``", which gives the reason. One function, no calls per field: the per-span
    cost of validation is most of replay's own work.
    """
    get = span.get
    trace_id, span_id, parent = get("trace_id"), get("span_id"), get("parent_span_id")
    if type(trace_id) is not str or not _TRACE_ID(trace_id) or trace_id == _ZERO_TRACE_ID:
        return False
    if type(span_id) is not str or not _SPAN_ID(span_id) or span_id == _ZERO_SPAN_ID:
        return False
    if parent is not None and (type(parent) is not str or not _SPAN_ID(parent) or parent == _ZERO_SPAN_ID):
        return False
    start, end, service = get("start_time_unix_nano"), get("end_time_unix_nano"), get("service_name")
    if type(start) is not int or type(end) is not int or not 0 <= start <= end <= _INT64_MAX:
        return False
    if type(service) is not str or not service or type(get("service_instance_id")) is not str:
        return False
    if type(get("name")) is not str:
        return False
    kind, code, message = get("kind"), get("status_code"), get("status_message")
    if type(kind) is not str or kind not in _KINDS or type(code) is not str or code not in _STATUS_CODES:
        return False
    if message is not None and type(message) is not str:
        return False
    attributes, resource = get("attributes"), get("resource_attributes")
    if type(attributes) is not dict:
        return False
    types = _ATTRIBUTE_TYPES
    for key, value in attributes.items():
        if type(key) is not str or type(value) not in types:
            return False
    if resource is not None:
        if type(resource) is not dict:
            return False
        for key, value in resource.items():
            if type(key) is not str or type(value) not in types:
                return False
    if len(span) > _V1_FIELD_COUNT:  # the Span.v2 fields (absent ones are their defaults)
        for name in _LOSSLESS_TEXTS:
            if type(get(name, "")) is not str:
                return False
        for name in _LOSSLESS_COUNTS:
            count = get(name, 0)
            if type(count) is not int or not 0 <= count <= _INT64_MAX:
                return False
        events, links = get("events", ()), get("links", ())
        if type(events) not in (list, tuple) or type(links) not in (list, tuple):
            return False
        for event in events:
            if type(event) is not dict:
                return False
            time_unix_nano, name = event.get("time_unix_nano"), event.get("name")
            count = event.get("dropped_attributes_count", 0)
            if type(time_unix_nano) is not int or not 0 <= time_unix_nano <= _INT64_MAX or type(name) is not str:
                return False
            if type(count) is not int or not 0 <= count <= _INT64_MAX or not _plain_map(event.get("attributes", {})):
                return False
        for link in links:
            if type(link) is not dict:
                return False
            trace_id, span_id = link.get("trace_id"), link.get("span_id")
            count = link.get("dropped_attributes_count", 0)
            if type(trace_id) is not str or not _TRACE_ID(trace_id) or trace_id == _ZERO_TRACE_ID:
                return False
            if type(span_id) is not str or not _SPAN_ID(span_id) or span_id == _ZERO_SPAN_ID:
                return False
            if type(link.get("trace_state", "")) is not str or type(count) is not int or not 0 <= count <= _INT64_MAX:
                return False
            if not _plain_map(link.get("attributes", {})):
                return False
    return True


def _plain_map(attributes: Any) -> bool:
    """A dict of str to str/bool/int/float (the attribute rule of validate_span)."""
    if type(attributes) is not dict:
        return False
    types = _ATTRIBUTE_TYPES
    return all(type(key) is str and type(value) in types for key, value in attributes.items())


class ReplayError(ReloadtraceError):
    """Replay cannot run: an input file is unreadable or the output directory is not writable."""


@dataclass(frozen=True, slots=True)
class SkippedRecord:
    """An input record replay did not use, and why."""

    path: str
    position: int
    """1-based line number (JSONL) or record number (Avro)."""
    reason: str


@dataclass
class ReplaySummary:
    """What a replay read, wrote and skipped."""

    spans_path: Path
    reloads_path: Path
    enriched_path: Path
    anomalies_path: Path
    spans_read: int = 0
    spans_written: int = 0
    spans_skipped: int = 0
    reloads_read: int = 0
    reloads_used: int = 0
    reloads_skipped: int = 0
    duplicate_reloads: int = 0
    conflicting_reloads: int = 0
    anomalies: int = 0
    detection_ran: bool = False
    distinct_answers: int = 0
    seconds: float = 0.0
    """Wall time of the whole replay."""
    enrich_seconds: float = 0.0
    """Wall time of reading, validating, enriching and writing the spans (detection excluded)."""
    skipped: list[SkippedRecord] = field(default_factory=list)
    """The first skipped records (at most 1000); the counts above are complete."""

    @property
    def spans_per_second(self) -> float:
        """Enrichment throughput (detection excluded)."""
        return self.spans_read / self.enrich_seconds if self.enrich_seconds > 0 else 0.0

    def _skip(self, path: Path, position: int, reason: str) -> None:
        if len(self.skipped) < _SKIPPED_KEPT:
            self.skipped.append(SkippedRecord(str(path), position, reason))


def load_reloads(
    path: Path | str | None, summary: ReplaySummary | None = None, timeline: VersionTimeline | None = None
) -> VersionTimeline:
    """Every valid reload of a file in a timeline; invalid and conflicting ones are reported in ``summary``.

    An OTLP file gives the reload events of its reload spans (``schemas.reload_span``); None, no reloads.

    Raises:
        RecordFileError: the file is unreadable.
    """
    timeline = timeline if timeline is not None else VersionTimeline()
    if path is None:
        return timeline
    path = Path(path)
    if otlp_suffix(path) is not None:
        for message in read_otlp_messages(path):
            if message.decoded is None:
                continue  # reported once, with the spans, when the file is also the span file
            for reload in message.decoded.reloads:
                if summary is not None:
                    summary.reloads_read += 1
                _add_reload(timeline, reload, summary, path, message.position)
            for error in message.decoded.errors:
                if error.error_kind != INVALID_SPAN:
                    if summary is not None:
                        summary.reloads_read += 1
                    _count_skipped_reload(summary, path, message.position, error.error)
        return timeline
    for item in read_records(path):
        if summary is not None:
            summary.reloads_read += 1
        if item.record is None:
            _count_skipped_reload(summary, path, item.position, item.error or "unreadable")
            continue
        try:
            reload = ReloadEvent.from_dict(item.record)
        except InvalidRecordError as error:
            _count_skipped_reload(summary, path, item.position, f"invalid reload: {error}")
            continue
        _add_reload(timeline, reload, summary, path, item.position)
    return timeline


def _add_reload(
    timeline: VersionTimeline, reload: ReloadEvent, summary: ReplaySummary | None, path: Path, position: int
) -> None:
    try:
        added = timeline.add(reload)
    except ValueError as error:
        _count_skipped_reload(summary, path, position, f"conflicting reload: {error}")
        if summary is not None:
            summary.conflicting_reloads += 1
        return
    if summary is not None:
        if added:
            summary.reloads_used += 1
        else:
            summary.duplicate_reloads += 1


def _count_skipped_reload(summary: ReplaySummary | None, path: Path, position: int, reason: str) -> None:
    if summary is not None:
        summary.reloads_skipped += 1
        summary._skip(path, position, reason)


def _avro_records(path: Path, handle: BinaryIO) -> Iterator[dict[str, Any]]:
    """The records of an Avro container file.

    Raises:
        RecordFileError: the container is corrupt (fastavro raises many types).
    """
    position = 0
    try:
        for position, record in enumerate(fastavro.reader(handle), start=1):
            yield record
    except Exception as error:
        raise RecordFileError(f"{path}: not a readable Avro container file (after record {position}): {bounded_repr(error)}") from error


def _otlp_spans(path: Path, handle: BinaryIO, summary: ReplaySummary) -> Iterator[dict[str, Any]]:
    """The valid spans of an OTLP file; unparsable messages and invalid spans are reported as skipped."""
    for message in read_otlp_messages(path, handle):
        if message.decoded is None:
            summary.spans_read += 1
            summary.spans_skipped += 1
            summary._skip(path, message.position, f"not an OTLP message: {message.error}")
            continue
        for error in message.decoded.errors:
            if error.error_kind == INVALID_SPAN:
                summary.spans_read += 1
                summary.spans_skipped += 1
                summary._skip(path, message.position, f"invalid span: {error.error}")
        yield from message.decoded.spans


def _open_input(path: Path) -> BinaryIO:
    if path.suffix.lower() not in SUFFIXES and otlp_suffix(path) is None:
        raise RecordFileError(
            f"{path}: unknown extension {path.suffix!r}; use .jsonl, .avro, {' or '.join(OTLP_SUFFIXES)}"
        )
    try:
        return path.open("rb")
    except OSError as error:
        raise RecordFileError(f"{path}: cannot open: {error.strerror or error}") from error


def _enrichment_tail(answer: Any) -> bytes:
    """``,"versions":...}`` + newline: the enrichment fields at revision 0, to splice after a span."""
    return b"," + orjson.dumps(answer.fields(0))[1:] + b"\n"


def run_replay(
    spans_path: Path | str,
    reloads_path: Path | str | None,
    out_dir: Path | str,
    *,
    progress: bool | None = None,
    detect: bool = True,
    detection: DetectionSettings | None = None,
) -> ReplaySummary:
    """Enrich every span of ``spans_path`` with every reload of ``reloads_path`` into ``out_dir``.

    The reload spans of an OTLP ``spans_path`` are reloads too; ``reloads_path`` may then be None.

    Args:
        progress: show a progress bar; default: only when stderr is a terminal.
        detect: run offline anomaly detection.
        detection: its thresholds; default: ``DetectionSettings()`` (from the environment).

    Raises:
        RecordFileError: an input file cannot be read (missing, unknown extension, corrupt Avro).
        ReplayError: the output directory cannot be written, or detection refused the input.
    """
    spans_path, out = Path(spans_path), Path(out_dir)
    reloads = Path(reloads_path) if reloads_path is not None else None
    summary = ReplaySummary(spans_path, reloads or spans_path, out / ENRICHED_FILE, out / ANOMALIES_FILE)
    started = time.perf_counter()
    timeline = load_reloads(reloads, summary)
    handle = _open_input(spans_path)
    if otlp_suffix(spans_path) is not None and spans_path != reloads:
        try:
            load_reloads(spans_path, summary, timeline)
        except RecordFileError:
            handle.close()
            raise
    try:
        out.mkdir(parents=True, exist_ok=True)
        output = summary.enriched_path.open("wb")
    except OSError as error:
        handle.close()
        raise ReplayError(f"{out}: cannot write the output: {error.strerror or error}") from error
    collected: list[dict[str, Any]] | None = [] if detect else None
    show = sys.stderr.isatty() if progress is None else progress
    was_enabled = gc.isenabled()
    enrich_started = time.perf_counter()
    gc.collect()
    gc.freeze()  # the timeline and everything loaded so far: never scanned again
    gc.disable()  # span dicts hold no cycles; a full scan per 700 allocations is pure overhead
    try:
        with handle, output:
            _enrich_all(spans_path, handle, output, timeline, summary, collected, show)
    finally:
        if was_enabled:
            gc.enable()
        gc.unfreeze()
        summary.enrich_seconds = time.perf_counter() - enrich_started
    summary.detection_ran = detect
    with summary.anomalies_path.open("wb") as anomalies_out:
        if collected is not None:
            from streams.detection import DetectionSettings, detect_offline  # numpy and scipy: only when used

            reloads = [reload for service in timeline.services() for reload in timeline.reloads(service)]
            try:
                anomalies = detect_offline(collected, reloads, detection or DetectionSettings())
            except ReloadtraceError as error:
                raise ReplayError(f"anomaly detection failed (the enriched spans are written): {error}") from error
            for anomaly in anomalies:
                anomalies_out.write(orjson.dumps(anomaly.to_dict(), option=orjson.OPT_APPEND_NEWLINE))
                summary.anomalies += 1
    summary.seconds = time.perf_counter() - started
    return summary


def _enrich_all(
    path: Path,
    handle: BinaryIO,
    output: BinaryIO,
    timeline: VersionTimeline,
    summary: ReplaySummary,
    collected: list[dict[str, Any]] | None,
    show_progress: bool,
) -> None:
    # The hot loop: locals only, one dict per span (the decoded record), no per-span objects;
    # JSON lines are parsed inline (no generator), output lines are joined and written in chunks.
    otlp = otlp_suffix(path) is not None
    jsonl = not otlp and path.suffix.lower() == ".jsonl"
    loads, dumps, validate, plainly = orjson.loads, orjson.dumps, validate_span, plainly_valid
    json_error = orjson.JSONDecodeError
    cache = SegmentCache(derive=_enrichment_tail)
    tail_of = cache.derived
    bar = _ProgressBar(path) if show_progress else None
    chunk: list[bytes] = []
    append = chunk.append
    source: Any = _otlp_spans(path, handle, summary) if otlp else handle if jsonl else _avro_records(path, handle)
    span_fields = _SPAN_FIELD_COUNT
    position = written = 0
    try:
        for item in source:
            position += 1
            if jsonl:
                try:
                    record = loads(item)
                except json_error as error:
                    if item.strip():
                        summary.spans_skipped += 1
                        summary._skip(path, position, f"not JSON: {error}")
                    continue
                if type(record) is not dict:
                    summary.spans_skipped += 1
                    summary._skip(path, position, f"expected a JSON object, got {type(record).__name__}")
                    continue
            else:
                record = item
            if not plainly(record):
                try:
                    validate(record)
                except InvalidRecordError as error:
                    summary.spans_skipped += 1
                    summary._skip(path, position, f"invalid span: {error}")
                    continue
            service, instance = record["service_name"], record["service_instance_id"]
            start, end = record["start_time_unix_nano"], record["end_time_unix_nano"]
            tail = tail_of(timeline, service, instance, start, end)
            if len(record) != span_fields:
                if "resource_attributes" not in record:
                    record["resource_attributes"] = None
                for name in ENRICHMENT_FIELDS:  # an enriched span replayed: its old answer goes
                    record.pop(name, None)
            append(dumps(record)[:-1] + tail)
            written += 1
            if collected is not None:
                collected.append(record)
            if len(chunk) >= _CHUNK_LINES:
                output.write(b"".join(chunk))
                chunk.clear()
                if bar is not None:
                    bar.update(handle.tell())
        output.write(b"".join(chunk))
    finally:
        summary.spans_read += position
        summary.spans_written += written
        summary.distinct_answers += cache.computed
        if bar is not None:
            bar.close()


class _ProgressBar:
    """A rich progress bar over the bytes of the span file (only on a terminal)."""

    def __init__(self, path: Path) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("enriching {task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._progress.add_task(path.name, total=path.stat().st_size)
        self._progress.start()

    def update(self, completed: int) -> None:
        self._progress.update(self._task, completed=completed)

    def close(self) -> None:
        self._progress.update(self._task, completed=self._progress.tasks[0].total)
        self._progress.stop()


def print_summary(summary: ReplaySummary, *, shown: int = 20) -> None:
    """Tell what was written and skipped (first ``shown`` skipped records with their positions)."""
    from rich.console import Console

    # Paths and reasons quote file contents: literal text only (no markup), controls made visible.
    console = Console(highlight=False, soft_wrap=True, markup=False)
    errors = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
    console.print(
        safe_text(f"wrote {summary.spans_written} enriched spans to {summary.enriched_path} ")
        + f"({summary.distinct_answers} distinct answers, {summary.reloads_used} reloads, "
        f"{summary.spans_per_second:,.0f} spans/s)"
    )
    if summary.detection_ran:
        console.print(f"wrote {summary.anomalies} anomalies to {summary.anomalies_path}")
    else:
        console.print(f"anomaly detection was not run: wrote an empty {summary.anomalies_path}")
    if summary.duplicate_reloads:
        console.print(f"ignored {summary.duplicate_reloads} exact duplicate reloads")
    for label, count, path in (
        ("spans", summary.spans_skipped, summary.spans_path),
        ("reloads", summary.reloads_skipped, summary.reloads_path),
    ):
        if count:
            errors.print(safe_text(f"skipped {count} invalid {label} in {path}:"))
    for skipped in summary.skipped[:shown]:
        name = skipped.path.lower()
        unit = "message" if name.endswith(".otlp.pb") else "line" if name.endswith(".jsonl") else "record"
        errors.print(safe_text(f"  {skipped.path} {unit} {skipped.position}: {skipped.reason}", 2_000))
    if len(summary.skipped) > shown or summary.spans_skipped + summary.reloads_skipped > len(summary.skipped[:shown]):
        rest = summary.spans_skipped + summary.reloads_skipped - min(shown, len(summary.skipped))
        if rest > 0:
            errors.print(f"  ... and {rest} more")
