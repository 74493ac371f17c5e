"""Post-reload regression detection: windows, one-sided tests, sequential looks, reload health (pure core).

For each SUCCEEDED service-wide reload of S at T (DESIGN.md): baseline = S's requests (SERVER
spans; every span when there is none) started in ``[T - W, T)``, candidate = those started in
``[T, T + W)`` cut at S's next SUCCEEDED reload; a canary compares its instance with its peers
over the same period. Latency: one-sided Mann-Whitney U; error rate: one-sided Fisher exact; an
anomaly needs significance, a material effect and minimum counts. Looks follow a fixed schedule;
a look at ``T + L`` uses the requests started before it and is taken once the caller's event-time
watermark reaches it; each look tests at ``alpha / K`` (Bonferroni), so the false-alarm rate per
reload and metric is at most ``alpha``. Reload health (durations, FAILED streaks) is judged at T.

Guarantee: looks depend only on data, never on when they are taken, so replay and streaming emit
the same anomalies whenever the watermark's promise holds.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from scipy.stats import fisher_exact, mannwhitneyu

from schemas.errors import ReloadtraceError
from schemas.records import SEVERITIES, Anomaly, ReloadEvent
from schemas.text import bounded_repr
from streams.request_feed import RequestRow

_NANOS_PER_MS = 1_000_000
_ANOMALY_NAMESPACE = uuid.UUID("6f1d2a34-5b1e-4c3a-9d0e-7a7c0de0a11e")

_DEFAULT_WINDOW_MS = 300_000
_DEFAULT_LOOK_SCHEDULE_MS = (2_000, 5_000, 10_000, 20_000, 40_000, 60_000, 120_000, 180_000, 240_000)
_DEFAULT_MAX_RELOAD_LATENESS_MS = 60_000
_DEFAULT_ALPHA = 0.001
_DEFAULT_CRITICAL_ALPHA = 0.00001
_DEFAULT_MIN_BASELINE_SAMPLES = 30
_DEFAULT_MIN_CANDIDATE_SAMPLES = 20
_DEFAULT_LATENCY_RATIO_FLOOR = 1.3
_DEFAULT_LATENCY_CRITICAL_RATIO = 1.8
_DEFAULT_LATENCY_FLOOR_MS = 5.0
_DEFAULT_ERROR_RATE_DELTA_FLOOR = 0.05
_DEFAULT_ERROR_RATE_CRITICAL_DELTA = 0.10
_DEFAULT_RELOAD_DURATION_CEILING_MS = 60_000.0
_DEFAULT_RELOAD_DURATION_FACTOR = 5.0
_DEFAULT_RELOAD_DURATION_FLOOR_MS = 1_000.0
_DEFAULT_RELOAD_DURATION_MIN_HISTORY = 5
_DEFAULT_FAILED_STREAK_WARNING = 2
_DEFAULT_FAILED_STREAK_CRITICAL = 3

LATENCY = "latency"
ERROR_RATE = "error_rate"
RELOAD_DURATION = "reload_duration"
RELOAD_FAILED = "reload_failed"
_SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


class DetectionError(ReloadtraceError):
    """Detection input that cannot be judged (a span without the fields a request needs)."""


class DetectionSettings(BaseSettings):
    """Thresholds of regression detection; environment ``RELOADTRACE_DETECTION_<FIELD>``, read where it is built.

    Raises:
        pydantic.ValidationError: a value is out of range (e.g. a look offset beyond the window).
    """

    model_config = SettingsConfigDict(env_prefix="RELOADTRACE_DETECTION_", extra="ignore")

    window_ms: int = Field(default=_DEFAULT_WINDOW_MS, ge=1_000, description="W: length of baseline and candidate windows")
    look_schedule_ms: Annotated[tuple[int, ...], NoDecode] = Field(
        default=_DEFAULT_LOOK_SCHEDULE_MS,
        description="Event-time offsets (ms, comma-separated in the environment) after a reload at which it is judged;"
        " offsets beyond W are dropped and W is always the last look",
    )
    max_reload_lateness_ms: int = Field(
        default=_DEFAULT_MAX_RELOAD_LATENESS_MS, ge=0, description="How late a reload may arrive and still be judged fully"
    )
    alpha: float = Field(default=_DEFAULT_ALPHA, gt=0, lt=1, description="Family-wise false-alarm rate per reload and metric")
    critical_alpha: float = Field(
        default=_DEFAULT_CRITICAL_ALPHA, gt=0, lt=1, description="Family-wise level a CRITICAL verdict must reach"
    )
    min_baseline_samples: int = Field(default=_DEFAULT_MIN_BASELINE_SAMPLES, ge=1, description="Fewest baseline requests")
    min_candidate_samples: int = Field(default=_DEFAULT_MIN_CANDIDATE_SAMPLES, ge=1, description="Fewest candidate requests")
    latency_ratio_floor: float = Field(
        default=_DEFAULT_LATENCY_RATIO_FLOOR, gt=1, description="Median or p95 latency ratio a regression must reach"
    )
    latency_critical_ratio: float = Field(
        default=_DEFAULT_LATENCY_CRITICAL_RATIO, gt=1, description="Median or p95 latency ratio of a CRITICAL regression"
    )
    latency_floor_ms: float = Field(
        default=_DEFAULT_LATENCY_FLOOR_MS, ge=0, description="Absolute latency increase (ms) a regression must reach"
    )
    error_rate_delta_floor: float = Field(
        default=_DEFAULT_ERROR_RATE_DELTA_FLOOR, gt=0, le=1, description="Error-rate increase (fraction) of a regression"
    )
    error_rate_critical_delta: float = Field(
        default=_DEFAULT_ERROR_RATE_CRITICAL_DELTA, gt=0, le=1, description="Error-rate increase of a CRITICAL regression"
    )
    reload_duration_ceiling_ms: float = Field(
        default=_DEFAULT_RELOAD_DURATION_CEILING_MS, gt=0, description="A reload slower than this is CRITICAL"
    )
    reload_duration_factor: float = Field(
        default=_DEFAULT_RELOAD_DURATION_FACTOR, gt=1, description="A reload this many times its history's median is WARNING"
    )
    reload_duration_floor_ms: float = Field(
        default=_DEFAULT_RELOAD_DURATION_FLOOR_MS, ge=0, description="...and at least this much (ms) above that median"
    )
    reload_duration_min_history: int = Field(
        default=_DEFAULT_RELOAD_DURATION_MIN_HISTORY, ge=1, description="Earlier reloads needed before judging by history"
    )
    failed_streak_warning: int = Field(
        default=_DEFAULT_FAILED_STREAK_WARNING, ge=1, description="FAILED reloads in a row that make a WARNING"
    )
    failed_streak_critical: int = Field(
        default=_DEFAULT_FAILED_STREAK_CRITICAL, ge=1, description="FAILED reloads in a row that make a CRITICAL"
    )
    baseline_since_previous_reload: bool = Field(
        default=False,
        description="Start the baseline at the previous SUCCEEDED reload of the service when it is within W, so an"
        " ongoing regression is not blamed on the next, unrelated reload (off: the baseline is [T - W, T) as designed)",
    )

    @field_validator("look_schedule_ms", mode="before")
    @classmethod
    def _split_schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(int(part) for part in value.replace(",", " ").split())
        return value

    @model_validator(mode="after")
    def _coherent(self) -> DetectionSettings:
        if any(offset <= 0 for offset in self.look_schedule_ms):
            raise ValueError(f"look offsets must be positive: {self.look_schedule_ms}")
        if self.critical_alpha > self.alpha:
            raise ValueError("critical_alpha must not exceed alpha")
        if self.latency_critical_ratio < self.latency_ratio_floor:
            raise ValueError("latency_critical_ratio must be >= latency_ratio_floor")
        if self.error_rate_critical_delta < self.error_rate_delta_floor:
            raise ValueError("error_rate_critical_delta must be >= error_rate_delta_floor")
        if self.failed_streak_critical < self.failed_streak_warning:
            raise ValueError("failed_streak_critical must be >= failed_streak_warning")
        return self

    @property
    def looks_ms(self) -> tuple[int, ...]:
        """The full schedule: sorted distinct offsets, always ending at the window's end."""
        return tuple(sorted({offset for offset in self.look_schedule_ms if offset < self.window_ms} | {self.window_ms}))

    @property
    def alpha_per_look(self) -> float:
        """Bonferroni: the level each look tests at."""
        return self.alpha / len(self.looks_ms)

    @property
    def critical_alpha_per_look(self) -> float:
        return self.critical_alpha / len(self.looks_ms)

    @property
    def retention_ms(self) -> int:
        """How much event time of requests a streaming detector keeps behind its watermark (W + reload lateness)."""
        return self.window_ms + self.max_reload_lateness_ms


