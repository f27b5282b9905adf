"""The leakscan spec: the hooks a leakscan plugin can implement.

Version history:

* 1.0: ``scan_lines``.
* 1.1: ``describe`` (optional; plugins implementing it need ``leakscan>=1.1``).
"""

from __future__ import annotations

from typing import Any

from pluginsdk import HookSpec, hookspec


class ScanHooks:
    """Hooks of leakscan plugins.  Arguments and results are plain data."""

    @hookspec
    def scan_lines(self, lines: list[str]) -> list[dict[str, Any]]:  # type: ignore[empty-body]
        """Find sensitive data in a batch of lines (no line endings).

        Return one dict per finding::

            {"line": 3,          # index of the line within ``lines``
             "start": 10,        # character offsets of the match in that line
             "end": 30,
             "rule": "aws-access-key-id",
             "severity": "high"} # "low", "medium" or "high"

        Extra keys with plain values are kept and shown in JSON output.  The
        host sends many lines per call: a plugin never sees one line at a time.
        """

    @hookspec(firstresult=True, since="1.1")
    def describe(self) -> str | None:
        """One line saying what the plugin detects."""


SPEC = HookSpec("leakscan", version="1.1", hooks=ScanHooks)
