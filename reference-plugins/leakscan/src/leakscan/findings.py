"""Findings: checking what plugins return, and redacting what they found."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SEVERITIES: tuple[str, ...] = ("low", "medium", "high")
_CORE_KEYS = frozenset({"line", "start", "end", "rule", "severity"})


@dataclass(frozen=True, order=True)
class Finding:
    """One match, located in the whole input.

    Attributes:
        line: Line number in the input, from 1.
        start: Offset of the first character in the line, from 0.
        end: Offset just past the last character.
        rule: The plugin's rule identifier.
        severity: ``low``, ``medium`` or ``high``.
        plugin: Name of the plugin that reported it.
        extra: Other plain-data keys the plugin added.
    """

    line: int
    start: int
    end: int
    rule: str
    severity: str
    plugin: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self, text: str | None = None) -> dict[str, Any]:
        """The finding as plain data; ``text`` (the line) adds a masked preview."""
        data: dict[str, Any] = {
            "line": self.line,
            "column": self.start + 1,
            "end_column": self.end + 1,
            "rule": self.rule,
            "severity": self.severity,
            "plugin": self.plugin,
        }
        if text is not None:
            data["preview"] = mask(text[self.start : self.end])
        data.update(self.extra)
        return data


def accept(raw: object, lines: Sequence[str], first_line: int, plugin: str) -> tuple[list[Finding], int]:
    """Check a plugin's result for one batch; return its findings and how many entries were invalid.

    Plugin output is untrusted input: anything not shaped like the spec says
    (wrong types, offsets outside the line, unknown severity) is dropped and
    counted, so one sloppy plugin cannot crash the report or redact the wrong text.
    """
    if not isinstance(raw, list):
        return [], 1
    out: list[Finding] = []
    bad = 0
    for item in raw:
        try:
            index, start, end = item["line"], item["start"], item["end"]
            rule, severity = item["rule"], item["severity"]
            valid = (
                all(type(v) is int for v in (index, start, end))
                and 0 <= index < len(lines)
                and 0 <= start < end <= len(lines[index])
                and isinstance(rule, str)
                and bool(rule)
                and severity in SEVERITIES
            )
        except (TypeError, KeyError):
            valid = False
        if not valid:
            bad += 1
            continue
        extra = {k: v for k, v in item.items() if k not in _CORE_KEYS and isinstance(k, str)}
        out.append(Finding(first_line + index, start, end, rule, severity, plugin, extra))
    return out, bad


def mask(secret: str) -> str:
    """A preview that identifies a match without disclosing it: ``AKIA************MPLE``."""
    if len(secret) <= 8:
        return "*" * len(secret)
    keep = min(4, len(secret) // 5)
    # Capped, so a long token (a JWT) doesn't fill the terminal with stars.
    return secret[:keep] + "*" * min(16, len(secret) - 2 * keep) + secret[-keep:]


def redact(line: str, findings: Sequence[Finding]) -> str:
    """``line`` with every finding's span replaced by ``[REDACTED:rule]``.

    Overlapping spans (two plugins flagging the same token) are merged and
    named after the rule of the span that starts first.
    """
    spans = sorted((f.start, -f.end, f.rule) for f in findings)
    merged: list[list[Any]] = []
    for start, neg_end, rule in spans:
        end = -neg_end
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, rule])
    out = []
    pos = 0
    for start, end, rule in merged:
        out.append(line[pos:start])
        out.append(f"[REDACTED:{rule}]")
        pos = end
    out.append(line[pos:])
    return "".join(out)
