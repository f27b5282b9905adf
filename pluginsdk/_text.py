"""Text from plugin metadata, made safe to keep and to print.

A plugin's names, manifest values and error text reach the host's memory,
logs and terminal.  Two rules, for every such string: it is kept short
(:func:`clip`), and nothing is printed that a terminal would obey
(:func:`printable`).  Standard library only: discovery and the CLI use it.
"""

from __future__ import annotations

import re

__all__ = ["REASON_MAX", "clip", "printable"]

#: The longest reason kept on a plugin or printed for one, in characters.
REASON_MAX = 4000

# C0 controls (but tab and newline, which printable() keeps on request), DEL,
# C1 controls (0x9b is a one-byte CSI to some terminals), and the bidirectional
# overrides and isolates that make text display other than it reads.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_ALL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clip(text: str, limit: int = REASON_MAX) -> str:
    """``text``, cut to about ``limit`` characters with a marker saying how much was dropped."""
    if len(text) <= limit:
        return text
    dropped = len(text) - limit
    return f"{text[:limit]}... [{dropped} more characters]"


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: object, *, multiline: bool = False) -> str:
    """``str(text)`` with every control character shown as an escape (``\\x1b``), never sent raw.

    With ``multiline``, newlines and tabs are kept (tracebacks); carriage
    returns never are (they would overwrite what is already printed).
    """
    return (_CONTROL if multiline else _CONTROL_ALL).sub(_escape, str(text))
