"""The gate's phase rule (pure): a reload is ``pending``, ``passed`` or ``failed`` from its latest look.

* ``failed`` once any metric's severity emitted so far (by a look, or an anomaly record) reaches
  the threshold (default WARNING: a single FAILED reload's ``reload_failed`` INFO is no failure);
* ``passed`` once the final look is in with no failure;
* ``pending`` otherwise, including a reload known only from the ``reloads`` topic ("awaiting
  first look").

Guarantee: the rule is monotone in the detector's looks (pending -> passed or failed, never back),
and looks are a function of the data, so a gate rebuilt from the topics gives the same phase.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.records import SEVERITIES

PENDING = "pending"
PASSED = "passed"
FAILED = "failed"
PHASES = (PENDING, PASSED, FAILED)
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass(frozen=True, slots=True)
class Judgment:
    phase: str
    reason: str
    failing: tuple[tuple[str, str], ...]
    """(metric, severity) of every metric at or above the threshold, sorted by metric."""


def judge(
    verdict: Mapping[str, Any] | None, anomaly_severities: Iterable[tuple[str, str]], *, fail_severity: str
) -> Judgment:
    """The phase of one reload from its latest verdict (a ReloadVerdict record, or None) and its anomalies.

    Args:
        verdict: the latest look at the reload; None while the detector has not looked yet.
        anomaly_severities: (metric, severity) of the anomalies seen for the reload.
        fail_severity: the lowest severity that fails the reload.
    """
    threshold = SEVERITY_RANK[fail_severity]
    worst: dict[str, str] = {}
    emitted = [] if verdict is None else [(m["metric"], m.get("emitted_severity")) for m in verdict["metrics"]]
    for metric, severity in (*emitted, *anomaly_severities):
        rank = SEVERITY_RANK.get(severity, -1) if severity is not None else -1
        if rank >= threshold and rank > SEVERITY_RANK.get(worst.get(metric, ""), -1):
            worst[metric] = severity
    failing = tuple(sorted(worst.items()))
    if failing:
        listed = ", ".join(f"{metric} {severity}" for metric, severity in failing)
        return Judgment(FAILED, f"regression: {listed} (threshold {fail_severity})", failing)
    if verdict is None:
        return Judgment(PENDING, "awaiting first look", ())
    looks = f"look {verdict['look_index'] + 1} of {verdict['looks_total']}"
    own = " (the reload itself FAILED: the old version kept serving)" if verdict.get("status") == "FAILED" else ""
    if verdict["final"]:
        return Judgment(PASSED, f"window closed clean at {looks}{own}", ())
    return Judgment(PENDING, f"{looks}: no regression so far{own}", ())