@dataclass(frozen=True, slots=True)
class RequestObservation:
    """What detection needs of one request (a span of the service)."""

    service_name: str
    service_instance_id: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    is_error: bool
    kind: str

    @classmethod
    def from_span(cls, span: Mapping[str, Any]) -> RequestObservation:
        """From a Span or EnrichedSpan record.

        Raises:
            DetectionError: a field detection needs is missing or mistyped.
        """
        try:
            return cls(
                str(span["service_name"]),
                str(span["service_instance_id"]),
                int(span["start_time_unix_nano"]),
                int(span["end_time_unix_nano"]),
                span["status_code"] == "ERROR",
                str(span["kind"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DetectionError(f"span cannot be judged: {bounded_repr(error)}") from error


def anomaly_id(reload_id: str, metric: str) -> str:
    """Stable id of the anomaly of ``metric`` after ``reload_id`` (a UUIDv5)."""
    return str(uuid.uuid5(_ANOMALY_NAMESPACE, f"{reload_id}\x00{metric}"))


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one test at one look (pure data, for tests and diagnostics)."""

    metric: str
    severity: str | None
    baseline_value: float
    observed_value: float
    p_value: float
    baseline_count: int
    observed_count: int


@dataclass(frozen=True, slots=True)
class Look:
    """One look at a reload: every verdict it reached, and the highest severity emitted so far per metric.

    ``looks_total`` counts the reload's looks as scheduled when it was taken (a later reload that
    cuts the window can only merge the remaining ones into one look at the cut); the last look
    (``look_index == looks_total - 1``) closes the judgment. A FAILED reload has one look, at its
    effective time, with its health verdict only.
    """

    reload: ReloadEvent
    look_time_unix_nano: int
    look_index: int
    looks_total: int
    window_end_unix_nano: int
    verdicts: tuple[Verdict, ...]
    emitted: dict[str, int]
    """metric -> rank in SEVERITIES of the highest severity emitted up to this look."""

    @property
    def final(self) -> bool:
        return self.look_index == self.looks_total - 1


class _ServiceRequests:
    """Requests of one service, appended in any order, viewed as arrays sorted by start time.

    Kept as columns (about 22 bytes a request). A request given twice (same instance, start, end,
    outcome and kind: an upstream at-least-once redelivery) counts once, so streaming after a crash
    upstream still agrees with replay.
    """

    __slots__ = ("_arrays", "_instance_codes", "_pending")

    _COMPACT_ROWS = 65_536

    def __init__(self) -> None:
        self._pending: list[tuple[int, float, bool, int, bool]] = []
        self._arrays: tuple[np.ndarray, ...] = _empty_columns()
        self._instance_codes: dict[str, int] = {}

    def add(self, instance: str, start: int, end: int, is_error: bool, kind: str) -> None:
        code = self._instance_codes.setdefault(instance, len(self._instance_codes))
        self._pending.append((start, (end - start) / _NANOS_PER_MS, bool(is_error), code, kind == "SERVER"))
        if len(self._pending) >= self._COMPACT_ROWS:
            self._compact()

    def instance_code(self, instance: str) -> int:
        return self._instance_codes.get(instance, -1)

    def _compact(self) -> None:
        """Merge pending rows into the sorted, duplicate-free columns."""
        if not self._pending:
            return
        starts, latencies, errors, instances, servers = zip(*self._pending, strict=True)
        self._pending = []
        added = (
            np.asarray(starts, dtype=np.int64),
            np.asarray(latencies, dtype=np.float64),
            np.asarray(errors, dtype=bool),
            np.asarray(instances, dtype=np.int32),
            np.asarray(servers, dtype=bool),
        )
        columns = tuple(np.concatenate([old, new]) for old, new in zip(self._arrays, added, strict=True))
        order = np.lexsort((columns[4], columns[3], columns[2], columns[1], columns[0]))
        columns = tuple(column[order] for column in columns)
        if len(order) > 1:
            same = np.ones(len(order) - 1, dtype=bool)
            for column in columns:
                same &= column[1:] == column[:-1]
            keep = np.concatenate([[True], ~same])
            if not keep.all():
                columns = tuple(column[keep] for column in columns)
        self._arrays = columns

    def arrays(self) -> tuple[np.ndarray, ...]:
        """(starts, latencies_ms, errors, instance_codes, is_server), sorted by start."""
        self._compact()
        return self._arrays

    def prune(self, before_unix_nano: int) -> None:
        self._compact()
        cut = int(np.searchsorted(self._arrays[0], before_unix_nano, side="left"))
        if cut:
            self._arrays = tuple(column[cut:] for column in self._arrays)

    def __len__(self) -> int:
        self._compact()
        return len(self._arrays[0])


def _empty_columns() -> tuple[np.ndarray, ...]:
    return (
        np.empty(0, dtype=np.int64),
        np.empty(0, dtype=np.float64),
        np.empty(0, dtype=bool),
        np.empty(0, dtype=np.int32),
        np.empty(0, dtype=bool),
    )


@dataclass(slots=True)
class _Pending:
    """A reload still being judged: which looks were taken, which severities were emitted."""

    reload: ReloadEvent
    last_look_unix_nano: int | None = None
    health_done: bool = False
    health: tuple[Verdict, ...] = ()
    emitted: dict[str, int] = field(default_factory=dict)
    first_detected: dict[str, int] = field(default_factory=dict)
    finished: bool = False


class RegressionDetector:
    """Judges reloads of any number of services against their requests (pure, no clock).

    Add requests and reloads in any order, then call :meth:`advance` with an event-time
    watermark (every request started before it has been added) or :meth:`finish` when everything
    is known. Each returns the :class:`~schemas.records.Anomaly` records emitted by the looks it
    took, each ``(anomaly_id, severity)`` at most once.

    Args:
        settings: thresholds and look schedule, built by the caller (the core reads no environment).
    """

    def __init__(self, settings: DetectionSettings) -> None:
        self.settings = settings
        self._looks_ns = tuple(offset * _NANOS_PER_MS for offset in self.settings.looks_ms)
        self._window_ns = self.settings.window_ms * _NANOS_PER_MS
        self._requests: dict[str, _ServiceRequests] = {}
        self._reloads: dict[str, ReloadEvent] = {}
        self._succeeded_by_service: dict[str, list[tuple[int, str]]] = {}
        self._by_service_component: dict[tuple[str, str], list[ReloadEvent]] = {}
        self._pending: dict[str, _Pending] = {}
        self._looks: list[Look] = []

    # --- input ---------------------------------------------------------------------------------

    def add_request(self, request: RequestObservation) -> None:
        row = RequestRow(
            request.service_instance_id,
            request.start_time_unix_nano,
            request.end_time_unix_nano,
            request.is_error,
            request.kind,
        )
        self.add_rows(request.service_name, [row])

    def add_rows(self, service_name: str, rows: Iterable[RequestRow]) -> None:
        """Requests of a service, as the enricher's feed carries them (:mod:`streams.request_feed`)."""
        requests = self._requests.get(service_name)
        if requests is None:
            requests = self._requests[service_name] = _ServiceRequests()
        for instance, start, end, is_error, kind in rows:
            requests.add(instance, int(start), int(end), is_error, kind)

    def add_reload(self, reload: ReloadEvent) -> bool:
        """Add a reload; False when its reload_id is already known (the first arrival wins)."""
        if reload.reload_id in self._reloads:
            return False
        self._reloads[reload.reload_id] = reload
        if reload.succeeded:
            succeeded = self._succeeded_by_service.setdefault(reload.service_name, [])
            succeeded.append((reload.effective_time_unix_nano, reload.reload_id))
            succeeded.sort()
        history = self._by_service_component.setdefault((reload.service_name, reload.component), [])
        history.append(reload)
        history.sort(key=lambda r: (r.requested_time_unix_nano, r.effective_time_unix_nano, r.reload_id))
        self._pending[reload.reload_id] = _Pending(reload)
        return True

    # --- progress ------------------------------------------------------------------------------

    def advance(self, progress_unix_nano: int) -> list[Anomaly]:
        """Take every look due at ``progress_unix_nano``; return the anomalies they emitted.

        ``progress_unix_nano`` is an event-time watermark: every request that started before it,
        and every reload effective before it, has been added.
        """
        out: list[Anomaly] = []
        horizon = progress_unix_nano
        for pending in sorted(self._pending.values(), key=lambda p: (p.reload.effective_time_unix_nano, p.reload.reload_id)):
            self._judge(pending, horizon, out)
        for reload_id in [rid for rid, pending in self._pending.items() if pending.finished]:
            del self._pending[reload_id]
        return out

    def finish(self) -> list[Anomaly]:
        """Take every remaining look (all data is known: replay)."""
        return self.advance(2**63 - 1)

    def take_looks(self) -> list[Look]:
        """The looks taken since the last call (every verdict of each, anomalous or not), in the order taken."""
        looks, self._looks = self._looks, []
        return looks

    def prune(self, progress_unix_nano: int) -> None:
        """Forget requests no look can need any more (streaming memory bound)."""
        cutoff = progress_unix_nano - self.settings.retention_ms * _NANOS_PER_MS
        for requests in self._requests.values():
            requests.prune(cutoff)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def request_count(self) -> int:
        return sum(len(requests) for requests in self._requests.values())

    # --- judging -------------------------------------------------------------------------------

    def _judge(self, pending: _Pending, horizon: int, out: list[Anomaly]) -> None:
        reload = pending.reload
        effective = reload.effective_time_unix_nano
        if not pending.health_done and effective <= horizon:
            pending.health_done = True
            pending.health = tuple(self._health(reload))
            for verdict in pending.health:
                self._emit(pending, verdict, effective, out)
            if not reload.succeeded:
                self._record_look(pending, effective, 0, 1, (), effective)
        if not reload.succeeded:
            pending.finished = pending.health_done
            return
        end = self._candidate_end(reload)
        looks = sorted({min(effective + offset, end) for offset in self._looks_ns})
        for index, look in enumerate(looks):
            if pending.last_look_unix_nano is not None and look <= pending.last_look_unix_nano:
                continue
            if look > horizon:
                break
            pending.last_look_unix_nano = look
            verdicts = self.judge_window(reload, look)
            for verdict in verdicts:
                self._emit(pending, verdict, look, out)
            self._record_look(pending, look, index, len(looks), verdicts, end)
        pending.finished = pending.health_done and pending.last_look_unix_nano == looks[-1]

    def _record_look(
        self, pending: _Pending, look: int, index: int, total: int, verdicts: Iterable[Verdict], window_end: int
    ) -> None:
        self._looks.append(
            Look(
                reload=pending.reload,
                look_time_unix_nano=look,
                look_index=index,
                looks_total=total,
                window_end_unix_nano=window_end,
                verdicts=(*pending.health, *verdicts),
                emitted=dict(pending.emitted),
            )
        )

    def _candidate_end(self, reload: ReloadEvent) -> int:
        effective = reload.effective_time_unix_nano
        end = effective + self._window_ns
        for other_effective, other_id in self._succeeded_by_service.get(reload.service_name, ()):
            if other_effective > effective and other_id != reload.reload_id:
                return min(end, other_effective)
        return end

    def _baseline_start(self, reload: ReloadEvent) -> int:
        effective = reload.effective_time_unix_nano
        start = effective - self._window_ns
        if self.settings.baseline_since_previous_reload:
            for other_effective, other_id in self._succeeded_by_service.get(reload.service_name, ()):
                if start < other_effective < effective and other_id != reload.reload_id:
                    start = other_effective
        return start

    def judge_window(self, reload: ReloadEvent, look_unix_nano: int) -> list[Verdict]:
        """Latency and error-rate verdicts of ``reload`` from requests started before ``look_unix_nano``."""
        requests = self._requests.get(reload.service_name)
        if requests is None:
            return []
        starts, latencies, errors, instances, servers = requests.arrays()
        effective = reload.effective_time_unix_nano
        after_lo, after_hi = np.searchsorted(starts, [effective, look_unix_nano], side="left")
        if reload.is_service_wide:
            before_lo = int(np.searchsorted(starts, self._baseline_start(reload), side="left"))
            base_index = np.arange(before_lo, after_lo)
            cand_index = np.arange(after_lo, after_hi)
        else:
            canary = requests.instance_code(reload.service_instance_id or "")
            period = np.arange(after_lo, after_hi)
            on_canary = instances[period] == canary
            cand_index, base_index = period[on_canary], period[~on_canary]
        both = np.concatenate([base_index, cand_index])
        if servers[both].any():
            base_index, cand_index = base_index[servers[base_index]], cand_index[servers[cand_index]]
        return [
            self._latency(latencies[base_index], latencies[cand_index]),
            self._error_rate(errors[base_index], errors[cand_index]),
        ]

    def _enough(self, baseline: np.ndarray, candidate: np.ndarray) -> bool:
        return len(baseline) >= self.settings.min_baseline_samples and len(candidate) >= self.settings.min_candidate_samples

    def _latency(self, baseline: np.ndarray, candidate: np.ndarray) -> Verdict:
        s = self.settings
        if not self._enough(baseline, candidate):
            return Verdict(LATENCY, None, _median(baseline), _median(candidate), 1.0, len(baseline), len(candidate))
        base_median, cand_median = float(np.median(baseline)), float(np.median(candidate))
        base_p95 = float(np.percentile(baseline, 95))
        cand_p95 = float(np.percentile(candidate, 95))
        p_value = float(mannwhitneyu(candidate, baseline, alternative="greater").pvalue)

        def effect(ratio_floor: float) -> bool:
            return any(
                observed >= ratio_floor * base and observed - base >= s.latency_floor_ms
                for base, observed in ((base_median, cand_median), (base_p95, cand_p95))
            )

        severity = None
        if p_value < s.alpha_per_look and effect(s.latency_ratio_floor):
            severity = "WARNING"
            if p_value < s.critical_alpha_per_look and effect(s.latency_critical_ratio):
                severity = "CRITICAL"
        return Verdict(LATENCY, severity, base_median, cand_median, _finite(p_value), len(baseline), len(candidate))

    def _error_rate(self, baseline: np.ndarray, candidate: np.ndarray) -> Verdict:
        s = self.settings
        base_errors, cand_errors = int(baseline.sum()), int(candidate.sum())
        base_rate = base_errors / len(baseline) if len(baseline) else 0.0
        cand_rate = cand_errors / len(candidate) if len(candidate) else 0.0
        if not self._enough(baseline, candidate) or cand_rate <= base_rate:
            return Verdict(ERROR_RATE, None, base_rate, cand_rate, 1.0, len(baseline), len(candidate))
        table = [[cand_errors, len(candidate) - cand_errors], [base_errors, len(baseline) - base_errors]]
        p_value = float(fisher_exact(table, alternative="greater").pvalue)
        delta = cand_rate - base_rate
        severity = None
        if p_value < s.alpha_per_look and delta >= s.error_rate_delta_floor:
            severity = "WARNING"
            if p_value < s.critical_alpha_per_look and delta >= s.error_rate_critical_delta:
                severity = "CRITICAL"
        return Verdict(ERROR_RATE, severity, base_rate, cand_rate, _finite(p_value), len(baseline), len(candidate))

    def _health(self, reload: ReloadEvent) -> list[Verdict]:
        s = self.settings
        history = self._by_service_component[(reload.service_name, reload.component)]
        earlier = [r for r in history if (r.requested_time_unix_nano, r.effective_time_unix_nano, r.reload_id)
                   < (reload.requested_time_unix_nano, reload.effective_time_unix_nano, reload.reload_id)]
        if not reload.succeeded:
            streak = 1
            for previous in reversed(earlier):
                if previous.succeeded:
                    break
                if previous.service_instance_id == reload.service_instance_id:
                    streak += 1
            severity = "INFO"
            if streak >= s.failed_streak_critical:
                severity = "CRITICAL"
            elif streak >= s.failed_streak_warning:
                severity = "WARNING"
            return [Verdict(RELOAD_FAILED, severity, 0.0, float(streak), 1.0, 0, streak)]
        duration_ms = max(0, reload.effective_time_unix_nano - reload.requested_time_unix_nano) / _NANOS_PER_MS
        durations = [
            (r.effective_time_unix_nano - r.requested_time_unix_nano) / _NANOS_PER_MS for r in earlier if r.succeeded
        ]
        typical = float(np.median(durations)) if durations else 0.0
        severity = None
        if duration_ms >= s.reload_duration_ceiling_ms:
            severity = "CRITICAL"
        elif (
            len(durations) >= s.reload_duration_min_history
            and duration_ms >= s.reload_duration_factor * typical
            and duration_ms - typical >= s.reload_duration_floor_ms
        ):
            severity = "WARNING"
        if severity is None:
            return []
        return [Verdict(RELOAD_DURATION, severity, typical, duration_ms, 1.0, len(durations), 1)]

    def _emit(self, pending: _Pending, verdict: Verdict, look: int, out: list[Anomaly]) -> None:
        if verdict.severity is None:
            return
        rank = _SEVERITY_RANK[verdict.severity]
        if rank <= pending.emitted.get(verdict.metric, -1):
            return
        pending.emitted[verdict.metric] = rank
        detected = pending.first_detected.setdefault(verdict.metric, look)
        reload = pending.reload
        out.append(
            Anomaly(
                anomaly_id=anomaly_id(reload.reload_id, verdict.metric),
                reload_id=reload.reload_id,
                service_name=reload.service_name,
                component=reload.component,
                old_version=reload.old_version,
                new_version=reload.new_version,
                metric=verdict.metric,
                baseline_value=float(verdict.baseline_value),
                observed_value=float(verdict.observed_value),
                p_value=float(verdict.p_value),
                baseline_count=int(verdict.baseline_count),
                observed_count=int(verdict.observed_count),
                detected_time_unix_nano=int(detected),
                severity=verdict.severity,
            )
        )


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else 0.0


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 1.0


def detect_offline(
    spans: Iterable[Mapping[str, Any]],
    reloads: Iterable[ReloadEvent | Mapping[str, Any]],
    settings: DetectionSettings,
) -> list[Anomaly]:
    """Every anomaly the streaming detector would emit for these spans and reloads (replay).

    Returns the anomalies in emission order: a reload whose severity rose at a later look
    appears once per severity (same ``anomaly_id``), as on the ``reload.anomalies`` topic; see
    :func:`strongest` for one record per anomaly.

    Raises:
        DetectionError: a span lacks a field detection needs.
        schemas.errors.InvalidRecordError: a reload mapping breaks the contract.
    """
    detector = RegressionDetector(settings)
    rows: dict[str, list[RequestRow]] = {}
    for span in spans:
        try:
            row = RequestRow(
                span["service_instance_id"],
                int(span["start_time_unix_nano"]),
                int(span["end_time_unix_nano"]),
                span["status_code"] == "ERROR",
                span["kind"],
            )
            service_rows = rows.get(span["service_name"])
            if service_rows is None:
                service_rows = rows[str(span["service_name"])] = []
        except (KeyError, TypeError, ValueError) as error:
            raise DetectionError(f"span cannot be judged: {bounded_repr(error)}") from error
        service_rows.append(row)
    for service_name, service_rows in rows.items():
        detector.add_rows(service_name, service_rows)
    for reload in reloads:
        detector.add_reload(reload if isinstance(reload, ReloadEvent) else ReloadEvent.from_dict(reload))
    return detector.finish()


def strongest(anomalies: Iterable[Anomaly]) -> dict[str, Anomaly]:
    """anomaly_id -> its record of highest severity (what a table keeping the highest severity holds)."""
    best: dict[str, Anomaly] = {}
    for record in anomalies:
        current = best.get(record.anomaly_id)
        if current is None or _SEVERITY_RANK[record.severity] > _SEVERITY_RANK[current.severity]:
            best[record.anomaly_id] = record
    return best
