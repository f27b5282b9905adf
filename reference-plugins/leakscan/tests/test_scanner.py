"""Tests for batching input, the scanner over the installed plugins, and the progress bar."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from leakscan.cli import build_parser, make_host
from leakscan.progress import Progress
from leakscan.scanner import Scanner, batches
from leakscan.spec import SPEC

from pluginsdk import Host, Policy

SAMPLE = Path(__file__).resolve().parents[2] / "demo" / "sample.log"


class TestBatches:
    def test_groups_lines_and_keeps_originals(self) -> None:
        """Lines are grouped by size, numbered from 1, stripped for plugins and kept whole for redaction."""
        got = list(batches(io.StringIO("a\nb\r\nc"), size=2))
        assert [(1, ["a", "b"], ["a\n", "b\r\n"], 5), (3, ["c"], ["c"], 6)] == got

    def test_empty_input_has_no_batches(self) -> None:
        """Nothing to scan, nothing to call."""
        assert [] == list(batches(io.StringIO(""), size=10))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's discovery index in a directory of the test's own."""
    monkeypatch.setenv("PLUGINSDK_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.usefixtures("cache")
class TestScanner:
    def test_plugins_at_once_change_nothing_but_speed(self) -> None:
        """Calling the plugins at once finds what calling them in turn does, with the same per-plugin stats."""
        text = SAMPLE.read_text()
        nbatches = -(-len(text.splitlines()) // 3)
        # The in-process and the worker-process plugins: the sandbox's start would only add time here.
        with Host(SPEC, policy=Policy(disabled={"entropy"})) as host:
            serial = Scanner(host, parallel=1).scan(batches(io.StringIO(text), size=3))
            at_once = Scanner(host, parallel=4).scan(batches(io.StringIO(text), size=3))
        assert serial.findings == at_once.findings
        assert {"secrets", "pii"} == {f.plugin for f in at_once.findings}
        for report in (serial, at_once):
            stats = report.stats
            assert {"secrets": nbatches, "pii": nbatches} == {name: s.calls for name, s in stats.items()}
            assert [0, 0] == [s.errors for s in stats.values()]
            assert all(s.seconds > 0 and s.findings > 0 for s in stats.values())
            assert ("inprocess", "process") == (stats["secrets"].isolation, stats["pii"].isolation)

    def test_disable_keeps_the_rest_of_the_policy(self, tmp_path: Path) -> None:
        """``--disable`` adds to the policy file's disabled plugins and keeps its other settings."""
        config = tmp_path / "host.toml"
        config.write_text('[policy]\ndisabled = ["entropy"]\nmin_isolation = "process"\n')
        args = build_parser().parse_args(["scan", "--policy", str(config), "--disable", "legacy"])
        with make_host(args) as host:
            policy = host.policy
        assert (frozenset({"entropy", "legacy"}), "process") == (policy.disabled, policy.min_isolation)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestProgress:
    def test_non_tty_prints_plain_lines_per_tenth(self) -> None:
        """Off a terminal, progress is one plain line per 10%, no carriage returns."""
        out = io.StringIO()
        bar = Progress(100, stream=out, label="f")
        for done in range(0, 101, 5):
            bar.update(done, done)
        bar.finish(100, 100)
        text = out.getvalue()
        assert (11, "\r" in text) == (text.count("\n"), False)

    def test_tty_redraws_in_place(self) -> None:
        """On a terminal, the bar is redrawn on one line and ends with a newline."""
        out = _Tty()
        bar = Progress(100, stream=out, label="f")
        bar.update(50, 50)
        bar.finish(100, 100)
        last = out.getvalue().rsplit("\r", 1)[-1]
        assert (True, 1) == (last.startswith("f [##############################] 100%"), out.getvalue().count("\n"))

    def test_unknown_total_counts_lines(self) -> None:
        """Without a total (stdin), the line count is shown instead of a bar."""
        out = io.StringIO()
        bar = Progress(None, stream=out, label="<stdin>")
        bar.update(0, 10)
        bar.finish(0, 10)
        assert out.getvalue().startswith("<stdin> 10 lines")
