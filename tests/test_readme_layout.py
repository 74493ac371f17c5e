"""The README's layout section matches the tree: every module is named there, every path it names exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "gateway", "streams", "sinks", "infra")


def _layout() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Layout\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _modules() -> list[Path]:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path.name in ("__init__.py", "__main__.py") or "build" in path.parts or "target" in path.parts:
                continue
            found.append(path.relative_to(REPO))
    return found


def test_every_module_is_named_in_the_layout() -> None:
    layout = _layout()
    unnamed = [str(path) for path in _modules() if f"`{path.name}`" not in layout and f"`{path}`" not in layout]
    assert unnamed == [], "README ## Layout does not name these modules"


def test_every_path_the_layout_names_exists() -> None:
    layout = _layout()
    paths = {match for match in re.findall(r"`([\w./-]+/[\w./-]*)`", layout) if not match.startswith(("http", "python"))}
    missing = sorted(path for path in paths if not (REPO / path.rstrip("/")).exists())
    assert missing == [], "README ## Layout names paths that do not exist"
