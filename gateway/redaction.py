"""Redaction of sensitive attributes before anything leaves the process: by key, and inside values.

Keys are matched case-insensitively against a deny-list of patterns: shell globs
(``*authorization*``) or regular expressions prefixed with ``re:``; camelCase words count as
segments (``apiToken`` is ``api_Token``). A denied key is dropped, or kept with its value replaced
by a salted hash (HMAC-SHA256), so equal secrets stay correlatable without being readable.

Values are judged too (:meth:`Redactor.text`, applied to attribute values, status messages and
span names): the password of a URL's userinfo (``https://user:pw@host``, DSNs such as
``postgresql://app:pw@db``), the value of every ``name=value`` / ``name: value`` pair whose name the
deny-list denies (URL query parameters, ``password=...`` in libpq DSNs or messages) and the token
after ``Bearer`` are replaced (``redacted``, or the salted hash). Secrets in free text with no such
shape are not found.
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
# Whole key segments, so ``gen_ai.usage.input_tokens`` or ``reload.version.credentials`` stay.
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
    "re:" + _SEGMENT_START + r"(?:access|secret)[._\-]?key(?:[._\-]?id)?" + _SEGMENT_END,
    "re:" + _SEGMENT_START + r"jwt" + _SEGMENT_END,
    "re:" + _SEGMENT_START + r"credentials?$",
    "re:" + _SEGMENT_START + r"(?:dsn|connection[._\-]?string)" + _SEGMENT_END,
)
_VERSION_KEYS = re.compile(r"^reload\.(?:version|version_at_end|reload_id)\.", re.IGNORECASE)
"""reloadtrace's own per-component keys: a version or reload id, never a secret, whatever the component's name."""
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@?#]*:)(?P<secret>[^\s/@?#]+)(?=@)")
_PAIR_NAME = re.compile(r"""(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)["']?\s*(?:=|:(?!//))\s*["']?""")
_PAIR_VALUE = re.compile(r"""[^\s&;,"'<>]+""")
_BEARER = re.compile(r"(?P<head>\b(?:bearer|basic)\s+)(?P<secret>[A-Za-z0-9._~+/=\-]+)", re.IGNORECASE)
_AUTH_SCHEMES = frozenset({"bearer", "basic"})
REDACTED_TEXT = "redacted"
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
        if salt is not None and not salt:
            raise ValueError("redaction salt must not be empty (leave it unset for a random one)")
        self._salt = salt.encode() if isinstance(salt, str) else (salt if salt is not None else os.urandom(16))
        self._denied = lru_cache(maxsize=4096)(self._match)
        self.redacted_count = 0

    def _match(self, key: str) -> bool:
        if _VERSION_KEYS.match(key):
            return False
        if key.startswith(RELOAD_MODEL_CONTEXT_PREFIX) and self._match(key[len(RELOAD_MODEL_CONTEXT_PREFIX) :]):
            return True
        words = _CAMEL_BOUNDARY.sub("_", key)
        return any(pattern.search(key) or pattern.search(words) for pattern in self._compiled)

    def is_denied(self, key: str) -> bool:
        return self._denied(key)

    def hash_value(self, value: Any) -> str:
        digest = hmac.new(self._salt, str(value).encode(), hashlib.sha256).hexdigest()[:16]
        return f"{REDACTED_PREFIX}{digest}"

    def _replacement(self, secret: str) -> str:
        return self.hash_value(secret) if self.mode is RedactionMode.HASH else REDACTED_TEXT

    def text(self, value: str) -> str:
        """``value`` with secrets of a known shape replaced (URL passwords, denied ``name=value`` pairs, bearer tokens)."""
        if not self._compiled or not value or not ("=" in value or ":" in value or " " in value):
            return value
        redacted = _URL_PASSWORD.sub(lambda m: m["head"] + self._count(self._replacement(m["secret"])), value)
        redacted = _BEARER.sub(lambda m: m["head"] + self._count(self._replacement(m["secret"])), redacted)
        return self._pairs(redacted)

    def _pairs(self, text: str) -> str:
        """Every value that follows a denied ``name=`` / ``name:`` replaced (names found without consuming values)."""
        out: list[str] = []
        kept_to = 0
        for name in _PAIR_NAME.finditer(text):
            if name.start() < kept_to or not self._denied(name["name"]):
                continue
            secret = _PAIR_VALUE.match(text, name.end())
            if secret is None or secret[0].lower() in _AUTH_SCHEMES or secret[0].startswith(REDACTED_PREFIX):
                continue
            if secret[0] == REDACTED_TEXT:
                continue
            out.append(text[kept_to : secret.start()])
            out.append(self._count(self._replacement(secret[0])))
            kept_to = secret.end()
        if not out:
            return text
        out.append(text[kept_to:])
        return "".join(out)

    def _count(self, replacement: str) -> str:
        self.redacted_count += 1
        return replacement

    def apply(self, attributes: Mapping[str, Any] | None) -> dict[str, Any]:
        """A copy of ``attributes`` without denied keys (or with hashed values in ``hash`` mode), and
        string values passed through :meth:`text`."""
        if not attributes:
            return {}
        out: dict[str, Any] = {}
        for key, value in attributes.items():
            if not self._denied(key):
                out[key] = self.text(value) if isinstance(value, str) else value
                continue
            self.redacted_count += 1
            if self.mode is RedactionMode.HASH:
                out[key] = self.hash_value(value)
        return out

    def model_context(self, context: Mapping[str, str]) -> dict[str, str]:
        return {key: str(value) for key, value in self.apply(context).items()}


NO_REDACTION = Redactor(deny_patterns=())
