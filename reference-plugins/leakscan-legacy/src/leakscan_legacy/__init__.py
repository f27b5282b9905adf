"""leakscan rule for IPv4 addresses, written for the leakscan 2 spec.

It requires ``leakscan>=2``, so a host providing spec 1.x reports it as
incompatible and never imports it.
"""

from __future__ import annotations

import re
from typing import Any

from pluginsdk import hookimpl

__version__ = "2.0.0"

IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")


@hookimpl
def scan_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Report every IPv4 address in a batch of lines (``line`` indexes the batch)."""
    return [
        {"line": i, "start": m.start(), "end": m.end(), "rule": "ipv4", "severity": "low"}
        for i, line in enumerate(lines)
        for m in IPV4.finditer(line)
    ]
