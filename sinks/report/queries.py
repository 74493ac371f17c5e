"""The analyst cookbook as data: named SQL blocks parsed out of ``docs/queries.md``, run with bound parameters.

One source for three readers: analysts read the Markdown, the test suite executes every block
against the embedded engine, and ``reloadtrace report`` runs the blocks it needs by name — so the
document, the tests and the report cannot drift apart.

A block is a fenced ``sql`` code block whose first line is ``-- name: <identifier>``. Parameters
use ClickHouse's own server-side syntax ``{name:Type}`` (``clickhouse-client --param_name=...``
takes the same text), so a block pastes into any client unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.errors import ReloadtraceError

COOKBOOK_PATH = Path(__file__).resolve().parents[2] / "docs" / "queries.md"
"""Where the cookbook lives in a source checkout (it is not shipped inside the wheel)."""

_BLOCK = re.compile(r"^```sql[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_NAME = re.compile(r"^--\s*name:\s*(?P<name>[a-z][a-z0-9_]*)\s*$")
_PARAMETER = re.compile(r"\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):(?P<type>[^{}]+)\}")
_HEADING = re.compile(r"^#{2,4}\s+(?P<title>.+?)\s*$", re.MULTILINE)


class CookbookError(ReloadtraceError, ValueError):
    """The cookbook is missing, a block is malformed, or a query is run with wrong parameters."""


@dataclass(frozen=True, slots=True)
class CookbookQuery:
    """One named query of the cookbook.

    Attributes:
        name: the ``-- name:`` identifier, unique in the document.
        title: the nearest Markdown heading above the block (the question it answers).
        sql: the block's text, name line included (a SQL comment, harmless to run).
        parameters: parameter name -> ClickHouse type, in order of first use.
    """

    name: str
    title: str
    sql: str
    parameters: Mapping[str, str] = field(default_factory=dict)

    def check_parameters(self, given: Mapping[str, Any]) -> None:
        """Raise :class:`CookbookError` unless ``given`` names exactly this query's parameters."""
        missing = sorted(set(self.parameters) - set(given))
        unknown = sorted(set(given) - set(self.parameters))
        if missing or unknown:
            raise CookbookError(f"query {self.name!r}: missing parameters {missing}, unknown parameters {unknown}")


def parse_cookbook(markdown: str) -> dict[str, CookbookQuery]:
    """Every named ``sql`` block of a cookbook document, in document order.

    Raises:
        CookbookError: a ``sql`` block without a ``-- name:`` first line, or a duplicated name.
    """
    queries: dict[str, CookbookQuery] = {}
    for block in _BLOCK.finditer(markdown):
        body = block.group("body").strip("\n")
        first_line = body.splitlines()[0] if body else ""
        named = _NAME.match(first_line.strip())
        if named is None:
            line = markdown.count("\n", 0, block.start()) + 1
            raise CookbookError(f"sql block at line {line} does not start with '-- name: <identifier>'")
        name = named.group("name")
        if name in queries:
            raise CookbookError(f"query name {name!r} appears twice")
        headings = list(_HEADING.finditer(markdown, 0, block.start()))
        title = headings[-1].group("title") if headings else name
        parameters: dict[str, str] = {}
        for match in _PARAMETER.finditer(body):
            declared = parameters.setdefault(match.group("name"), match.group("type").strip())
            if declared != match.group("type").strip():
                raise CookbookError(f"query {name!r}: parameter {match.group('name')!r} used with two types")
        queries[name] = CookbookQuery(name=name, title=title, sql=body + "\n", parameters=parameters)
    return queries


def load_cookbook(path: Path | None = None) -> dict[str, CookbookQuery]:
    """Parse the cookbook file (default: ``docs/queries.md`` of the source checkout).

    Raises:
        CookbookError: the file is missing or malformed.
    """
    path = path or COOKBOOK_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CookbookError(f"cannot read the query cookbook {path}: {error}") from error
    return parse_cookbook(text)


def run_query(client: Any, query: CookbookQuery, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run one cookbook query through a clickhouse-connect client; rows as dicts by column name.

    Raises:
        CookbookError: the parameters do not match the query's placeholders.
    """
    given = dict(parameters or {})
    query.check_parameters(given)
    result = client.query(query.sql, parameters=given or None)
    names = result.column_names
    return [dict(zip(names, row, strict=True)) for row in result.result_rows]
