"""Text from plugin metadata, made safe to keep and to print.

A plugin's names, manifest values and error text reach the host's memory,
logs and terminal.  Two rules, for every such string: it is kept short
(:func:`clip`), and nothing is printed that a terminal would obey
(:func:`printable`).  Standard library only: discovery and the CLI use it.
"""

from __future__ import annotations

__all__ = ["REASON_MAX", "clip", "printable"]

#: The longest reason kept on a plugin or printed for one, in characters.
REASON_MAX = 4000

# C0 controls (but tab and newline, which printable() keeps on request), DEL,
# C1 controls (0x9b is a one-byte CSI to some terminals), and the bidirectional
# marks, overrides and isolates that make text display other than it reads.
# A str.translate table: compiling the same set as a regex costs milliseconds.
_CONTROLS = [*range(0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPE_ALL = {c: f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}" for c in _CONTROLS}
_ESCAPE = {c: e for c, e in _ESCAPE_ALL.items() if c not in (0x09, 0x0A)}


def clip(text: str, limit: int = REASON_MAX) -> str:
    """``text``, cut to about ``limit`` characters with a marker saying how much was dropped."""
    if len(text) <= limit:
        return text
    dropped = len(text) - limit
    return f"{text[:limit]}... [{dropped} more characters]"


def printable(text: object, *, multiline: bool = False) -> str:
    """``str(text)`` with every control character shown as an escape (``\\x1b``), never sent raw.

    With ``multiline``, newlines and tabs are kept (tracebacks); carriage
    returns never are (they would overwrite what is already printed).
    """
    return str(text).translate(_ESCAPE if multiline else _ESCAPE_ALL)
