"""Settings of the producer side (redaction, exporter queue and timeouts), env ``RELOADTRACE_*``."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.redaction import RedactionMode, Redactor

_DEFAULT_QUEUE_MAX_MESSAGES = 100_000
_DEFAULT_MESSAGE_TIMEOUT_MS = 30_000
_DEFAULT_FLUSH_TIMEOUT_MS = 10_000
_DEFAULT_LINGER_MS = 20


class GatewaySettings(BaseSettings):
    """Environment: ``RELOADTRACE_REDACT_KEYS`` (JSON list, added to the default deny-list),
    ``RELOADTRACE_REDACTION_MODE`` (drop|hash), ``RELOADTRACE_REDACTION_SALT``,
    ``RELOADTRACE_EXPORTER_QUEUE_MAX_MESSAGES``, ``RELOADTRACE_EXPORTER_MESSAGE_TIMEOUT_MS``,
    ``RELOADTRACE_EXPORTER_FLUSH_TIMEOUT_MS``, ``RELOADTRACE_EXPORTER_LINGER_MS``.

    Raises:
        pydantic.ValidationError: a value is malformed (e.g. a queue size < 1).
    """

    model_config = SettingsConfigDict(env_prefix="RELOADTRACE_", extra="ignore", populate_by_name=True)

    redact_keys: list[str] = Field(default_factory=list, description="Extra deny patterns (glob, or re:regex)")
    redaction_mode: RedactionMode = Field(default=RedactionMode.DROP, description="drop the key or hash its value")
    redaction_salt: SecretStr | None = Field(
        default=None, description="Salt of hashed values; unset = random per process"
    )
    exporter_queue_max_messages: int = Field(
        default=_DEFAULT_QUEUE_MAX_MESSAGES, ge=1, description="Messages the producer holds undelivered before dropping"
    )
    exporter_message_timeout_ms: int = Field(
        default=_DEFAULT_MESSAGE_TIMEOUT_MS, ge=1, description="How long a message may wait for delivery"
    )
    exporter_flush_timeout_ms: int = Field(
        default=_DEFAULT_FLUSH_TIMEOUT_MS, ge=0, description="How long shutdown waits for in-flight messages"
    )
    exporter_linger_ms: int = Field(default=_DEFAULT_LINGER_MS, ge=0, description="librdkafka linger.ms")

    @field_validator("redaction_salt")
    @classmethod
    def _salt_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("redaction salt must not be empty (leave it unset for a random one)")
        return value

    def redactor(self) -> Redactor:
        salt = self.redaction_salt.get_secret_value() if self.redaction_salt is not None else None
        return Redactor(extra_patterns=self.redact_keys, mode=self.redaction_mode, salt=salt)
