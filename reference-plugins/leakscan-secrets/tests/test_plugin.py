"""Tests for the secrets plugin: its rules alone, then through a host at every isolation level."""

from __future__ import annotations

import pytest
from leakscan_secrets.rules import find_secrets

PLUGIN = "secrets"


def rules_in(line: str) -> list[tuple[str, str]]:
    """``(rule, matched text)`` for each finding in ``line``."""
    return [(rule, line[s:e]) for s, e, rule, _ in find_secrets(line)]


class TestFindSecrets:
    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("key=AKIAIOSFODNN7EXAMPLE", [("aws-access-key-id", "AKIAIOSFODNN7EXAMPLE")]),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                [("aws-secret-access-key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")],
            ),
            (
                "t ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d",
                [("github-token", "ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d")],
            ),
            ("xoxb-2718281828-3141592653-KLzdocJ2", [("slack-token", "xoxb-2718281828-3141592653-KLzdocJ2")]),
            ("sk_test_4eC39HqLyjWDarjtT1zdp7dc", [("stripe-key", "sk_test_4eC39HqLyjWDarjtT1zdp7dc")]),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", [("private-key", "-----BEGIN OPENSSH PRIVATE KEY-----")]),
            ("db_password: Tr0ub4dor!3x", [("password-assignment", "Tr0ub4dor!3x")]),
            ("postgres://app:s3cr3t@db:5432/x", [("url-credentials", "s3cr3t")]),
        ],
    )
    def test_finds_each_kind_of_credential(self, line: str, expected: list[tuple[str, str]]) -> None:
        """Each rule finds its kind of credential and reports exactly its span."""
        assert expected == rules_in(line)

    @pytest.mark.parametrize(
        "line",
        ["password=********", "password=${DB_PASSWORD}", "api_key: <redacted>", "AKIA-not-a-key", "plain text"],
    )
    def test_ignores_placeholders_and_look_alikes(self, line: str) -> None:
        """Masked values, template variables and near misses are not credentials."""
        assert [] == rules_in(line)

    def test_generic_rule_defers_to_specific_one(self) -> None:
        """A token the specific rule found is not reported again as a password assignment."""
        line = "token=ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d"
        assert ["github-token"] == [rule for rule, _ in rules_in(line)]


class TestPluginInHost:
    def test_batch_findings_index_lines_of_the_batch(self, plugin_host) -> None:
        """Through the host, each finding names its line's index within the batch."""
        lines = ["nothing", "id AKIAIOSFODNN7EXAMPLE"]
        expected = [{"line": 1, "start": 3, "end": 23, "rule": "aws-access-key-id", "severity": "high"}]
        assert expected == plugin_host.hook.scan_lines.by_plugin(lines=lines)[PLUGIN]

    def test_describe_names_the_rules(self, plugin_host) -> None:
        """``describe`` (spec 1.1) lists the rules the plugin applies."""
        assert plugin_host.hook.describe().startswith("credentials: aws-access-key-id")
