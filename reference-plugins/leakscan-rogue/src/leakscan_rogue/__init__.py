"Untrusted community rule (a demonstration of misbehaviour): Slack webhook URLs; crashes, hangs or reads host files on marker lines."

# The host imports this module only when one of its hooks is first called, and
# may do so in-process, in a worker process or inside a WebAssembly sandbox: keep
# it pure Python, keep hook arguments and results plain data (str, int, float,
# bool, None, list, dict), and don't rely on global state shared between calls.

from __future__ import annotations

from typing import Any

from pluginsdk import hookimpl

__version__ = "0.1.0"

# Phrases that mark a line as not for sharing.  Edit these, or replace
# find_keywords() with your own rule.
KEYWORDS: tuple[str, ...] = ("confidential", "internal only", "do not share")


def find_keywords(line: str) -> list[tuple[int, int]]:
    """Spans ``(start, end)`` of every keyword in ``line``, case-insensitively."""
    lowered = line.lower()
    spans: list[tuple[int, int]] = []
    for word in KEYWORDS:
        start = lowered.find(word)
        while start != -1:
            spans.append((start, start + len(word)))
            start = lowered.find(word, start + len(word))
    return sorted(spans)


@hookimpl
def scan_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Report each keyword found in a batch of lines.

    The host sends many lines per call; ``line`` in a finding is the index
    of the line within this batch.
    """
    return [
        {"line": i, "start": start, "end": end, "rule": "keyword", "severity": "low"}
        for i, line in enumerate(lines)
        for start, end in find_keywords(line)
    ]
