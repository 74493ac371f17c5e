"""Errors of the producer side: one subclass of the project root per area."""

from __future__ import annotations

from schemas.errors import ReloadtraceError


class GatewayError(ReloadtraceError):
    """Root of the errors ``gateway/`` raises on purpose."""


class ReloadRejectedError(GatewayError):
    """A candidate snapshot failed validation or its health check; the old version keeps serving.

    Attributes:
        component: the component whose reload was rejected.
    """

    def __init__(self, component: str, message: str) -> None:
        super().__init__(f"reload of {component} rejected: {message}")
        self.component = component


class UnknownComponentError(GatewayError, KeyError):
    """A registry was asked for a component it does not hold."""
