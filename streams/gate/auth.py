"""Bearer-token authentication of the gate's ``/v1`` routes; refusals are logged without the token.

The token is compared in constant time (:func:`hmac.compare_digest`). A refused request is answered
401 with ``WWW-Authenticate: Bearer`` and logged with its method, path (no query) and peer address,
and why (no header, not a bearer scheme, wrong token): never the header's value. Refusal logs are
throttled to a rate (a flood of bad requests cannot flood the log); every refusal is counted.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable

from schemas.text import safe_text

logger = logging.getLogger(__name__)

_SCHEME = b"bearer "


class BearerAuth:
    """Checks ``Authorization`` headers against one token (None: every request is let in)."""

    def __init__(
        self, token: str | None, *, logs_per_s: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._token = token.encode() if token is not None else None
        self._logs_per_s = logs_per_s
        self._monotonic = monotonic
        self._allowance = logs_per_s
        self._last = monotonic()
        self._suppressed = 0
        self.refused = 0

    @property
    def anonymous(self) -> bool:
        return self._token is None

    def problem(self, header: str | None) -> str | None:
        """Why a request with this ``Authorization`` header is refused, or None when it may pass."""
        if self._token is None:
            return None
        if not header:
            return "no bearer token"
        raw = header.encode("utf-8", "surrogateescape")
        if raw[: len(_SCHEME)].lower() != _SCHEME:
            return "not a bearer token"
        if not hmac.compare_digest(raw[len(_SCHEME) :].strip(), self._token):
            return "wrong bearer token"
        return None

    def refused_request(self, method: str, path: str, peer: str | None, why: str) -> None:
        """Count a refusal and log it (method, path, peer, reason) unless over the log rate."""
        self.refused += 1
        now = self._monotonic()
        self._allowance = min(self._logs_per_s, self._allowance + (now - self._last) * self._logs_per_s)
        self._last = now
        if self._allowance < 1:
            self._suppressed += 1
            return
        self._allowance -= 1
        more = f" ({self._suppressed} more refusals not logged)" if self._suppressed else ""
        self._suppressed = 0
        logger.warning(
            "gate: refused %s %s from %s: %s%s",
            safe_text(method, 20),
            safe_text(path, 200),
            safe_text(peer or "unknown peer", 100),
            why,
            more,
        )
