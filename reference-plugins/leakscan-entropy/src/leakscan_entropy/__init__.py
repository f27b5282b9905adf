"""leakscan community rule: random-looking strings that are probably keys or tokens.

Third-party code, so it asks for the strongest isolation: the WebAssembly sandbox.
"""

from __future__ import annotations

from typing import Any

from pluginsdk import hookimpl

from .rules import describe as _describe
from .rules import find_high_entropy

__version__ = "1.0.0"


@hookimpl
def scan_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Report high-entropy tokens in a batch of lines (``line`` indexes the batch)."""
    return [
        {
            "line": i,
            "start": start,
            "end": end,
            "rule": "high-entropy",
            "severity": "medium",
            "entropy": entropy,
        }
        for i, line in enumerate(lines)
        for start, end, entropy in find_high_entropy(line)
    ]


@hookimpl
def describe() -> str:
    """What this plugin looks for."""
    return _describe()
