"""ReloadVerdict records: one per look of the detector at a reload (``reload.verdicts``), as the gate reads them."""

from __future__ import annotations

from typing import Any

from schemas.records import SEVERITIES
from streams.detection import Look


def verdict_record(look: Look) -> dict[str, Any]:
    """The ReloadVerdict record (Avro field names) of one look."""
    reload = look.reload
    return {
        "reload_id": reload.reload_id,
        "service_name": reload.service_name,
        "service_instance_id": reload.service_instance_id,
        "component": reload.component,
        "old_version": reload.old_version,
        "new_version": reload.new_version,
        "status": reload.status,
        "requested_time_unix_nano": reload.requested_time_unix_nano,
        "effective_time_unix_nano": reload.effective_time_unix_nano,
        "look_time_unix_nano": look.look_time_unix_nano,
        "look_index": look.look_index,
        "looks_total": look.looks_total,
        "final": look.final,
        "window_end_unix_nano": look.window_end_unix_nano,
        "metrics": [
            {
                "metric": verdict.metric,
                "severity": verdict.severity,
                "emitted_severity": SEVERITIES[look.emitted[verdict.metric]] if verdict.metric in look.emitted else None,
                "baseline_value": float(verdict.baseline_value),
                "observed_value": float(verdict.observed_value),
                "p_value": float(verdict.p_value),
                "baseline_count": int(verdict.baseline_count),
                "observed_count": int(verdict.observed_count),
            }
            for verdict in look.verdicts
        ],
    }
