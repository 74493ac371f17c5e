"""Span attribute names for versions, following OpenTelemetry naming where a convention exists."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.versioning import MODEL_COMPONENT, Snapshot

FEATURE_FLAGS_COMPONENT = "feature_flags"
MID_FLIGHT = "reload.mid_flight"
MID_FLIGHT_RELOAD_IDS = "reload.mid_flight.reload_ids"
MID_FLIGHT_COMPONENTS = "reload.mid_flight.components"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
MODEL_VERSION = "gen_ai.request.model.version"
FEATURE_FLAG_VERSION = "feature_flag.version"


def version_attribute(component: str) -> str:
    """``service.<component>.version``, e.g. ``service.config.version``."""
    return f"service.{component}.version"


def version_stamp(snapshots: Mapping[str, Snapshot], existing: Mapping[str, object] | None = None) -> dict[str, str]:
    """The attributes that say which version of each component serves a span.

    One ``service.<component>.version`` per component; for the model also ``gen_ai.request.model``
    (unless the span already names one) and ``gen_ai.request.model.version``; for feature flags
    also ``feature_flag.version`` (the flag-set version, as in OTel's feature-flag conventions).
    """
    existing = existing or {}
    stamp: dict[str, str] = {}
    for component, snapshot in snapshots.items():
        stamp[version_attribute(component)] = snapshot.version
        if component == MODEL_COMPONENT:
            model_id = snapshot.model_context.get("model.id")
            if model_id and GEN_AI_REQUEST_MODEL not in existing:
                stamp[GEN_AI_REQUEST_MODEL] = model_id
            model_version = snapshot.model_context.get("model.version")
            if model_version:
                stamp[MODEL_VERSION] = model_version
        elif component == FEATURE_FLAGS_COMPONENT:
            stamp[FEATURE_FLAG_VERSION] = snapshot.version
    return stamp
