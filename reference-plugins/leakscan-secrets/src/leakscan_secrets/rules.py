"""Detectors for credentials: cloud keys, API tokens, private keys, passwords.

Pure functions over strings, so they are tested without a host.
"""

from __future__ import annotations

import re

# (rule id, severity, pattern).  When a pattern has a group named "secret",
# only that group is reported (e.g. the value of ``password=...``, not the key).
RULES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("aws-access-key-id", "high", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b")),
    (
        "aws-secret-access-key",
        "high",
        re.compile(r"(?i)aws_?secret_?access_?key\s*[=:]\s*[\"']?(?P<secret>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"),
    ),
    ("github-token", "high", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})\b")),
    ("slack-token", "high", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,72}\b")),
    ("stripe-key", "high", re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,99}\b")),
    ("google-api-key", "high", re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])")),
    ("private-key", "high", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    (
        "jwt",
        "medium",
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ),
    (
        "password-assignment",
        "medium",
        re.compile(
            r"(?i)(?<![a-z0-9])(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token)"
            r"\s*[=:]\s*[\"']?(?P<secret>[^\s\"',;&]{6,})"
        ),
    ),
    (
        "url-credentials",
        "high",
        re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:(?P<secret>[^\s:/@]{3,})@[^\s/]+"),
    ),
)

# Values that name a secret without being one: config templates, masks.
_PLACEHOLDER = re.compile(
    r"(?i)^(?:\*+|x+|<[^>]*>|\$\{[^}]*\}|\$[A-Z_]+|%\([^)]*\)s|\{\{.*\}\}|changeme|redacted|\[redacted[^\]]*\]|none|null|true|false)$"
)


def find_secrets(line: str) -> list[tuple[int, int, str, str]]:
    """``(start, end, rule, severity)`` for every credential in ``line``, by position.

    A span found by a specific rule is not reported again by the generic
    ``password-assignment`` rule.
    """
    found: list[tuple[int, int, str, str]] = []
    for rule, severity, pattern in RULES:
        for m in pattern.finditer(line):
            group = "secret" if "secret" in pattern.groupindex else 0
            start, end = m.span(group)
            if group and _PLACEHOLDER.match(m.group(group)):
                continue
            if rule == "password-assignment" and any(s < end and start < e for s, e, _, _ in found):
                continue
            found.append((start, end, rule, severity))
    return sorted(found)


def describe() -> str:
    """One line saying what this plugin detects."""
    return "credentials: " + ", ".join(rule for rule, _, _ in RULES)
