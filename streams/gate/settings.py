"""Settings of ``reloadtrace gate``; environment ``RELOADTRACE_GATE_<FIELD>``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.records import SEVERITIES

_DEFAULT_HOST = "127.0.0.1"
_DEFAULT_PORT = 8080
_DEFAULT_GROUP_ID = "reloadtrace-gate"
_DEFAULT_POLL_TIMEOUT_MS = 100
_DEFAULT_FAIL_SEVERITY = "WARNING"
_DEFAULT_FLAGGER_PENDING = "fail"
_DEFAULT_MAX_BODY_BYTES = 65_536
_DEFAULT_REFUSAL_LOGS_PER_S = 10.0
FLAGGER_PENDING_CHOICES = ("fail", "pass")


class GateSettings(BaseSettings):
    """How the gate serves and judges.

    Raises:
        pydantic.ValidationError: a value is out of range, or no token is set and anonymous access was not asked for.
    """

    model_config = SettingsConfigDict(env_prefix="RELOADTRACE_GATE_", extra="ignore")

    host: str = Field(default=_DEFAULT_HOST, min_length=1, description="Address to listen on (0.0.0.0 in a container)")
    port: int = Field(default=_DEFAULT_PORT, ge=0, le=65_535, description="TCP port (0: any free port)")
    token: SecretStr | None = Field(default=None, description="Bearer token every /v1 request must carry (a secret)")
    token_file: Path | None = Field(
        default=None, description="File holding the token (a mounted Secret), read at start"
    )
    allow_anonymous: bool = Field(default=False, description="Serve /v1 without a token (only when no token is set)")
    fail_severity: str = Field(
        default=_DEFAULT_FAIL_SEVERITY, description="Lowest emitted severity that fails a reload"
    )
    flagger_pending: str = Field(
        default=_DEFAULT_FLAGGER_PENDING,
        description="What a Flagger check answers while a reload is pending: fail (non-2xx until judged) or pass",
    )
    group_id: str = Field(default=_DEFAULT_GROUP_ID, min_length=1, description="Client group name of the table readers")
    poll_timeout_ms: int = Field(default=_DEFAULT_POLL_TIMEOUT_MS, ge=1, description="Longest wait for new verdicts")
    max_body_bytes: int = Field(default=_DEFAULT_MAX_BODY_BYTES, ge=1_024, description="Largest request body accepted")
    refusal_logs_per_s: float = Field(
        default=_DEFAULT_REFUSAL_LOGS_PER_S,
        gt=0,
        description="Refused requests logged per second at most (the rest counted)",
    )

    @field_validator("fail_severity")
    @classmethod
    def _severity(cls, value: str) -> str:
        if value.upper() not in SEVERITIES:
            raise ValueError(f"must be one of {', '.join(SEVERITIES)}")
        return value.upper()

    @field_validator("flagger_pending")
    @classmethod
    def _pending(cls, value: str) -> str:
        if value.lower() not in FLAGGER_PENDING_CHOICES:
            raise ValueError(f"must be one of {', '.join(FLAGGER_PENDING_CHOICES)}")
        return value.lower()

    @model_validator(mode="after")
    def _authentication(self) -> GateSettings:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set the token or the token file, not both")
        if self.token is not None and not self.token.get_secret_value().strip():
            raise ValueError("the token is empty")
        if self.token is None and self.token_file is None and not self.allow_anonymous:
            raise ValueError("no token: set RELOADTRACE_GATE_TOKEN (or _TOKEN_FILE), or allow_anonymous explicitly")
        return self

    def bearer_token(self) -> str | None:
        """The token (read from its file when one is set); None for anonymous access.

        Raises:
            ValueError: the token file cannot be read or is empty (its content is never quoted).
        """
        if self.token is not None:
            return self.token.get_secret_value().strip()
        if self.token_file is None:
            return None
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"token file cannot be read: {type(error).__name__}") from None
        if not token:
            raise ValueError("token file is empty")
        return token
