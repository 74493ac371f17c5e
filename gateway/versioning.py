"""Immutable snapshots: deep freezing, content-hash version ids, changed key names, model and flag-set context."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

VERSION_HASH_CHARS = 16
MODEL_COMPONENT = "model"
PROMPT_TEMPLATE_COMPONENT = "prompt_template"
FEATURE_FLAGS_COMPONENT = "feature_flags"
FEATURE_FLAG_SET_ID = "feature_flag.set.id"
FEATURE_FLAG_VERSION = "feature_flag.version"
COMPONENT_KINDS = (
    "config",
    "model",
    "routing_rules",
    "feature_flags",
    "credentials",
    "prompt_template",
    "rate_limit_policy",
)


def freeze(value: Any) -> Any:
    """A deep, read-only copy: mappings become ``MappingProxyType``, lists/sets become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(key): freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item) for item in value)
    if isinstance(value, (set, frozenset)):
        return tuple(sorted((freeze(item) for item in value), key=repr))
    return value


def thaw(value: Any) -> Any:
    """A plain JSON-like copy of a frozen value (dicts and lists)."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


def canonical_json(value: Any) -> str:
    """Stable JSON of a (frozen or plain) value: sorted keys, no spaces; non-JSON leaves become ``str``."""
    return json.dumps(thaw(value), sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def content_version(value: Any) -> str:
    """The version id of a value: the first 16 hex digits of the SHA-256 of its canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:VERSION_HASH_CHARS]


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, (list, tuple)) and value:
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}[{index}]", out)
    else:
        out[prefix or "value"] = value


def changed_keys(old: Any, new: Any) -> tuple[str, ...]:
    """Sorted dotted paths (``routes[0].target``) whose leaf values differ, were added or removed.

    Only the names are returned, never the values, so the result is safe to export. ``old`` None
    (no previous version) gives every key of ``new``.
    """
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    if old is not None:
        _flatten(old, "", before)
    if new is not None:
        _flatten(new, "", after)
    return tuple(
        sorted(key for key in before.keys() | after.keys() if before.get(key, _MISSING) != after.get(key, _MISSING))
    )


_MISSING = object()


def model_descriptor(
    model_id: str,
    version: str,
    *,
    provider: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    prompt_template: str | None = None,
) -> dict[str, Any]:
    """The value of a ``model`` component: id, version, provider, parameters and prompt template."""
    descriptor: dict[str, Any] = {"id": model_id, "version": version, "parameters": dict(parameters or {})}
    if provider is not None:
        descriptor["provider"] = provider
    if prompt_template is not None:
        descriptor["prompt_template"] = prompt_template
    return descriptor


def flag_set_descriptor(flags: Mapping[str, Any], *, set_id: str, version: str | None = None) -> dict[str, Any]:
    """The value of a ``feature_flags`` component as a named flag set: its flags, and the set's
    ``metadata`` as OpenFeature providers (flagd) give it: ``flagSetId`` and, when the set has one,
    its own ``version``."""
    metadata: dict[str, Any] = {"flagSetId": set_id}
    if version is not None:
        metadata["version"] = version
    return {"flags": dict(flags), "metadata": metadata}


def prompt_hash(template: str) -> str:
    return hashlib.sha256(template.encode()).hexdigest()[:VERSION_HASH_CHARS]


def model_context_of(component: str, value: Any, version: str | None = None) -> dict[str, str]:
    """The model context of a snapshot (the ``model_context`` of its ReloadEvent).

    For ``model``: ``model.id``, ``model.version``, ``model.provider``, one
    ``model.parameters.<name>`` per parameter (so redaction judges each name) and
    ``prompt_template.hash``; for ``prompt_template``: the template hash; for ``feature_flags``
    (OpenTelemetry's names): ``feature_flag.version`` (the set's declared ``metadata.version``,
    else ``version``, the snapshot's) and ``feature_flag.set.id`` (``metadata.flagSetId``, when given).
    Other components have none. The prompt text itself is never included, only its hash.
    """
    if component == FEATURE_FLAGS_COMPONENT:
        return _flag_set_context(value, version)
    if not isinstance(value, Mapping):
        return {}
    context: dict[str, str] = {}
    if component == MODEL_COMPONENT:
        for key in ("id", "version", "provider"):
            if value.get(key) is not None:
                context[f"model.{key}"] = str(value[key])
        parameters = value.get("parameters")
        if isinstance(parameters, Mapping):
            for key, item in parameters.items():
                context[f"model.parameters.{key}"] = item if isinstance(item, str) else canonical_json(item)
    if component in (MODEL_COMPONENT, PROMPT_TEMPLATE_COMPONENT):
        if isinstance(value.get("prompt_template"), str):
            context["prompt_template.hash"] = prompt_hash(value["prompt_template"])
        elif value.get("prompt_template_hash") is not None:
            context["prompt_template.hash"] = str(value["prompt_template_hash"])
    return context


def _flag_set_context(value: Any, version: str | None) -> dict[str, str]:
    metadata = value.get("metadata") if isinstance(value, Mapping) else None
    metadata = metadata if isinstance(metadata, Mapping) else {}
    context: dict[str, str] = {}
    declared = metadata.get("version")
    if declared is not None or version is not None:
        context[FEATURE_FLAG_VERSION] = str(declared if declared is not None else version)
    if metadata.get("flagSetId") is not None:
        context[FEATURE_FLAG_SET_ID] = str(metadata["flagSetId"])
    return context


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One immutable version of one component.

    ``value`` is deep-frozen (read-only mappings and tuples); ``thaw(value)`` gives a plain copy.
    """

    component: str
    version: str
    value: Any
    effective_time_unix_nano: int
    reload_id: str | None = None
    model_context: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.value[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.value.get(key, default) if isinstance(self.value, Mapping) else default
