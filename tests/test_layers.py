"""The layers import downward only: schemas/ is the bottom, sinks/ and gateway/ sit on it, streams/ on top.

Every ``import`` and ``from … import`` is read with :mod:`ast`, inside functions and ``TYPE_CHECKING``
blocks too, so a lazy import that runs upward fails here as a top-level one would.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> the top-level packages of this project it must not import
FORBIDDEN = {
    "schemas": {"streams", "sinks", "gateway", "infra"},
    "sinks": {"streams", "gateway", "infra"},
    "gateway": {"streams", "sinks", "infra"},
}


def imported_packages(path: Path) -> set[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``path`` (a relative one stays in its package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name.split(".")[0]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_upward(package: str) -> None:
    assert modules(package), f"no modules found under {package}/"
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {imported}"
        for path in modules(package)
        for line, imported in sorted(imported_packages(path))
        if imported in FORBIDDEN[package]
    ]
    assert not upward, f"{package}/ must not import {sorted(FORBIDDEN[package])}:\n" + "\n".join(upward)
