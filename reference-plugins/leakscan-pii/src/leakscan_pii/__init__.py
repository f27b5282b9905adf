"""leakscan rules for personal data: e-mail, phone numbers, Luhn-checked card numbers, SSNs.

Runs in a pool of worker processes: the regular expressions are CPU-bound,
and a pathological input can only stall a worker, not the host.
"""

from __future__ import annotations

from typing import Any

from pluginsdk import hookimpl

from .rules import describe as _describe
from .rules import find_pii

__version__ = "1.0.0"


@hookimpl
def scan_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Report personal data in a batch of lines (``line`` indexes the batch)."""
    return [
        {"line": i, "start": start, "end": end, "rule": rule, "severity": severity}
        for i, line in enumerate(lines)
        for start, end, rule, severity in find_pii(line)
    ]


@hookimpl
def describe() -> str:
    """What this plugin looks for."""
    return _describe()
