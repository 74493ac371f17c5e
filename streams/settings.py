"""Settings of the streaming worker (``reloadtrace worker``): timing of enrichment, batching, limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DEFAULT_GRACE_PERIOD_MS = 2_000
_DEFAULT_CORRECTION_HORIZON_MS = 120_000
_DEFAULT_BATCH_SIZE = 5_000
_DEFAULT_POLL_TIMEOUT_MS = 50
_DEFAULT_COMMIT_INTERVAL_MS = 1_000
_DEFAULT_WATERMARK_INTERVAL_MS = 100
_DEFAULT_CLOCK_SKEW_MS = 200
_DEFAULT_MAX_SPAN_AGE_MS = 30 * 24 * 3_600 * 1_000
_DEFAULT_MAX_FUTURE_MS = 3_600 * 1_000
_DEFAULT_SESSION_TIMEOUT_MS = 45_000
_DEFAULT_MAX_LATENESS_MS = 30_000
_DEFAULT_FEED_WATERMARK_INTERVAL_MS = 250
_DEFAULT_IDLE_PARTITION_MS = 5_000


class WorkerSettings(BaseSettings):
    """Environment variables ``RELOADTRACE_<FIELD>`` (e.g. ``RELOADTRACE_GRACE_PERIOD_MS``).

    Raises:
        pydantic.ValidationError: a value is out of range (e.g. horizon shorter than grace).
    """

    model_config = SettingsConfigDict(env_prefix="RELOADTRACE_", extra="ignore")

    group_id: str = Field(default="reloadtrace-worker", min_length=1, description="Kafka consumer group of the workers")
    grace_period_ms: int = Field(
        default=_DEFAULT_GRACE_PERIOD_MS, ge=0, description="How long (broker arrival time) a span waits for reloads"
    )
    correction_horizon_ms: int = Field(
        default=_DEFAULT_CORRECTION_HORIZON_MS, ge=0, description="How much later a reload may still correct a span"
    )
    batch_size: int = Field(default=_DEFAULT_BATCH_SIZE, ge=1, description="Spans consumed per batch")
    poll_timeout_ms: int = Field(default=_DEFAULT_POLL_TIMEOUT_MS, ge=1, description="Longest wait for a batch")
    commit_interval_ms: int = Field(default=_DEFAULT_COMMIT_INTERVAL_MS, ge=10, description="Offset commit period")
    watermark_interval_ms: int = Field(
        default=_DEFAULT_WATERMARK_INTERVAL_MS, ge=10, description="How often idle partitions are checked for progress"
    )
    clock_skew_ms: int = Field(
        default=_DEFAULT_CLOCK_SKEW_MS, ge=0, description="Allowance between this host's clock and the broker's"
    )
    spans_encoding: Literal["avro", "otlp_proto", "otlp_json"] = Field(
        default="avro", description="How messages of the spans topic are written: reloadtrace's Avro, or OTLP"
    )
    otlp_enabled: bool = Field(
        default=True, description="Also read OTLP spans from the otlp_spans topic (a Collector's kafkaexporter)"
    )
    otlp_encoding: Literal["otlp_proto", "otlp_json"] = Field(
        default="otlp_proto", description="The kafkaexporter encoding of the otlp_spans topic"
    )
    otlp_max_message_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1, description="Largest OTLP message decoded (larger: dead-lettered)"
    )
    enriched_otlp_topic: str | None = Field(
        default=None,
        min_length=1,
        description="Also publish the enriched spans as otlp_proto to this topic (for a Collector's kafkareceiver);"
        " unset: off",
    )
    max_lateness_ms: int = Field(
        default=_DEFAULT_MAX_LATENESS_MS,
        ge=0,
        description="Bound the detector's watermarks rely on: a span (or reload) reaches the broker before any span of its"
        " partition that started more than this after it, and at most this long after it started (request duration,"
        " export delay and clock skew). Every look waits this long in event time",
    )
    feed_watermark_interval_ms: int = Field(
        default=_DEFAULT_FEED_WATERMARK_INTERVAL_MS, ge=10, description="How often watermarks go to the detector's feed"
    )
    idle_partition_ms: int = Field(
        default=_DEFAULT_IDLE_PARTITION_MS,
        ge=0,
        description="A span partition read to its end with nothing new for this long is idle: its watermark follows"
        " broker time (less max_lateness_ms)",
    )
    max_span_age_ms: int = Field(
        default=_DEFAULT_MAX_SPAN_AGE_MS, ge=1, description="Spans older than this at arrival are dead-lettered"
    )
    max_future_ms: int = Field(
        default=_DEFAULT_MAX_FUTURE_MS, ge=0, description="Spans from further in the future are dead-lettered"
    )
    session_timeout_ms: int = Field(
        default=_DEFAULT_SESSION_TIMEOUT_MS,
        ge=6_000,
        description="Consumer-group session timeout: how long a crashed worker's partitions wait for a new owner",
    )
    refetch_corrections: bool = Field(
        default=True,
        description="Drop the bytes of answered spans and re-read them from the topic to correct them "
        "(memory: ~0.2 KB less per span over the horizon; a log read per correction batch)",
    )
    detection_enabled: bool = Field(default=True, description="Judge every reload for regressions")
    sink_url: SecretStr | None = Field(
        default=SecretStr("chdb://./data/chdb"),
        description="ClickHouse destination (chdb://PATH or clickhouse://user:pass@...; a secret); empty = none",
    )
    component_processes: bool = Field(
        default=True,
        description="Run the sink and the detector each in a child process (own GIL and memory) rather than "
        "as threads of the worker process",
    )

    @property
    def sink_url_value(self) -> str:
        """The sink URL itself (empty when there is no sink); only for the sink's own settings."""
        return self.sink_url.get_secret_value() if self.sink_url is not None else ""

    @model_validator(mode="after")
    def _horizon_covers_grace(self) -> WorkerSettings:
        if self.correction_horizon_ms < self.grace_period_ms:
            raise ValueError(
                f"correction_horizon_ms ({self.correction_horizon_ms}) must be >= grace_period_ms ({self.grace_period_ms})"
            )
        return self
