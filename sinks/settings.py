"""Settings of the ClickHouse sink: where to write (a server or the embedded engine), batching, retries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.text import safe_text
from schemas.urls import mask_password
from sinks.ddl import check_identifier
from sinks.errors import SinkConfigError

_DEFAULT_URL = "chdb://./data/chdb"
_DEFAULT_DATABASE = "reloadtrace"
_DEFAULT_FLUSH_ROWS = 50_000
_DEFAULT_FLUSH_INTERVAL_MS = 500
"""Half a second: p99 freshness at 5k spans/s was 5.1 s with 1 s, 3.9 s with 500 ms (BENCHMARKS.md)."""
_DEFAULT_WRITERS = 2
"""Two flushes in flight on two clients: the engine converts and stores two blocks at once (chDB
releases the GIL), while the consumer keeps reading; a third was no faster on 2 cores (BENCHMARKS.md)."""
_DEFAULT_RETRY_TIMEOUT_MS = 120_000
_DEFAULT_RETRY_INITIAL_BACKOFF_MS = 100
_DEFAULT_RETRY_MAX_BACKOFF_MS = 5_000
_DEFAULT_GROUP_ID = "reloadtrace-sink"
_DEFAULT_SESSION_TIMEOUT_MS = 30_000
_DEFAULT_HTTP_PORT = 8123
_DEFAULT_HTTPS_PORT = 8443
_SERVER_SCHEMES = {"clickhouse": False, "http": False, "clickhouses": True, "https": True}


@dataclass(frozen=True)
class SinkTarget:
    """A parsed sink URL: the embedded engine at ``path``, or a server at ``host:port``."""

    embedded: bool
    database: str
    path: str = ""
    host: str = ""
    port: int = 0
    username: str = "default"
    password: SecretStr = field(default_factory=lambda: SecretStr(""))
    secure: bool = False

    def describe(self) -> str:
        """The target without its password, for logs."""
        if self.embedded:
            return f"chdb://{self.path} (database {self.database})"
        scheme = "clickhouses" if self.secure else "clickhouse"
        return f"{scheme}://{self.username}@{self.host}:{self.port}/{self.database}"


def parse_sink_url(url: str, *, database: str = _DEFAULT_DATABASE, password: SecretStr | None = None) -> SinkTarget:
    """Parse ``chdb://PATH[?database=DB]`` or ``clickhouse[s]://user:pass@host:port/db``.

    ``chdb://./data/chdb`` is relative to the working directory, ``chdb:///abs/path`` absolute.
    A database in the URL wins over ``database``; ``password`` wins over one in the URL.

    Raises:
        SinkConfigError: unknown scheme, no host, or a database name that is not an identifier.
    """
    if url.startswith("chdb://"):
        rest, _, query = url[len("chdb://") :].partition("?")
        path = unquote(rest)
        if not path or path in ("memory", ":memory:"):
            raise SinkConfigError("chdb:// needs a data directory (an in-memory engine would lose data)")
        options = parse_qs(query)
        name = options.get("database", [database])[0]
        return SinkTarget(embedded=True, database=_identifier(name), path=path)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:  # the text may hold a password: name the problem, not the URL
        raise SinkConfigError(f"sink URL is not a valid URL ({error})") from None
    if parts.scheme not in _SERVER_SCHEMES:
        raise SinkConfigError(f"sink URL must start with chdb:// or clickhouse[s]://, got {safe_text(mask_password(url), 200)!r}")
    if not parts.hostname:
        raise SinkConfigError(f"sink URL {safe_text(mask_password(url), 200)!r} has no host")
    secure = _SERVER_SCHEMES[parts.scheme] or parse_qs(parts.query).get("secure", ["false"])[0] in ("1", "true")
    name = unquote(parts.path.strip("/")) or database
    return SinkTarget(
        embedded=False,
        database=_identifier(name),
        host=parts.hostname,
        port=port or (_DEFAULT_HTTPS_PORT if secure else _DEFAULT_HTTP_PORT),
        username=unquote(parts.username) if parts.username else "default",
        password=password if password is not None else SecretStr(unquote(parts.password or "")),
        secure=secure,
    )


def _identifier(name: str) -> str:
    try:
        return check_identifier(name)
    except ValueError as error:
        raise SinkConfigError(f"database {error}") from error


class SinkSettings(BaseSettings):
    """Environment: ``RELOADTRACE_SINK_URL``, ``RELOADTRACE_SINK_DATABASE``, ``RELOADTRACE_SINK_PASSWORD``,
    ``RELOADTRACE_SINK_FLUSH_ROWS``, ``RELOADTRACE_SINK_FLUSH_INTERVAL_MS``, ``RELOADTRACE_SINK_TTL_DAYS``,
    ``RELOADTRACE_SINK_RETRY_TIMEOUT_MS``, ``RELOADTRACE_SINK_GROUP_ID``, ``RELOADTRACE_SINK_SESSION_TIMEOUT_MS``,
    ``RELOADTRACE_SINK_WRITERS``.

    A password written in the URL is moved into ``password`` (a ``SecretStr``) and removed from
    ``url``, so printing the settings never shows it.

    Raises:
        pydantic.ValidationError: a value is malformed (bad URL, limits < 1).
    """

    model_config = SettingsConfigDict(env_prefix="RELOADTRACE_SINK_", extra="ignore", populate_by_name=True)

    url: str = Field(default=_DEFAULT_URL, description="chdb://PATH (embedded) or clickhouse[s]://user:pass@host:port/db")
    database: str = Field(default=_DEFAULT_DATABASE, description="Database when the URL names none")
    password: SecretStr | None = Field(default=None, description="Server password (overrides one in the URL)")
    flush_rows: int = Field(default=_DEFAULT_FLUSH_ROWS, ge=1, description="Flush when this many rows are pending")
    flush_interval_ms: int = Field(
        default=_DEFAULT_FLUSH_INTERVAL_MS, ge=1, description="Flush when the oldest pending row waited this long"
    )
    writers: int = Field(
        default=_DEFAULT_WRITERS,
        ge=1,
        description="Flushes in flight at once, each on its own client (the consumer keeps reading meanwhile)",
    )
    ttl_days: int | None = Field(default=None, ge=0, description="Delete rows older than this (0 removes the TTL)")
    retry_timeout_ms: int = Field(default=_DEFAULT_RETRY_TIMEOUT_MS, ge=0, description="Give up retrying a batch after")
    retry_initial_backoff_ms: int = Field(
        default=_DEFAULT_RETRY_INITIAL_BACKOFF_MS, ge=1, description="First delay before a failed flush is retried"
    )
    retry_max_backoff_ms: int = Field(
        default=_DEFAULT_RETRY_MAX_BACKOFF_MS, ge=1, description="Longest delay between retries of a flush (doubling)"
    )
    group_id: str = Field(default=_DEFAULT_GROUP_ID, description="Kafka consumer group of the sink")
    session_timeout_ms: int = Field(
        default=_DEFAULT_SESSION_TIMEOUT_MS, ge=1, description="Kafka session timeout (how fast a dead sink's partitions move)"
    )

    @field_validator("database")
    @classmethod
    def _database_is_identifier(cls, value: str) -> str:
        return check_identifier(value)

    @model_validator(mode="after")
    def _move_password_out_of_url(self) -> SinkSettings:
        if not self.url.startswith("chdb://"):
            try:
                parts = urlsplit(self.url)
            except ValueError as error:
                raise SinkConfigError(f"sink URL is not a valid URL ({error})") from None
            if parts.password is not None:
                if self.password is None:
                    self.password = SecretStr(unquote(parts.password))
                netloc = parts.netloc.replace(f":{parts.password}@", "@", 1)
                self.url = urlunsplit(parts._replace(netloc=netloc))
        parse_sink_url(self.url, database=self.database, password=self.password)  # fail early on a bad URL
        return self

    def target(self) -> SinkTarget:
        return parse_sink_url(self.url, database=self.database, password=self.password)

    @property
    def embedded_path(self) -> Path | None:
        target = self.target()
        return Path(target.path) if target.embedded else None
