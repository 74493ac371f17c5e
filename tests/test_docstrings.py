"""Module docstrings say purpose and guarantees in a few lines (history belongs in commit messages)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("schemas", "gateway", "streams", "sinks", "infra", "tests")
MAX_LINES = 15


def _modules() -> list[Path]:
    return [
        path
        for root in ROOTS
        for path in sorted((REPO / root).rglob("*.py"))
        if not {"node_modules", "build", "target", ".venv"} & set(path.relative_to(REPO).parts)
    ]


def test_no_module_docstring_is_longer_than_fifteen_lines() -> None:
    long = {}
    for path in _modules():
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False)
        if docstring and len(docstring.strip().splitlines()) > MAX_LINES:
            long[str(path.relative_to(REPO))] = len(docstring.strip().splitlines())
    assert long == {}
