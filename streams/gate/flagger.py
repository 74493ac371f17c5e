"""Flagger webhooks: its payload read into a verdict lookup, and a phase turned into Flagger's pass/fail.

Flagger POSTs ``{"name", "namespace", "phase", "checksum", "metadata": {string: string}}`` to every
webhook and counts a non-2xx answer as a failed check (a confirm-* hook waits until it gets a 2xx).
The reload is named in ``metadata``: ``reload_id``, or ``component`` and ``version`` with ``service``
(default: the canary's ``name``) and optionally ``instance``. ``metadata.pending`` (``fail`` or
``pass``) overrides the gate's setting for that webhook; Flagger sends no custom headers, so the
bearer token may come as ``metadata.token`` instead of the ``Authorization`` header. Answers: 200
passed (or pending when pending passes), 412 failed, 409 pending, 404 unknown reload, 400
unreadable payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.gate.phase import FAILED, PASSED, PENDING
from streams.gate.settings import FLAGGER_PENDING_CHOICES

STATUS_FAILED = 412
STATUS_PENDING = 409
_MAX_VALUE_CHARS = 1_024


class FlaggerPayloadError(ValueError):
    """The body is not a Flagger webhook payload naming a reload (the message never quotes the body)."""


@dataclass(frozen=True, slots=True)
class FlaggerCheck:
    name: str
    namespace: str
    flagger_phase: str | None
    reload_id: str | None
    service: str | None
    component: str | None
    version: str | None
    instance: str | None
    pending: str | None
    token: str | None = field(default=None, repr=False)
    """``metadata.token``: Flagger's webhooks send no headers, so the bearer token may come here (never shown)."""


def _text(document: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = document.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise FlaggerPayloadError(f"{key} must be a non-empty string")
    if len(value) > _MAX_VALUE_CHARS:
        raise FlaggerPayloadError(f"{key} is longer than {_MAX_VALUE_CHARS} characters")
    return value


def parse_check(body: bytes) -> FlaggerCheck:
    """The reload a Flagger payload asks about.

    Raises:
        FlaggerPayloadError: not JSON, not an object, a field of the wrong type, or no reload named.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise FlaggerPayloadError("the body is not JSON") from None
    if not isinstance(document, dict):
        raise FlaggerPayloadError("the body is not a JSON object")
    metadata = document.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise FlaggerPayloadError("metadata must be an object of strings")
    name = _text(document, "name", required=True)
    check = FlaggerCheck(
        name=name or "",
        namespace=_text(document, "namespace", required=True) or "",
        flagger_phase=_text(document, "phase", required=False),
        reload_id=_text(metadata, "reload_id", required=False),
        service=_text(metadata, "service", required=False) or name,
        component=_text(metadata, "component", required=False),
        version=_text(metadata, "version", required=False),
        instance=_text(metadata, "instance", required=False),
        pending=_text(metadata, "pending", required=False),
        token=_text(metadata, "token", required=False),
    )
    if check.pending is not None and check.pending.lower() not in FLAGGER_PENDING_CHOICES:
        raise FlaggerPayloadError(f"metadata.pending must be one of {', '.join(FLAGGER_PENDING_CHOICES)}")
    if check.reload_id is None and (check.component is None or check.version is None):
        raise FlaggerPayloadError("metadata must name the reload: reload_id, or component and version (and service)")
    return check


def check_status(phase: str, pending: str) -> int:
    """The HTTP status Flagger gets for a phase (``pending``: fail or pass)."""
    if phase == PASSED:
        return 200
    if phase == FAILED:
        return STATUS_FAILED
    assert phase == PENDING
    return 200 if pending == "pass" else STATUS_PENDING
