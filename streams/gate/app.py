"""The gate's HTTP routes (aiohttp): ``GET /v1/verdict``, ``POST /v1/flagger/check``, ``GET /healthz``.

``/v1/verdict`` takes ``reload_id``, or ``service``, ``component`` and ``version`` (and optionally
``instance``: that canary's reloads only), and answers 200 with the verdict document
(:mod:`streams.gate.answer`) for every phase, 404 when no such reload is known, 400 for a bad query.
``/v1`` routes need the bearer token (:mod:`streams.gate.auth`; the Flagger check also takes it as
``metadata.token``, Flagger sending no headers); ``/healthz`` does not (probes): 200
once the tables are loaded and followed, 503 while loading or after the Kafka side stopped.
Every answer is JSON; an unexpected error answers 500 and is logged without a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from schemas.text import bounded_repr
from streams.gate.answer import answer
from streams.gate.auth import BearerAuth
from streams.gate.flagger import FlaggerPayloadError, check_status, parse_check
from streams.gate.settings import GateSettings
from streams.gate.store import ReloadEntry, VerdictStore

logger = logging.getLogger(__name__)

_MAX_PARAM_CHARS = 1_024
_QUERY_KEYS = ("reload_id", "service", "component", "version", "instance")
_FLAGGER_PATH = "/v1/flagger/check"
_AUTH_PROBLEM = web.RequestKey("auth_problem", object)
"""Why the header did not authenticate a Flagger check (None when it did): its metadata may still hold the token."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HealthProbe = Callable[[], tuple[bool, dict[str, Any]]]
"""() -> (healthy, details) of the Kafka side."""


def _json(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(document), status=status, content_type="application/json", headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status, headers)


class GateApp:
    """The routes over one store; ``app`` is the aiohttp application to serve."""

    def __init__(
        self,
        store: VerdictStore,
        settings: GateSettings,
        auth: BearerAuth,
        health: HealthProbe,
        *,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._store = store
        self._settings = settings
        self._auth = auth
        self._health = health
        self._clock = wall_clock_ns
        self.app = web.Application(middlewares=[self._guard], client_max_size=settings.max_body_bytes)
        self.app.router.add_get("/v1/verdict", self.verdict)
        self.app.router.add_post(_FLAGGER_PATH, self.flagger_check)
        self.app.router.add_get("/healthz", self.healthz)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v1/"):
            header = request.headers.get("Authorization")
            why = self._auth.problem(header)
            if why is not None and not (header is None and request.path == _FLAGGER_PATH):
                return self._refuse(request, why)
            request[_AUTH_PROBLEM] = why
        try:
            return await handler(request)
        except web.HTTPException as error:
            return _error(error.status, error.reason or "request refused")
        except Exception as error:  # noqa: BLE001 - one bad request must never take the gate down
            logger.error("gate: %s %s failed: %s", request.method, bounded_repr(request.path, 200), bounded_repr(error))
            return _error(500, "internal error")

    def _refuse(self, request: web.Request, why: str) -> web.Response:
        self._auth.refused_request(request.method, request.path, request.remote, why)
        return _error(401, "missing or invalid bearer token", {"WWW-Authenticate": 'Bearer realm="reloadtrace-gate"'})

    # --- lookups -----------------------------------------------------------------------------

    def _lookup(
        self,
        reload_id: str | None,
        service: str | None,
        component: str | None,
        version: str | None,
        instance: str | None,
    ) -> ReloadEntry | None:
        if reload_id is not None:
            return self._store.by_reload_id(reload_id)
        assert service is not None and component is not None and version is not None
        return self._store.find(service, component, version, instance)

    def _document(self, entry: ReloadEntry) -> dict[str, Any]:
        document = answer(
            entry,
            fail_severity=self._settings.fail_severity,
            now_unix_nano=self._clock(),
            detector_last_published_unix_nano=self._store.detector_last_published_unix_nano,
        )
        document["reload"]["reloads_of_this_version"] = self._store.matches(*entry.key)
        return document

    @staticmethod
    def _not_found(
        reload_id: str | None, service: str | None, component: str | None, version: str | None
    ) -> web.Response:
        if reload_id is not None:
            return _error(404, "no reload with this reload_id is known (yet)")
        return _error(404, "no reload of this service and component to this version is known (yet)")

    # --- routes ------------------------------------------------------------------------------

    async def verdict(self, request: web.Request) -> web.Response:
        query = request.query
        values = {}
        for key in _QUERY_KEYS:
            value = query.get(key)
            if value is not None and (not value or len(value) > _MAX_PARAM_CHARS):
                return _error(400, f"{key} must be 1 to {_MAX_PARAM_CHARS} characters")
            values[key] = value
        if values["reload_id"] is None and None in (values["service"], values["component"], values["version"]):
            return _error(400, "give reload_id, or service, component and version")
        entry = self._lookup(
            values["reload_id"], values["service"], values["component"], values["version"], values["instance"]
        )
        if entry is None:
            return self._not_found(values["reload_id"], values["service"], values["component"], values["version"])
        return _json(self._document(entry))

    async def flagger_check(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the body is larger than {self._settings.max_body_bytes} bytes")
        try:
            check = parse_check(body)
        except FlaggerPayloadError as error:
            if request.get(_AUTH_PROBLEM) is not None:
                return self._refuse(request, request[_AUTH_PROBLEM])
            return _error(400, f"not a Flagger webhook payload: {error}")
        if request.get(_AUTH_PROBLEM) is not None:
            why = self._auth.problem(None if check.token is None else f"Bearer {check.token}")
            if why is not None:
                return self._refuse(request, why if check.token is not None else request[_AUTH_PROBLEM])
        entry = self._lookup(check.reload_id, check.service, check.component, check.version, check.instance)
        if entry is None:
            return self._not_found(check.reload_id, check.service, check.component, check.version)
        document = self._document(entry)
        pending = (check.pending or self._settings.flagger_pending).lower()
        status = check_status(document["phase"], pending)
        document["flagger"] = {
            "name": check.name,
            "namespace": check.namespace,
            "phase": check.flagger_phase,
            "pending": pending,
        }
        return _json(document, status)

    async def healthz(self, request: web.Request) -> web.Response:
        healthy, details = self._health()
        details = details | {"reloads": len(self._store), "refused_requests": self._auth.refused}
        return _json({"status": "ok" if healthy else "unavailable"} | details, 200 if healthy else 503)
