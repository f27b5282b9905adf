"""Tests for the entropy plugin: its rules alone, then through a host at every isolation level."""

from __future__ import annotations

import pytest
from leakscan_entropy.rules import find_high_entropy, is_high_entropy, shannon_entropy

PLUGIN = "entropy"


class TestShannonEntropy:
    @pytest.mark.parametrize(
        ("text", "bits"),
        [("", 0.0), ("aaaa", 0.0), ("abab", 1.0), ("abcd", 2.0), ("0123456789abcdef", 4.0)],
    )
    def test_bits_per_character(self, text: str, bits: float) -> None:
        """Entropy is log2 of the alphabet size for uniform text, 0 for one repeated character."""
        assert bits == pytest.approx(shannon_entropy(text))


class TestIsHighEntropy:
    @pytest.mark.parametrize(
        "token",
        [
            "yVmihA/2O76UMFxFkM/R5Kjp1vRt+1fj",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ],
    )
    def test_random_keys_and_digests_are_flagged(self, token: str) -> None:
        """Random base64 and long random hex are flagged."""
        assert True is is_high_entropy(token)

    @pytest.mark.parametrize(
        "token",
        [
            "550e8400-e29b-41d4-a716-446655440000",  # UUID: random but not secret
            "HandleTheRequestForUserProfilePage",  # identifier: no digits
            "deadbeefdeadbeefdeadbeefdeadbeef",  # hex, but repetitive
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1B",
        ],
    )
    def test_ids_words_and_repetition_are_not(self, token: str) -> None:
        """UUIDs, identifiers and low-entropy strings are not flagged."""
        assert False is is_high_entropy(token)


class TestFindHighEntropy:
    def test_reports_span_and_entropy(self) -> None:
        """Each flagged token comes with its span and its entropy rounded to 2 decimals."""
        line = "session yVmihA/2O76UMFxFkM/R5Kjp1vRt+1fj stored"
        assert [(8, 40, 4.62)] == find_high_entropy(line)

    def test_url_paths_are_not_tokens(self) -> None:
        """A URL path is not taken as one long token."""
        assert [] == find_high_entropy("GET /api/v1/users/HandleTheRequest2ForUserProfilePage 200")


class TestPluginInHost:
    def test_batch_findings_carry_entropy(self, plugin_host) -> None:
        """Through the host, findings keep the plugin's extra ``entropy`` field."""
        lines = ["nothing here", "key yVmihA/2O76UMFxFkM/R5Kjp1vRt+1fj"]
        expected = [{"line": 1, "start": 4, "end": 36, "rule": "high-entropy", "severity": "medium", "entropy": 4.62}]
        assert expected == plugin_host.hook.scan_lines.by_plugin(lines=lines)[PLUGIN]
