"""Text from hostile input made safe to show: bounded in size, control characters made visible.

Values read from Kafka or from files may be any size and hold any character. Before one goes into
an error message, a log line, a terminal table or a page:

* :func:`bounded_repr` / :func:`bounded_text` cut it to a fixed number of characters and say how
  long it was (an error that quotes a 1 MB value must not be 1 MB itself);
* :func:`visible` replaces every C0/C1 control character (ESC, NUL, newline, the 0x9b CSI ...),
  DEL and the Unicode bidirectional overrides with a ``\\xNN`` / ``\\uNNNN`` escape, so no terminal
  escape sequence (colours, OSC 8 links, cursor moves) or reordering reaches a reader's screen.

Markup is a renderer's concern: print through ``rich.text.Text`` (never a markup string) or
``html.escape``; :func:`visible` only guarantees there is nothing a terminal would obey.
"""

from __future__ import annotations

from typing import Any

MAX_REPR_CHARS = 200
"""Default length of a quoted value inside an error message or a log line."""
MAX_ERROR_CHARS = 2_000
"""Default length of an error text kept in a dead letter."""

_BIDI = (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)
_ESCAPES = {
    code: (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
    for code in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), *_BIDI)
}


def visible(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1) and bidi override written as an escape."""
    return text.translate(_ESCAPES)


def _cut(text: str, limit: int, total: int) -> str:
    return f"{text[:limit]}... ({total} chars)" if total > limit else text


def bounded_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying its full length when it was longer."""
    return _cut(text, limit, len(text)) if len(text) > limit else text


def bounded_repr(value: Any, limit: int = MAX_REPR_CHARS) -> str:
    """``repr(value)`` of at most about ``limit`` characters; long strings and bytes are cut before the repr
    is built, and the cut says the value's full length. Always printable (repr escapes controls in str)."""
    if isinstance(value, (str, bytes, bytearray)) and len(value) > limit:
        unit = "chars" if isinstance(value, str) else "bytes"
        return f"{value[:limit]!r}... ({len(value)} {unit})"
    try:
        text = repr(value)
    except Exception as error:  # noqa: BLE001 - a hostile __repr__ must not hide the real error
        return f"<unrepresentable {type(value).__name__}: {type(error).__name__}>"
    return visible(_cut(text, limit, len(text)))


def safe_text(value: Any, limit: int | None = None) -> str:
    """``str(value)`` made visible (and cut to ``limit`` characters when given): what a report or a log
    line prints of a value that came from Kafka or a file."""
    text = value if isinstance(value, str) else str(value)
    if limit is not None:
        text = bounded_text(text, limit)
    return visible(text)
