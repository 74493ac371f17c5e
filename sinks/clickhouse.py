"""The ClickHouse destination over clickhouse-connect: a server (HTTP) or the embedded chDB engine.

Both backends get the same DDL (``schemas/clickhouse``), the same Avro-container inserts and the same
queries. Idempotence (see README "ClickHouse sink"):

* Every insert carries ``insert_deduplication_token`` (from the Kafka topic/partition/offsets of its
  rows) and every table has ``non_replicated_deduplication_window``, so the same batch inserted twice
  (a retry after a timeout that had in fact succeeded) is stored once, on a server and in chDB alike
  (the engine keeps the last 10,000 block tokens per table, on disk); materialized views see only
  accepted blocks. Rows re-inserted in differently cut batches (after a crash) are not caught by
  tokens; the tables' ReplacingMergeTree keys collapse them: counts are exact with FINAL.

chDB allows one engine per process and one process per data directory: only the process running the
sink opens its path (the worker's sink child by default, :mod:`streams.components`); another process
opening it meanwhile gets :class:`~sinks.errors.SinkEngineBusyError`.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError, ProgrammingError

from schemas.text import bounded_text
from sinks.avro_blocks import body_problem, container, encode_body, landing_table, latest_schema
from sinks.base import BatchingSink, KafkaRows, SinkBatch, SinkRecord
from sinks.ddl import apply_schema
from sinks.errors import (
    SinkBackpressureError,
    SinkConfigError,
    SinkEngineBusyError,
    SinkError,
    SinkFatalError,
    SinkRejectedError,
    SinkRetryableError,
    UnconvertibleRecordError,
)
from sinks.settings import SinkSettings, SinkTarget, parse_sink_url

logger = logging.getLogger(__name__)

# ClickHouse error codes (src/Common/ErrorCodes.cpp) by what the sink does about them.
REJECTED_DATA_CODES = frozenset(
    {6, 27, 38, 41, 53, 69, 70, 72, 117, 321, 349, 407, 469}
)  # CANNOT_PARSE_*, TYPE_MISMATCH, ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE, INCORRECT_DATA,
#    VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE, CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN, DECIMAL_OVERFLOW,
#    VIOLATED_CONSTRAINT
BACKPRESSURE_CODES = frozenset({202, 252})  # TOO_MANY_SIMULTANEOUS_QUERIES, TOO_MANY_PARTS
RETRYABLE_CODES = frozenset(
    {3, 32, 75, 159, 209, 210, 241, 242, 243, 285, 319, 394, 425, 999}
)  # UNEXPECTED_END_OF_FILE, ATTEMPT_TO_READ_AFTER_EOF, CANNOT_WRITE_TO_FILE_DESCRIPTOR, TIMEOUT_EXCEEDED,
#    SOCKET_TIMEOUT, NETWORK_ERROR, MEMORY_LIMIT_EXCEEDED, TABLE_IS_READ_ONLY, NOT_ENOUGH_SPACE (a full
#    disk frees up: the batch waits, it is not the data's fault), TOO_FEW_LIVE_REPLICAS,
#    UNKNOWN_STATUS_OF_INSERT, QUERY_WAS_CANCELLED, SYSTEM_ERROR, KEEPER_EXCEPTION
SERVER_FAILED_CODES = frozenset({75, 241, 243, 285})
"""Retryable codes with which the server says the insert failed (CANNOT_WRITE_TO_FILE_DESCRIPTOR,
MEMORY_LIMIT_EXCEEDED, NOT_ENOUGH_SPACE, TOO_FEW_LIVE_REPLICAS) — possibly after a part of its
chain of materialized views had been written: see ``BatchingSink._write_with_retries``."""
_BACKPRESSURE_RETRY_AFTER_S = 1.0
# Avro input that does not parse: CANNOT_READ_ALL_DATA, INCORRECT_DATA, CANNOT_PARSE_INPUT_ASSERTION_FAILED,
# ATTEMPT_TO_READ_AFTER_EOF, UNEXPECTED_END_OF_FILE, TOO_LARGE_STRING_SIZE, CANNOT_ALLOCATE_MEMORY (a
# garbage length), and the catch-all STD_EXCEPTION / UNKNOWN_EXCEPTION of the Avro library.
_UNREADABLE_INPUT_CODES = frozenset({33, 117, 27, 32, 3, 131, 173, 1001, 1002})


def _insert_settings(token: str) -> dict[str, Any]:
    """Settings of every insert: the batch's deduplication token, honoured by the views' targets too,
    and no collapsing inside the inserted block (``optimize_on_insert = 0``: measured 3-4x cheaper
    for spans_enriched; replacing still happens in merges and under FINAL). Each writer version lands
    through a landing table of its own (:func:`sinks.avro_blocks.landing_table`), so no field is ever
    missing from a container."""
    return {
        "insert_deduplication_token": token,
        "deduplicate_blocks_in_dependent_materialized_views": 1,
        "optimize_on_insert": 0,
    }


def classify(error: Exception) -> SinkError:
    """The :mod:`sinks.errors` error for a clickhouse-connect (or chDB) failure."""
    code = getattr(error, "code", None)
    message = f"{type(error).__name__}: {bounded_text(str(error), 2_000)}"  # may quote the data it refused
    if code in BACKPRESSURE_CODES:
        return SinkBackpressureError(_BACKPRESSURE_RETRY_AFTER_S, message)
    if code in REJECTED_DATA_CODES:
        return SinkRejectedError(message)
    if code in RETRYABLE_CODES or isinstance(error, (OperationalError, ConnectionError, TimeoutError)):
        return SinkRetryableError(message, server_failed=code in SERVER_FAILED_CODES)
    return SinkFatalError(message)


def open_client(target: SinkTarget | str, *, database: str | None = None) -> Any:
    """A clickhouse-connect client for ``target`` (a :class:`SinkTarget` or a sink URL).

    For ``chdb://PATH`` the directory is created; clients of one process share the engine, and
    a process can open one path only (``SinkConfigError`` otherwise).

    Raises:
        SinkEngineBusyError: another process holds the chDB data directory.
        SinkConfigError: bad URL, or a second chDB path in this process.
        SinkRetryableError: the server does not answer.
    """
    if isinstance(target, str):
        target = parse_sink_url(target)
    try:
        if target.embedded:
            Path(target.path).mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(interface="chdb", path=target.path)
            if database:
                client.database = database
            return client
        return clickhouse_connect.get_client(
            host=target.host,
            port=target.port,
            username=target.username,
            password=target.password.get_secret_value(),
            secure=target.secure,
            database=database or "default",
            compress=False,
        )
    except ProgrammingError as error:
        if target.embedded and _locked_by_another_process(Path(target.path)):
            raise SinkEngineBusyError(
                f"cannot open {target.describe()}: another process holds its data directory (chDB opens a"
                " directory in one process only: stop the other, or wait for it to stop)"
            ) from error
        hint = ""
        if "already initialized with path" in str(error):
            hint = " (chDB opens one data directory per process: this process opened another path)"
        raise SinkConfigError(f"cannot open {target.describe()}: {error}{hint}") from error
    except (ClickHouseError, OSError) as error:
        raise classify(error) from error


def _locked_by_another_process(path: Path) -> bool:
    """Whether the engine's lock on ``path/status`` is held (asked after a failed open: chDB reports
    that case only as "Error initializing EmbeddedServer", the reason goes to stderr)."""
    try:
        descriptor = os.open(path / "status", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return False
    finally:
        os.close(descriptor)


class ClickHouseSink(BatchingSink):
    """Writes batches as Avro-container inserts with deduplication tokens; applies the DDL when opened.

    Args:
        settings: where and how (see :class:`sinks.settings.SinkSettings`).
        client: an open clickhouse-connect client to use instead of opening ``settings.url``.
        apply_ddl: create the database, tables and views (idempotent) before the first write.
        **batching: overrides of :class:`~sinks.base.BatchingSink` arguments (clock, sleep, ...).
    """

    def __init__(
        self, settings: SinkSettings | None = None, *, client: Any = None, apply_ddl: bool = True, **batching: Any
    ) -> None:
        settings = settings or SinkSettings()
        options = {
            "flush_rows": settings.flush_rows,
            "flush_interval_ms": settings.flush_interval_ms,
            "retry_timeout_ms": settings.retry_timeout_ms,
            "retry_initial_backoff_ms": settings.retry_initial_backoff_ms,
            "retry_max_backoff_ms": settings.retry_max_backoff_ms,
        } | batching
        super().__init__(**options)
        self.settings = settings
        self.target = settings.target()
        self.database = self.target.database
        self.client = client if client is not None else open_client(self.target)
        if apply_ddl:
            try:
                apply_schema(self.client, self.database, ttl_days=settings.ttl_days)
            except ClickHouseError as error:
                raise classify(error) from error
        else:
            self.client.database = self.database

    def write(self, batch: SinkBatch) -> None:
        """Insert the batch's Avro bodies as one container per writer schema into its landing table
        (``<table>_avro`` for v1, ``<table>_vN_avro`` for vN: :func:`sinks.avro_blocks.landing_table`).

        A block ClickHouse refuses as undecodable is checked record by record in Python; the
        records to blame are raised as :class:`UnconvertibleRecordError` (dead-lettered by the
        base class), anything else refused as :class:`SinkRejectedError`.
        """
        groups = self._bodies_by_schema(batch)
        for part, (schema, indexes, bodies) in enumerate(groups):
            token = batch.dedup_token if len(groups) == 1 else f"{batch.dedup_token}#{part}"
            try:
                self.client.raw_insert(
                    f"{self.database}.{landing_table(batch.table, schema)}",
                    None,
                    container(schema, bodies),
                    fmt="Avro",
                    settings=_insert_settings(token),
                )
            except (ClickHouseError, OSError) as error:
                failure = classify(error)
                if isinstance(failure, SinkRejectedError) or getattr(error, "code", None) in _UNREADABLE_INPUT_CODES:
                    reasons = {
                        index: problem
                        for index, body in zip(indexes, bodies, strict=True)
                        if (problem := body_problem(schema, body)) is not None
                    }
                    if reasons:
                        raise UnconvertibleRecordError(reasons, "malformed") from error
                raise failure from error

    @staticmethod
    def _bodies_by_schema(batch: SinkBatch) -> list[tuple[Any, Sequence[int], list[bytes]]]:
        """(writer schema, batch positions, bodies) per writer schema, in first-seen order."""
        if isinstance(batch.items, KafkaRows):  # the consumer's fast path: one schema, bodies as they came
            return [(batch.items.writer_schema, range(len(batch.items)), batch.items.bodies())]
        groups: dict[bytes, tuple[Any, list[int], list[bytes]]] = {}
        unfit: dict[int, str] = {}
        latest = latest_schema(batch.table)
        for index, item in enumerate(batch.items):
            if item.avro_body is not None and item.writer_schema is not None:
                schema, body = item.writer_schema, item.avro_body
            else:
                schema = latest
                try:
                    body = encode_body(schema, item.value or {})
                except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as error:
                    unfit[index] = f"does not fit {schema.name}: {type(error).__name__}: {error}"
                    continue
            group = groups.setdefault(schema.fingerprint, (schema, [], []))
            group[1].append(index)
            group[2].append(body)
        if unfit:
            raise UnconvertibleRecordError(unfit)
        return list(groups.values())

    def write_records(self, table: str, records: Sequence[Mapping[str, Any]]) -> int:
        """Add ``records`` (not from Kafka) to ``table`` and flush: a convenience for tools and tests."""
        for record in records:
            self.add(SinkRecord(table, record))
        return self.flush()

    def query(
        self, sql: str, parameters: Mapping[str, Any] | None = None, *, binary_strings: bool = False
    ) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` run in the sink's database (``{name:Type}`` placeholders bound from ``parameters``).

        Strings come back as ``str`` (clickhouse-connect shows bytes that are not UTF-8 as hex);
        ``binary_strings=True`` returns every String column as ``bytes`` instead (raw dead letters).

        Raises:
            SinkError: the query failed (classified like writes).
        """
        formats = {"String": "bytes"} if binary_strings else None
        try:
            return list(self.client.query(sql, parameters=dict(parameters or {}), query_formats=formats).result_rows)
        except (ClickHouseError, OSError) as error:
            raise classify(error) from error

    def count(self, table: str, *, final: bool = True) -> int:
        """Rows of ``table`` (with FINAL: after replacing, the exact count)."""
        return int(self.query(f"SELECT count() FROM {self.database}.{table}{' FINAL' if final else ''}")[0][0])

    def close(self) -> None:
        """Close the client (pending records are NOT flushed: call ``flush`` first)."""
        self.client.close()
