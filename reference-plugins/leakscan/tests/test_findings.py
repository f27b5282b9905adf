"""Unit tests for checking plugin results, masking and redaction."""

from __future__ import annotations

import pytest
from leakscan.findings import Finding, accept, mask, redact


def finding(start: int, end: int, rule: str = "r", line: int = 1) -> Finding:
    return Finding(line, start, end, rule, "high", "p")


class TestAccept:
    def test_valid_entries_become_findings_numbered_in_the_input(self) -> None:
        """Batch-relative line indexes become input line numbers, extra keys are kept."""
        raw = [{"line": 1, "start": 0, "end": 2, "rule": "x", "severity": "low", "score": 0.5}]
        found, bad = accept(raw, ["abc", "def"], 11, "plug")
        assert ([Finding(12, 0, 2, "x", "low", "plug")], 0, {"score": 0.5}) == (found, bad, found[0].extra)

    @pytest.mark.parametrize(
        "entry",
        [
            {"line": 5, "start": 0, "end": 1, "rule": "x", "severity": "low"},  # no such line
            {"line": 0, "start": 2, "end": 9, "rule": "x", "severity": "low"},  # past the end of the line
            {"line": 0, "start": 2, "end": 2, "rule": "x", "severity": "low"},  # empty span
            {"line": True, "start": 0, "end": 1, "rule": "x", "severity": "low"},  # bool is not a line
            {"line": 0, "start": 0, "end": 1, "rule": "", "severity": "low"},  # no rule
            {"line": 0, "start": 0, "end": 1, "rule": "x", "severity": "critical"},  # unknown severity
            {"line": 0, "start": 0, "rule": "x", "severity": "low"},  # missing key
            "not a dict",
        ],
    )
    def test_malformed_entries_are_dropped_and_counted(self, entry: object) -> None:
        """Anything not shaped like the spec says is dropped, not trusted."""
        assert ([], 1) == accept([entry], ["abc"], 1, "plug")

    def test_non_list_result_counts_as_one_bad_result(self) -> None:
        """A result that is not a list is rejected whole."""
        assert ([], 1) == accept({"line": 0}, ["abc"], 1, "plug")


class TestMask:
    @pytest.mark.parametrize(
        ("secret", "expected"),
        [
            ("short", "*****"),
            ("AKIAIOSFODNN7EXAMPLE", "AKIA************MPLE"),
            ("0123456789", "01******89"),
            ("eyJ" + "x" * 100 + "end!", "eyJx****************end!"),
        ],
    )
    def test_keeps_only_the_ends(self, secret: str, expected: str) -> None:
        """Only a few characters at each end survive, none for short values."""
        assert expected == mask(secret)


class TestRedact:
    def test_replaces_each_span(self) -> None:
        """Each finding's span is replaced by a marker naming its rule."""
        assert "a [REDACTED:x] b [REDACTED:y]" == redact("a SECRET b KEY", [finding(2, 8, "x"), finding(11, 14, "y")])

    def test_merges_overlapping_spans(self) -> None:
        """Two plugins flagging overlapping text produce one marker, named after the first span."""
        assert "k=[REDACTED:aws]!" == redact("k=AKIAXYZ123!", [finding(2, 12, "aws"), finding(4, 12, "entropy")])

    def test_line_without_findings_is_unchanged(self) -> None:
        """No findings, no change."""
        assert "plain" == redact("plain", [])
