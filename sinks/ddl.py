"""The ClickHouse schema: read ``schemas/clickhouse/NNN_*.sql`` and apply it, idempotently, in order.

One DDL serves both backends (a server and chDB). Every table statement is ``CREATE ... IF NOT EXISTS``,
so applying the schema to a database that already has it changes nothing; a changed table statement
is NOT migrated (no ALTERs are derived from the files) — add a new numbered file for that, whose
statements are idempotent too (``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``, ``MODIFY QUERY``).
Plain views (no data) are ``CREATE OR REPLACE VIEW``: each apply re-creates them from the current files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DDL_DIR = Path(__file__).resolve().parent.parent / "schemas" / "clickhouse"
_FILE_NAME = re.compile(r"^(?P<number>[0-9]+)_[A-Za-z0-9_]+\.sql$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Tables that get the retention TTL, with the column it counts from.
TTL_COLUMNS = {
    "spans_enriched": "start_time",
    "trace_time_ranges": "end_time",
    "span_minutes": "minute",
    "dead_letters": "dead_lettered_time",
}
TABLES = ("spans_enriched", "trace_time_ranges", "span_minutes", "reload_events", "anomalies", "dead_letters")


@dataclass(frozen=True)
class DdlStatement:
    """One statement of one numbered file."""

    file_name: str
    sql: str


def check_identifier(name: str) -> str:
    """``name`` if it is a plain ClickHouse identifier (letters, digits, '_'), else ``ValueError``."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain identifier (letters, digits and '_', not starting with a digit)")
    return name


def _split_statements(text: str) -> list[str]:
    """Statements of a file: ``--`` comment lines dropped, split at lines ending with ``;``."""
    statements: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statement = "\n".join(current).strip().rstrip(";").strip()
            if statement:
                statements.append(statement)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


def load_statements(directory: Path | str = DDL_DIR) -> list[DdlStatement]:
    """Every statement of every ``NNN_name.sql`` file, files in numeric order.

    Raises:
        ValueError: a ``.sql`` file is not named ``NNN_name.sql``, or two files share a number.
    """
    directory = Path(directory)
    numbered: dict[int, Path] = {}
    for path in directory.glob("*.sql"):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise ValueError(f"{path}: DDL files must be named NNN_name.sql")
        number = int(match["number"])
        if number in numbered:
            raise ValueError(f"{path} and {numbered[number]} share the number {number}")
        numbered[number] = path
    return [
        DdlStatement(path.name, sql)
        for _, path in sorted(numbered.items())
        for sql in _split_statements(path.read_text())
    ]


def apply_schema(client: Any, database: str, ttl_days: int | None = None, directory: Path | str = DDL_DIR) -> int:
    """Create ``database`` and every table and view in it; set or remove the retention TTL.

    Args:
        client: a clickhouse-connect client (server or chDB).
        database: database to create the objects in (statements name tables unqualified); it
            becomes the client's current database.
        ttl_days: rows older than this many days are deleted in merges; ``0`` removes the TTL;
            ``None`` leaves whatever TTL the tables have.

    Returns:
        The number of statements run. Running it again on the same database is a no-op.
    """
    check_identifier(database)
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.database = database
    statements = load_statements(directory)
    for statement in statements:
        client.command(statement.sql)
    if ttl_days is not None:
        if ttl_days < 0:
            raise ValueError(f"ttl_days must be >= 0, got {ttl_days}")
        for table, column in TTL_COLUMNS.items():
            if ttl_days == 0:
                engine = client.command(
                    "SELECT engine_full FROM system.tables WHERE database = {database:String} AND name = {table:String}",
                    parameters={"database": database, "table": table},
                )
                if " TTL " in f" {engine} ":
                    client.command(f"ALTER TABLE {table} REMOVE TTL")
            else:
                client.command(f"ALTER TABLE {table} MODIFY TTL toDateTime({column}) + INTERVAL {int(ttl_days)} DAY")
    return len(statements)
