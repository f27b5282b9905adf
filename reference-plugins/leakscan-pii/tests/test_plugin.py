"""Tests for the pii plugin: its rules alone, then through a host at every isolation level."""

from __future__ import annotations

import pytest
from leakscan_pii.rules import card_brand, find_pii, luhn_valid

PLUGIN = "pii"


def rules_in(line: str) -> list[tuple[str, str]]:
    """``(rule, matched text)`` for each finding in ``line``."""
    return [(rule, line[s:e]) for s, e, rule, _ in find_pii(line)]


class TestLuhn:
    @pytest.mark.parametrize("number", ["4111111111111111", "5555555555554444", "378282246310005", "79927398713"])
    def test_accepts_valid_numbers(self, number: str) -> None:
        """Known-valid numbers pass the checksum."""
        assert True is luhn_valid(number)

    @pytest.mark.parametrize("number", ["4111111111111112", "79927398710", "12ab", ""])
    def test_rejects_invalid_numbers(self, number: str) -> None:
        """A wrong check digit or a non-digit fails."""
        assert False is luhn_valid(number)


class TestCardBrand:
    @pytest.mark.parametrize(
        ("number", "brand"),
        [
            ("4111111111111111", "visa"),
            ("5555555555554444", "mastercard"),
            ("2221000000000009", "mastercard"),
            ("378282246310005", "amex"),
            ("6011111111111117", "discover"),
            ("1234567890123452", None),
        ],
    )
    def test_brand_from_prefix_and_length(self, number: str, brand: str | None) -> None:
        """The network follows from the number's prefix and length."""
        assert brand == card_brand(number)


class TestFindPii:
    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("mail jane.doe@example.com now", [("email", "jane.doe@example.com")]),
            ("call +1 415-555-0132", [("phone", "+1 415-555-0132")]),
            ("tel (212) 555-0187.", [("phone", "(212) 555-0187")]),
            ("uk +44 20 7946 0958", [("phone", "+44 20 7946 0958")]),
            ("card 4111 1111 1111 1111 exp", [("credit-card", "4111 1111 1111 1111")]),
            ("card=5555-5555-5555-4444", [("credit-card", "5555-5555-5555-4444")]),
            ("ssn 123-45-6789", [("us-ssn", "123-45-6789")]),
        ],
    )
    def test_finds_each_kind_of_personal_data(self, line: str, expected: list[tuple[str, str]]) -> None:
        """Each rule finds its kind of personal data and reports exactly its span."""
        assert expected == rules_in(line)

    @pytest.mark.parametrize(
        "line",
        [
            "order 4111111111111112",  # fails Luhn
            "invoice 1234567890123452",  # passes Luhn, but no card network uses the prefix
            "client 192.168.100.200 v1.22.333.4444",
            "2026-11-24T08:00:01Z took 12345 ms",
            "postgres://app:pw@db.internal:5432/x",
            "ssn 000-12-3456 and 666-12-3456",
        ],
    )
    def test_ignores_look_alikes(self, line: str) -> None:
        """Numbers that fail the checks, IPs, timestamps and URL credentials are not personal data."""
        assert [] == rules_in(line)


class TestPluginInHost:
    def test_batch_findings_index_lines_of_the_batch(self, plugin_host) -> None:
        """Through the host, each finding names its line's index within the batch."""
        lines = ["card 4111 1111 1111 1111", "nothing"]
        expected = [{"line": 0, "start": 5, "end": 24, "rule": "credit-card", "severity": "high"}]
        assert expected == plugin_host.hook.scan_lines.by_plugin(lines=lines)[PLUGIN]

    def test_many_batches_in_one_crossing(self, plugin_host) -> None:
        """``map`` returns one result per batch, in order."""
        results = plugin_host.hook.scan_lines.map([{"lines": ["a@example.com"]}, {"lines": ["none"]}])
        assert [[[{"line": 0, "start": 0, "end": 13, "rule": "email", "severity": "medium"}]], [[]]] == results
