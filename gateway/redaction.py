"""Redaction of sensitive attribute keys before anything leaves the process.

Keys are matched case-insensitively against a deny-list of patterns: shell globs
(``*authorization*``) or regular expressions prefixed with ``re:``. A denied key is dropped, or
kept with its value replaced by a salted hash (HMAC-SHA256), so equal secrets stay correlatable
without being readable. Only keys are judged; a secret stored under an innocent key is not found.
A reload span's ``reload.model_context.<key>`` is denied when ``<key>`` is, so the span never
carries a model-context entry that the published ReloadEvent drops.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from functools import lru_cache
from typing import Any

from schemas.reload_span import RELOAD_MODEL_CONTEXT_PREFIX

_SEGMENT_START = r"(?:^|[._\-])"
_SEGMENT_END = r"(?:$|[._\-])"
# Whole key segments, so ``gen_ai.usage.input_tokens`` or ``service.credentials.version`` stay.
DEFAULT_DENY_PATTERNS: tuple[str, ...] = (
    "re:" + _SEGMENT_START + r"(?:proxy[._\-]?)?authori[sz]ation" + _SEGMENT_END,
    "re:" + _SEGMENT_START + r"(?:set[._\-]?)?cookie2?" + _SEGMENT_END,
    "re:" + _SEGMENT_START + r"(?:x[._\-])?api[._\-]?key" + _SEGMENT_END,
    "re:" + _SEGMENT_START + r"(?:password|passwd|pwd|passphrase)" + _SEGMENT_END,
    "re:" + _SEGMENT_START + r"(?:access|refresh|id|auth|session|bearer|csrf|xsrf)?[._\-]?token" + _SEGMENT_END,
    "re:" + _SEGMENT_START + r"(?:client[._\-]?)?secret" + _SEGMENT_END,
    "re:" + _SEGMENT_START + r"private[._\-]?key" + _SEGMENT_END,
    "re:" + _SEGMENT_START + r"session[._\-]?id" + _SEGMENT_END,
    "re:" + _SEGMENT_START + r"bearer" + _SEGMENT_END,
)
REDACTED_PREFIX = "redacted:"


class RedactionMode(StrEnum):
    DROP = "drop"
    HASH = "hash"


def _compile(pattern: str) -> re.Pattern[str]:
    """Regexes (``re:``) match anywhere in the key; globs match the whole key (``fnmatch`` anchors them)."""
    if pattern.startswith("re:"):
        return re.compile(pattern[3:], re.IGNORECASE)
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE)


class Redactor:
    """Applies one deny-list to attribute maps, baggage and model contexts.

    Args:
        deny_patterns: globs, or regexes prefixed ``re:``; default :data:`DEFAULT_DENY_PATTERNS`.
        extra_patterns: added to the deny list (keep the defaults and add your own).
        mode: ``drop`` the key, or ``hash`` its value with the salt.
        salt: secret salt of the hash; default random per process (hashes then only correlate
            within one process). Pass a fixed salt to correlate across instances.

    Raises:
        ValueError: a pattern is not a valid regular expression, or the mode is unknown.
    """

    def __init__(
        self,
        deny_patterns: Iterable[str] | None = None,
        *,
        extra_patterns: Iterable[str] = (),
        mode: RedactionMode | str = RedactionMode.DROP,
        salt: bytes | str | None = None,
    ) -> None:
        self.patterns = tuple(DEFAULT_DENY_PATTERNS if deny_patterns is None else deny_patterns) + tuple(extra_patterns)
        try:
            self._compiled = tuple(_compile(pattern) for pattern in self.patterns)
        except re.error as error:
            raise ValueError(f"bad redaction pattern: {error}") from error
        self.mode = RedactionMode(mode)
        self._salt = salt.encode() if isinstance(salt, str) else (salt if salt is not None else os.urandom(16))
        self._denied = lru_cache(maxsize=4096)(self._match)
        self.redacted_count = 0

    def _match(self, key: str) -> bool:
        if key.startswith(RELOAD_MODEL_CONTEXT_PREFIX) and self._match(key[len(RELOAD_MODEL_CONTEXT_PREFIX) :]):
            return True
        return any(pattern.search(key) for pattern in self._compiled)

    def is_denied(self, key: str) -> bool:
        return self._denied(key)

    def hash_value(self, value: Any) -> str:
        digest = hmac.new(self._salt, str(value).encode(), hashlib.sha256).hexdigest()[:16]
        return f"{REDACTED_PREFIX}{digest}"

    def apply(self, attributes: Mapping[str, Any] | None) -> dict[str, Any]:
        """A copy of ``attributes`` without denied keys (or with hashed values in ``hash`` mode)."""
        if not attributes:
            return {}
        out: dict[str, Any] = {}
        for key, value in attributes.items():
            if not self._denied(key):
                out[key] = value
                continue
            self.redacted_count += 1
            if self.mode is RedactionMode.HASH:
                out[key] = self.hash_value(value)
        return out

    def model_context(self, context: Mapping[str, str]) -> dict[str, str]:
        return {key: str(value) for key, value in self.apply(context).items()}


NO_REDACTION = Redactor(deny_patterns=())
