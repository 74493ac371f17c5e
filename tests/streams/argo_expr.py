"""Argo Rollouts' measurement evaluation, for tests: the expr-lang subset an AnalysisTemplate's conditions use.

Argo (``utils/evaluate/evaluate.go``) compiles ``successCondition`` / ``failureCondition`` with
expr-lang/expr against ``{"result": <jsonPath value>}`` and then decides: no conditions ->
Successful; only a success condition -> Failed when it is false; only a failure condition ->
Successful when it is false; failure true -> Failed; neither true -> Inconclusive; else Successful.
A condition that does not evaluate to a bool, or fails at run time, makes the measurement Error.
The web provider (``metricproviders/webmetric``) makes a non-2xx answer an Error and, with no
``jsonPath``, uses ``{$}`` (the whole JSON body). This module implements the expr subset: literals
(strings, numbers, true/false, nil), ``result`` with ``.field`` and ``["key"]`` access (a missing
map key is nil), ``== != < <= > >=``, ``&& and || or ! not``, ``in`` (over arrays and map keys)
and parentheses, with expr's semantics (numbers compare across int/float; ``==`` on other types
is strict; ordering mixed types, or ``&&`` on a non-bool, is a run-time error).
"""

from __future__ import annotations

import re
from typing import Any

SUCCESSFUL, FAILED, INCONCLUSIVE, ERROR = "Successful", "Failed", "Inconclusive", "Error"

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|(?P<string>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||[<>!().\[\]])|(?P<name>[A-Za-z_][A-Za-z0-9_]*))"
)
_KEYWORDS = {"and": "&&", "or": "||", "not": "!"}


class ExprError(ValueError):
    """The expression is outside the subset, or failed at run time (Argo: an Error measurement)."""


def _tokens(text: str) -> list[tuple[str, Any]]:
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ExprError(f"cannot read the expression at {text[position:]!r}")
        position = match.end()
        if match.group("number") is not None:
            raw = match.group("number")
            tokens.append(("value", float(raw) if any(c in raw for c in ".eE") else int(raw)))
        elif match.group("string") is not None:
            tokens.append(("value", bytes(match.group("string")[1:-1], "utf-8").decode("unicode_escape")))
        elif match.group("op") is not None:
            tokens.append(("op", match.group("op")))
        else:
            name = match.group("name")
            if name in _KEYWORDS:
                tokens.append(("op", _KEYWORDS[name]))
            elif name in ("in",):
                tokens.append(("op", name))
            elif name in ("true", "false"):
                tokens.append(("value", name == "true"))
            elif name == "nil":
                tokens.append(("value", None))
            else:
                tokens.append(("name", name))
    return tokens


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _equal(left: Any, right: Any) -> bool:
    if _number(left) and _number(right):
        return float(left) == float(right)
    if type(left) is not type(right):
        return False
    return left == right


def _order(op: str, left: Any, right: Any) -> bool:
    if not ((_number(left) and _number(right)) or (isinstance(left, str) and isinstance(right, str))):
        raise ExprError(f"invalid operation: {type(left).__name__} {op} {type(right).__name__}")
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


def _bool(value: Any, op: str) -> bool:
    if not isinstance(value, bool):
        raise ExprError(f"invalid operation: {op} on {type(value).__name__}")
    return value


