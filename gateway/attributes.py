"""Span attribute names: reloadtrace's own under ``reload.*``, OpenTelemetry's where a convention exists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.versioning import (
    FEATURE_FLAG_SET_ID,
    FEATURE_FLAG_VERSION,
    FEATURE_FLAGS_COMPONENT,
    MODEL_COMPONENT,
    Snapshot,
)

MID_FLIGHT = "reload.mid_flight"
MID_FLIGHT_RELOAD_IDS = "reload.mid_flight.reload_ids"
MID_FLIGHT_COMPONENTS = "reload.mid_flight.components"
MODEL_VERSION = "reload.model.version"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
FEATURE_FLAG_EVALUATION = "feature_flag.evaluation"
FEATURE_FLAG_KEY = "feature_flag.key"
FEATURE_FLAG_RESULT_VARIANT = "feature_flag.result.variant"
FEATURE_FLAG_PROVIDER_NAME = "feature_flag.provider.name"
FEATURE_FLAG_PROVIDER = "reloadtrace"


def version_attribute(component: str) -> str:
    """``reload.version.<component>``, e.g. ``reload.version.config`` (the key the store and OTLP out use too)."""
    return f"reload.version.{component}"


def version_stamp(snapshots: Mapping[str, Snapshot], existing: Mapping[str, object] | None = None) -> dict[str, str]:
    """The attributes that say which version of each component serves a span.

    One ``reload.version.<component>`` per component; for the model also ``gen_ai.request.model``
    (unless the span already names one) and ``reload.model.version`` (the model's own version);
    for feature flags the OpenTelemetry ``feature_flag.version`` (the ruleset's) and, when the flag
    set names itself, ``feature_flag.set.id``.
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
            stamp.update(flag_set_attributes(snapshot))
    return stamp


def flag_set_attributes(snapshot: Snapshot) -> dict[str, str]:
    """``feature_flag.version`` (declared by the flag set, else the snapshot's version) and ``feature_flag.set.id``."""
    attributes = {FEATURE_FLAG_VERSION: snapshot.model_context.get(FEATURE_FLAG_VERSION) or snapshot.version}
    set_id = snapshot.model_context.get(FEATURE_FLAG_SET_ID)
    if set_id:
        attributes[FEATURE_FLAG_SET_ID] = set_id
    return attributes


def flag_evaluation(snapshot: Snapshot, key: str, value: Any, variant: str | None = None) -> tuple[str, dict[str, str]]:
    """The ``feature_flag.evaluation`` span event (name, attributes) of flag ``key`` evaluated to ``value``.

    ``variant`` defaults to ``"on"``/``"off"`` for a boolean and to the value's text otherwise, as the
    OpenTelemetry feature-flag conventions suggest when no semantic variant name exists. Record it
    with ``span.add_event(*flag_evaluation(...))``.
    """
    if variant is None:
        variant = ("on" if value else "off") if isinstance(value, bool) else str(value)
    attributes = {
        FEATURE_FLAG_KEY: key,
        FEATURE_FLAG_RESULT_VARIANT: variant,
        FEATURE_FLAG_PROVIDER_NAME: FEATURE_FLAG_PROVIDER,
        **flag_set_attributes(snapshot),
    }
    return FEATURE_FLAG_EVALUATION, attributes
