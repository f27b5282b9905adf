"""Tests for the legacy plugin: its rule works, but a leakscan 1.x host refuses it."""

from __future__ import annotations

from leakscan_legacy import scan_lines

PLUGIN = "legacy"


class TestScanLines:
    def test_finds_ipv4_addresses(self) -> None:
        """Valid dotted quads are found; out-of-range octets and versions are not."""
        lines = ["from 10.0.12.7 via 192.168.100.200", "v1.2.3.4.5 and 300.1.1.1"]
        expected = [
            {"line": 0, "start": 5, "end": 14, "rule": "ipv4", "severity": "low"},
            {"line": 0, "start": 19, "end": 34, "rule": "ipv4", "severity": "low"},
        ]
        assert expected == scan_lines(lines)


class TestPluginInHost:
    def test_host_reports_it_incompatible(self, host_factory) -> None:
        """A spec 1.x host finds the plugin, marks it incompatible, and explains why."""
        host = host_factory(plugins=())
        info = host.plugin(PLUGIN)
        assert ("incompatible", "requires leakscan<3,>=2, but this host provides leakscan 1.1") == (
            info.status,
            info.reason,
        )

    def test_host_never_calls_it(self, host_factory) -> None:
        """Its hook is not among the implementations the host calls."""
        host = host_factory(plugins=())
        assert PLUGIN not in host.hook.scan_lines.by_plugin(lines=["10.0.0.1"])
