"""Settings of the Kafka side of the contract: where the broker is, topic names, wire framing.

Built once in a command's ``main`` (flags override environment variables) and passed down;
there is no module-level settings object.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.codec import Codec, codec_for
from schemas.text import safe_text
from schemas.topics import TopicNames

_DEFAULT_BOOTSTRAP_SERVERS = "127.0.0.1:9092"
_DEFAULT_PARTITIONS = 4


class KafkaSettings(BaseSettings):
    """Environment: ``KAFKA_BOOTSTRAP_SERVERS`` (or ``RELOADTRACE_BOOTSTRAP_SERVERS``),
    ``RELOADTRACE_TOPIC_PREFIX``, ``RELOADTRACE_PARTITIONS``, ``RELOADTRACE_SCHEMA_REGISTRY_URL``,
    ``RELOADTRACE_KAFKA_SASL_USERNAME`` / ``..._PASSWORD`` (SASL/PLAIN over TLS when set).

    Raises:
        pydantic.ValidationError: a value is malformed (e.g. partitions < 1).
    """

    model_config = SettingsConfigDict(env_prefix="RELOADTRACE_", extra="ignore", populate_by_name=True)

    bootstrap_servers: str = Field(
        default=_DEFAULT_BOOTSTRAP_SERVERS,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "RELOADTRACE_BOOTSTRAP_SERVERS", "bootstrap_servers"),
        description="Kafka bootstrap servers, host:port[,host:port...]",
    )
    topic_prefix: str = Field(default="", description="Prefix of every topic name")
    partitions: int = Field(default=_DEFAULT_PARTITIONS, ge=1, description="Partitions of topics the project creates")
    schema_registry_url: str | None = Field(
        default=None, description="Confluent schema registry URL; unset = Avro single-object framing"
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL/PLAIN user (enables SASL_SSL)")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL/PLAIN password")

    @field_validator("bootstrap_servers")
    @classmethod
    def _bootstrap_not_empty(cls, value: str) -> str:
        servers = [part.strip() for part in value.split(",") if part.strip()]
        if not servers or not all(":" in server for server in servers):
            raise ValueError(f"bootstrap servers must be host:port[,host:port...], got {value!r}")
        return ",".join(servers)

    @property
    def topics(self) -> TopicNames:
        return TopicNames(prefix=self.topic_prefix)

    def codec(self, record_name: str) -> Codec:
        """The codec for ``record_name`` with this deployment's framing."""
        return codec_for(record_name, schema_registry_url=self.schema_registry_url)

    def confluent_config(self) -> dict[str, str]:
        """librdkafka settings shared by producers, consumers and admin clients."""
        config = {"bootstrap.servers": self.bootstrap_servers}
        if self.kafka_sasl_username:
            config |= {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "PLAIN",
                "sasl.username": self.kafka_sasl_username,
                "sasl.password": self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else "",
            }
        return config


def settings_error(error: ValidationError) -> str:
    """One line naming each invalid setting and why, without the value given (it may be a password or a
    URL with one): what every command prints instead of pydantic's own text, which quotes the input."""
    problems = []
    for detail in error.errors(include_url=False, include_context=False, include_input=False):
        where = ".".join(str(part) for part in detail.get("loc", ())) or error.title
        message = str(detail.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return safe_text("invalid settings: " + "; ".join(problems), 1_000)
