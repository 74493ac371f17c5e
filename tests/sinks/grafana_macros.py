"""Expand the Grafana ClickHouse data source's macros and dashboard variables, so its queries run on chDB.

The data source expands ``$__...`` macros in its backend before the query reaches ClickHouse; this
module does the same for the macros reloadtrace's Grafana queries use, with the same output
(seconds-precision ``toDateTime(<unix>)`` bounds, ``fromUnixTimestamp64Milli(<ms>)`` for ``_ms``
variants, ``toStartOfInterval(toDateTime(col), INTERVAL n second)``). Dashboard variables ``$name``
/ ``${name}`` are interpolated as the data source does it: a multi-value variable (a list here) as
quoted, comma-separated literals, a single value as its raw text (so write ``'$trace_id'``);
``$__conditionalAll(condition, $var)`` is ``1=1`` when ``$var`` is All. Any other macro or an
unknown variable raises, so a document cannot use one that the tests do not expand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

ALL = object()
"""The value of a variable with "All" selected."""

_MACRO = re.compile(r"\$__(?P<name>[A-Za-z_]+)(?P<open>\()?")
_VARIABLE = re.compile(r"\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


class MacroError(ValueError):
    """A macro or variable this expander does not know, or malformed arguments."""


@dataclass(frozen=True)
class GrafanaContext:
    """What Grafana passes with a query: the dashboard time range, the interval, the variables."""

    from_ms: int
    to_ms: int
    interval_s: int = 60
    variables: Mapping[str, object] = field(default_factory=dict)

    @property
    def from_s(self) -> int:
        return self.from_ms // 1000

    @property
    def to_s(self) -> int:
        return self.to_ms // 1000


def _quote(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def _arguments(sql: str, start: int) -> tuple[list[str], int]:
    """The comma-separated arguments of a macro call whose '(' is at ``start - 1``; and the index after ')'."""
    depth, quote, current, arguments = 0, "", [], []
    index = start
    while index < len(sql):
        char = sql[index]
        if quote:
            current.append(char)
            if char == "\\":
                current.append(sql[index + 1])
                index += 1
            elif char == quote:
                quote = ""
        elif char in "'\"`":
            quote = char
            current.append(char)
        elif char == "(":
            depth += 1
            current.append(char)
        elif char == ")":
            if depth == 0:
                arguments.append("".join(current).strip())
                return arguments, index + 1
            depth -= 1
            current.append(char)
        elif char == "," and depth == 0:
            arguments.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        index += 1
    raise MacroError(f"unclosed macro call at {sql[start - 20 : start]!r}")


def _variable(name: str, context: GrafanaContext) -> str:
    if name not in context.variables:
        raise MacroError(f"unknown dashboard variable ${name}")
    value = context.variables[name]
    if value is ALL:
        raise MacroError(f"${name} is All: use it inside $__conditionalAll")
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ",".join(_quote(item) for item in value)
    return str(value)


def interpolate_variables(sql: str, context: GrafanaContext) -> str:
    """Every ``$name`` / ``${name}`` (not a ``$__`` macro) replaced by its quoted value(s)."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        if name.startswith("__"):
            return match.group(0)
        return _variable(name, context)

    return _VARIABLE.sub(substitute, sql)


def expand(sql: str, context: GrafanaContext) -> str:
    """``sql`` as the data source sends it to ClickHouse.

    Raises:
        MacroError: a macro or variable not known here.
    """
    out: list[str] = []
    position = 0
    while (match := _MACRO.search(sql, position)) is not None:
        out.append(sql[position : match.start()])
        name = match.group("name")
        arguments: list[str] = []
        end = match.end()
        if match.group("open"):
            arguments, end = _arguments(sql, match.end())
        out.append(_macro(name, arguments, context))
        position = end
    out.append(sql[position:])
    return interpolate_variables("".join(out), context)


def _macro(name: str, arguments: list[str], context: GrafanaContext) -> str:
    def one() -> str:
        if len(arguments) != 1:
            raise MacroError(f"$__{name} takes one argument, got {arguments}")
        return arguments[0]

    if name == "timeFilter":
        column = one()
        return f"{column} >= toDateTime({context.from_s}) AND {column} <= toDateTime({context.to_s})"
    if name == "timeFilter_ms":
        column = one()
        return (
            f"{column} >= fromUnixTimestamp64Milli({context.from_ms})"
            f" AND {column} <= fromUnixTimestamp64Milli({context.to_ms})"
        )
    if name == "fromTime":
        return f"toDateTime({context.from_s})"
    if name == "toTime":
        return f"toDateTime({context.to_s})"
    if name == "fromTime_ms":
        return f"fromUnixTimestamp64Milli({context.from_ms})"
    if name == "toTime_ms":
        return f"fromUnixTimestamp64Milli({context.to_ms})"
    if name == "timeInterval":
        return f"toStartOfInterval(toDateTime({one()}), INTERVAL {context.interval_s} second)"
    if name == "interval_s":
        return str(context.interval_s)
    if name == "conditionalAll":
        if len(arguments) != 2 or not arguments[1].startswith("$"):
            raise MacroError(f"$__conditionalAll(condition, $variable), got {arguments}")
        variable = arguments[1].strip("${}")
        if variable not in context.variables:
            raise MacroError(f"unknown dashboard variable ${variable}")
        if context.variables[variable] is ALL:
            return "1=1"
        return expand(arguments[0], context)
    raise MacroError(f"macro $__{name} is not expanded by tests/sinks/grafana_macros.py")
