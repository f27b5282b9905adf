"""Tests for the rogue plugin: its harmless rule at every level, its misbehaviour where it is contained.

``plugin_host``, ``host_factory`` and ``isolation`` come from ``pluginsdk.testing``.
The misbehaviour is only ever triggered in a worker process or the sandbox:
in-process, a crash would end this test run and a hang would never return.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from leakscan_rogue import CRASH_STATUS, find_webhooks

from pluginsdk import Host, Limits, PluginCrashed, PluginHookError, PluginTimeout, Policy
from pluginsdk.testing import HostFactory, isolation_unavailable

PLUGIN = "rogue"
WEBHOOK = "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx"
LINES = ["nothing to see here", f"notify {WEBHOOK} on deploy", ""]
EXPECTED = [{"line": 1, "start": 7, "end": 7 + len(WEBHOOK), "rule": "slack-webhook", "severity": "high"}]
# The levels that contain it (explicit, not the ``isolation`` fixture: in-process, a crash would
# end this test run and a hang never return, and a test skipped where it could run is no test).
ISOLATED = pytest.mark.parametrize("isolation", ["process", "wasm"])


def isolated_host(host_factory: HostFactory, isolation: str) -> Host:
    """A host running only this plugin at ``isolation``, with a 1 s timeout (skips if the level is unavailable)."""
    why = isolation_unavailable(isolation)
    if why is not None:
        pytest.skip(f"isolation {isolation!r} is unavailable here: {why}")
    policy = Policy(allow={PLUGIN}, plugin_limits={PLUGIN: Limits(timeout=1)})
    return host_factory(isolation, policy=policy)


class TestFindWebhooks:
    def test_finds_the_url(self) -> None:
        """A Slack incoming-webhook URL is found, whole."""
        assert [(7, 7 + len(WEBHOOK))] == find_webhooks(LINES[1])

    @pytest.mark.parametrize("line", ["https://hooks.slack.com/services/", "https://example.com/services/T0123ABCD"])
    def test_other_urls_are_not(self, line: str) -> None:
        """An incomplete webhook URL or another host's is not flagged."""
        assert [] == find_webhooks(line)


class TestPluginInHost:
    def test_rule_is_the_same_at_every_level(self, plugin_host: Host) -> None:
        """Without markers, the plugin is an ordinary rule, with the same result at every level."""
        assert EXPECTED == plugin_host.hook.scan_lines.by_plugin(lines=LINES)[PLUGIN]

    def test_describe_says_what_it_does(self, plugin_host: Host) -> None:
        """``describe`` names the rule and admits the markers, at every level."""
        text = plugin_host.hook.describe.by_plugin()[PLUGIN]
        assert (True, True) == (text.startswith("Slack webhook URLs"), "rogue:crash" in text)

    def test_asks_to_run_in_process(self, host_factory: HostFactory) -> None:
        """Its manifest asks for the host's own process: only a host's policy isolates it."""
        info = host_factory().plugin(PLUGIN)
        assert ("inprocess", "inprocess") == (info.requested_isolation, info.isolation)


@ISOLATED
class TestMisbehaviourIsContained:
    def test_crash_replaces_the_worker(self, host_factory: HostFactory, isolation: str) -> None:
        """``rogue:crash`` ends its worker: the call fails with PluginCrashed, one incident, the next call works."""
        host = isolated_host(host_factory, isolation)
        crashed = host.hook.scan_lines.results(lines=["x", "rogue:crash"])[0].error
        after = host.hook.scan_lines.by_plugin(lines=LINES)[PLUGIN]
        kinds = [i.kind for i in host.plugin(PLUGIN).incidents]
        assert (True, True, EXPECTED, ["crashed"]) == (
            isinstance(crashed, PluginCrashed),
            f"exit code {CRASH_STATUS}" in str(crashed),
            after,
            kinds,
        )

    def test_hang_times_out(self, host_factory: HostFactory, isolation: str) -> None:
        """``rogue:hang`` never returns: cut off at the 1 s timeout, one incident, the next call works."""
        host = isolated_host(host_factory, isolation)
        host.hook.scan_lines(lines=["warm-up"])  # starting a sandbox is not the hang's time
        hung = host.hook.scan_lines.results(lines=["rogue:hang"])[0]
        after = host.hook.scan_lines.by_plugin(lines=LINES)[PLUGIN]
        kinds = [i.kind for i in host.plugin(PLUGIN).incidents]
        assert (True, True, EXPECTED, ["timeout"]) == (
            isinstance(hung.error, PluginTimeout),
            1 <= hung.seconds < 10,
            after,
            kinds,
        )


class TestReadingHostFiles:
    def test_a_worker_process_can_read_them(self, host_factory: HostFactory, tmp_path: Path) -> None:
        """A worker runs as the host's user: the read succeeds (what the process level does not protect)."""
        secret = tmp_path / "host.toml"
        secret.write_text("token = 'host secret'\n")
        host = isolated_host(host_factory, "process")
        found = host.hook.scan_lines.by_plugin(lines=[f"rogue:read {secret}"])[PLUGIN]
        assert [("host-file-read", secret.stat().st_size)] == [(f["rule"], f["bytes"]) for f in found]

    def test_the_sandbox_refuses(self, host_factory: HostFactory, tmp_path: Path) -> None:
        """In the sandbox the host's files are not there: the plugin's open fails, and that error reaches the host."""
        secret = tmp_path / "host.toml"
        secret.write_text("token = 'host secret'\n")
        host = isolated_host(host_factory, "wasm")
        errors = [host.hook.scan_lines.results(lines=[f"rogue:read {p}"])[0].error for p in (secret, "/etc/passwd")]
        assert [("FileNotFoundError", True)] * 2 == [
            (e.exc_type, str(p) in e.exc_message) if isinstance(e, PluginHookError) else (repr(e), False)
            for e, p in zip(errors, (secret, "/etc/passwd"))
        ]
        assert [] == list(host.plugin(PLUGIN).incidents)  # a refused open is the plugin's error, not an incident
