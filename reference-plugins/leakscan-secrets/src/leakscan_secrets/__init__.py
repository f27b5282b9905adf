"""leakscan rules for credentials: cloud keys, API tokens, private keys, passwords.

First-party and fast: runs in-process.
"""

from __future__ import annotations

from typing import Any

from pluginsdk import hookimpl

from .rules import describe as _describe
from .rules import find_secrets

__version__ = "1.0.0"


@hookimpl
def scan_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Report every credential in a batch of lines (``line`` indexes the batch)."""
    return [
        {"line": i, "start": start, "end": end, "rule": rule, "severity": severity}
        for i, line in enumerate(lines)
        for start, end, rule, severity in find_secrets(line)
    ]


@hookimpl
def describe() -> str:
    """What this plugin looks for."""
    return _describe()
