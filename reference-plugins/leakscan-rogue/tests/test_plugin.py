"""Tests for the rogue plugin.

``plugin_host`` and ``isolation`` come from ``pluginsdk.testing`` (a pytest
plugin installed with pluginsdk): each test that uses them runs once per
isolation level, against this plugin as installed, so passing proves the
plugin behaves the same in-process, in a worker process and in the sandbox.
Install the project first: ``pip install -e .[test]``.
"""

from __future__ import annotations

from pluginsdk import Host

import leakscan_rogue

PLUGIN = "rogue"
LINES = [
    "nothing to see here",
    "Status: CONFIDENTIAL - internal only",
    "",
]
EXPECTED = [
    {"line": 1, "start": 8, "end": 20, "rule": "keyword", "severity": "low"},
    {"line": 1, "start": 23, "end": 36, "rule": "keyword", "severity": "low"},
]


class TestFindKeywords:
    def test_finds_each_keyword_case_insensitively(self) -> None:
        """Every keyword is found wherever it is, whatever its case."""
        assert [(8, 20), (23, 36)] == leakscan_rogue.find_keywords(LINES[1])

    def test_clean_line_has_no_findings(self) -> None:
        """A line without keywords yields nothing."""
        assert [] == leakscan_rogue.find_keywords(LINES[0])


class TestPackage:
    def test_imports_without_a_host(self) -> None:
        """The package imports on its own (as it will in a worker or the sandbox)."""
        assert "0.1.0" == leakscan_rogue.__version__


class TestPluginInHost:
    def test_host_discovers_plugin_at_requested_level(self, plugin_host: Host, isolation: str) -> None:
        """The host finds the installed plugin and runs it at the level under test."""
        info = {p.name: p for p in plugin_host.plugins()}[PLUGIN]
        assert (isolation, ("scan_lines",)) == (info.isolation, tuple(info.hooks))

    def test_hook_result_is_the_same_at_every_level(self, plugin_host: Host) -> None:
        """Called through the host, the hook returns exactly what the plugin computes."""
        assert EXPECTED == plugin_host.hook.scan_lines.by_plugin(lines=LINES)[PLUGIN]

    def test_batch_of_batches_crosses_once(self, plugin_host: Host) -> None:
        """``map`` sends several batches in one call and returns one result per batch."""
        results = plugin_host.hook.scan_lines.map([{"lines": LINES}, {"lines": ["clean"]}])
        assert [[EXPECTED], [[]]] == results