class _Parser:
    def __init__(self, tokens: list[tuple[str, Any]], env: dict[str, Any]) -> None:
        self._tokens, self._index, self._env = tokens, 0, env

    def _peek(self) -> tuple[str, Any] | None:
        return self._tokens[self._index] if self._index < len(self._tokens) else None

    def _take(self, op: str | None = None) -> tuple[str, Any]:
        token = self._peek()
        if token is None or (op is not None and token != ("op", op)):
            raise ExprError(f"expected {op or 'more'} in the expression")
        self._index += 1
        return token

    def parse(self) -> Any:
        value = self._or()
        if self._peek() is not None:
            raise ExprError(f"unexpected {self._peek()[1]!r}")
        return value

    def _or(self) -> Any:
        value = self._and()
        while self._peek() == ("op", "||"):
            self._take()
            right = self._and()
            value = _bool(value, "||") or _bool(right, "||")
        return value

    def _and(self) -> Any:
        value = self._not()
        while self._peek() == ("op", "&&"):
            self._take()
            right = self._not()
            value = _bool(value, "&&") and _bool(right, "&&")
        return value

    def _not(self) -> Any:
        if self._peek() == ("op", "!"):
            self._take()
            return not _bool(self._not(), "!")
        return self._comparison()

    def _comparison(self) -> Any:
        left = self._member()
        token = self._peek()
        if token is not None and token[0] == "op" and token[1] in ("==", "!=", "<", "<=", ">", ">=", "in"):
            op = self._take()[1]
            right = self._member()
            if op == "==":
                return _equal(left, right)
            if op == "!=":
                return not _equal(left, right)
            if op == "in":
                if isinstance(right, dict):
                    return left in right
                if isinstance(right, list):
                    return any(_equal(left, item) for item in right)
                raise ExprError(f"invalid operation: in {type(right).__name__}")
            return _order(op, left, right)
        return left

    def _member(self) -> Any:
        value = self._primary()
        while self._peek() in (("op", "."), ("op", "[")):
            if self._take()[1] == ".":
                kind, name = self._take()
                if kind != "name":
                    raise ExprError("expected a field name after '.'")
                key: Any = name
            else:
                key = self._or()
                self._take("]")
            if isinstance(value, dict):
                value = value.get(key)
            elif isinstance(value, list) and _number(key) and -len(value) <= int(key) < len(value):
                value = value[int(key)]
            elif value is None:
                raise ExprError(f"cannot fetch {key!r} from nil")
            else:
                raise ExprError(f"cannot fetch {key!r} from {type(value).__name__}")
        return value

    def _primary(self) -> Any:
        kind, value = self._take()
        if kind == "value":
            return value
        if kind == "name":
            if value not in self._env:
                raise ExprError(f"unknown name {value}")
            return self._env[value]
        if value == "(":
            inner = self._or()
            self._take(")")
            return inner
        raise ExprError(f"unexpected {value!r}")


def eval_condition(result: Any, condition: str) -> bool:
    """``condition`` with ``result`` bound, as Argo's EvalCondition.

    Raises:
        ExprError: outside the subset, a run-time error, or not a bool.
    """
    value = _Parser(_tokens(condition), {"result": result}).parse()
    if not isinstance(value, bool):
        raise ExprError(f"expected bool, but got {type(value).__name__}")
    return value


def evaluate_result(result: Any, success_condition: str = "", failure_condition: str = "") -> str:
    """The measurement phase Argo gives a result (``EvaluateResult``)."""
    try:
        success = eval_condition(result, success_condition) if success_condition else False
        failure = eval_condition(result, failure_condition) if failure_condition else False
    except ExprError:
        return ERROR
    if not success_condition and not failure_condition:
        return SUCCESSFUL
    if success_condition and not failure_condition:
        failure = not success
    elif failure_condition and not success_condition:
        success = not failure
    if failure:
        return FAILED
    if not success:
        return INCONCLUSIVE
    return SUCCESSFUL


def web_measurement(status_code: int, body: bytes, metric: dict[str, Any]) -> str:
    """The phase of one ``web`` provider measurement of ``metric`` (an AnalysisTemplate metric) on an HTTP answer."""
    import json

    if not 200 <= status_code < 300:
        return ERROR
    web = metric["provider"]["web"]
    path = web.get("jsonPath") or "{$}"
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = body.decode("utf-8", "replace")
    else:
        match = re.fullmatch(r"\{\$((?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}", path)
        if match is None:
            raise ExprError(f"jsonPath {path!r} is outside the subset ({{$}} or {{$.a.b}})")
        for key in filter(None, match.group(1).split(".")):
            if not isinstance(data, dict) or key not in data:
                return ERROR
            data = data[key]
    return evaluate_result(data, metric.get("successCondition", ""), metric.get("failureCondition", ""))
