"""``pluginsdk doctor``, ``pluginsdk wasm warm``'s progress and outcome, and the progress display itself."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pluginsdk._progress import Progress

from .plugin_env import wasm_unavailable
from .plugin_factory import install_plugin
from .test_cli import HIDE_WASMTIME, UPPER, cli_env, run_cli


def doctor(cache: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("doctor", "--json", *args, PLUGINSDK_CACHE_DIR=str(cache))
    return result.returncode, json.loads(result.stdout)


def findings(report: dict[str, Any], section: str) -> dict[str, tuple[str, str]]:
    return {f["name"]: (f["state"], f["detail"]) for f in report["findings"] if f["section"].startswith(section)}


class TestDoctor:
    def test_installation_and_caches(self, tmp_path: Path) -> None:
        """What is installed, every isolation level, and what the caches hold, read from a real cache directory."""
        from importlib.metadata import version

        (tmp_path / "discovery").mkdir()
        (tmp_path / "discovery" / "0000abcd.marshal").write_bytes(b"x" * 3000)
        (tmp_path / "wasm" / "lib-0123").mkdir(parents=True)
        status, report = doctor(tmp_path)
        assert (0, True) == (status, report["ok"])
        installed = findings(report, "installed")
        assert installed["pluginsdk"][1].startswith(version("pluginsdk-isolated"))
        assert ("ok", version("pluggy")) == installed["pluggy"]
        assert installed["Python"][1].startswith(".".join(map(str, sys.version_info[:3])))
        levels = findings(report, "isolation levels")
        assert ["inprocess", "process", "wasm"] == list(levels)
        assert ("ok", "available") == levels["inprocess"]
        caches = findings(report, "caches")
        assert f"{tmp_path / 'discovery'}: 1 index files, 0.0 MiB" == caches["discovery index"][1]
        assert caches["sandbox cache"][1].startswith(f"{tmp_path / 'wasm'}: 0 compiled interpreters, 1 library sets")
        if wasm_unavailable() is None:  # a fresh cache: nothing compiled yet, and doctor says what to run
            assert "warning" == caches["sandbox interpreter"][0]
            assert "pluginsdk wasm warm" in caches["sandbox interpreter"][1]

    def test_plugins_of_a_group(self, site: Path, tmp_path: Path) -> None:
        """Given a group, each plugin's status; a failed plugin is something a host needs broken: exit 1."""
        install_plugin(site, "upper", UPPER, isolation="process")
        status, report = doctor(tmp_path, "textkit.plugins", "--path", str(site))
        assert (0, {"upper": "ok", "compatibility": "note"}) == (
            status,
            {k: v[0] for k, v in findings(report, "plugins").items()},
        )
        install_plugin(site, "broken", UPPER, manifest="")
        status, report = doctor(tmp_path, "textkit.plugins", "--path", str(site))
        plugins = findings(report, "plugins")
        assert (1, False, "error") == (status, report["ok"], plugins["broken"][0])
        assert plugins["broken"][1].startswith("failed (textkit-broken 1.0, ?): no pluginsdk.toml in package")

    def test_spec_judges_versions(self, site: Path, tmp_path: Path) -> None:
        """With --spec, an incompatible plugin is a warning (a host skips it), not an error."""
        install_plugin(site, "new", UPPER, manifest='[plugin]\nrequires = "textkit>=2"\nhooks = ["transform"]\n')
        status, report = doctor(tmp_path, "--spec", "textkit:SPEC", "--path", str(site))
        plugins = findings(report, "plugins in 'textkit.plugins' (spec textkit 1.1)")
        assert (0, "warning") == (status, plugins["new"][0])
        assert "incompatible" in plugins["new"][1] and "compatibility" not in plugins

    def test_sandboxed_plugin_without_wasmtime(self, site: Path, tmp_path: Path) -> None:
        """Where wasmtime cannot be imported: the wasm level says why, and a wasm plugin of the group is an error."""
        install_plugin(site, "boxed", UPPER, isolation="wasm")
        script = HIDE_WASMTIME + (
            "from pluginsdk.cli import main\n"
            f"sys.exit(main(['doctor', 'textkit.plugins', '--path', {str(site)!r}, '--json']))\n"
        )
        env = cli_env(PLUGINSDK_CACHE_DIR=str(tmp_path))
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
        report = json.loads(result.stdout)
        assert 1 == result.returncode
        assert "warning" == findings(report, "isolation levels")["wasm"][0]
        assert "wasmtime is not installed" in findings(report, "isolation levels")["wasm"][1]
        assert "error" == findings(report, "plugins")["boxed"][0]

    def test_text_report_and_group_hint(self, site: Path, tmp_path: Path) -> None:
        """The text report has its sections and a count; a misspelled group gets the installed one."""
        install_plugin(site, "upper", UPPER)
        result = run_cli("doctor", "textkit", "--path", str(site), PLUGINSDK_CACHE_DIR=str(tmp_path))
        assert 0 == result.returncode, result.stderr
        lines = result.stdout.splitlines()
        assert ["installed:", "isolation levels:", "caches:", "plugins in 'textkit':"] == [
            x for x in lines if x.endswith(":") and not x.startswith(" ")
        ]
        assert "  [warning] textkit: no plugins; did you mean 'textkit.plugins'?" in lines
        assert lines[-1].startswith("0 error(s), ")


class TestProgress:
    def test_terminal_gets_a_live_line_erased_at_the_end(self) -> None:
        """On a terminal, the step and its seconds are redrawn in place, then erased."""
        master, slave = os.openpty()
        try:
            with open(slave, "w", closefd=False) as stream, Progress("working", stream=stream, delay=0) as p:
                time.sleep(0.35)
                p.step("still working")
                time.sleep(0.25)
            out = b""
            while select.select([master], [], [], 0.2)[0]:
                out += os.read(master, 65536)
        finally:
            os.close(master)
            os.close(slave)
        text = out.decode()
        assert "\r\x1b[2K| working... 0." in text or "\r\x1b[2K/ working... 0." in text
        assert "still working... 0." in text
        assert text.endswith("\r\x1b[2K")
        assert "\n" not in text

    def test_log_gets_one_line_per_long_step_and_nothing_for_quick_work(self, tmp_path: Path) -> None:
        """Elsewhere, each step that lasts past the delay is one log line; quick work prints nothing."""
        log = tmp_path / "log"
        with open(log, "w") as stream:
            with Progress("quick", stream=stream, delay=0.3):
                pass
            with Progress("slow", stream=stream, delay=0.1, interval=0.05) as p:
                time.sleep(0.3)
                p.step("slower")
                time.sleep(0.3)
        assert "pluginsdk: slow...\npluginsdk: slower...\n" == log.read_text()


@pytest.mark.slow
@pytest.mark.wasm
def test_wasm_warm_reports_work_then_the_cache(tmp_path: Path) -> None:
    """A cold ``wasm warm`` shows progress on a terminal and says what it built; the next says it used the cache."""
    why = wasm_unavailable()
    if why is not None:
        pytest.skip(why)
    env = cli_env(PLUGINSDK_CACHE_DIR=str(tmp_path))
    master, slave = os.openpty()
    try:
        cmd = [sys.executable, "-m", "pluginsdk", "wasm", "warm", "--json"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env=env)
        out = b""
        while proc.poll() is None or select.select([master], [], [], 0.2)[0]:
            if select.select([master], [], [], 0.2)[0]:
                out += os.read(master, 65536)
        stdout = proc.stdout.read() if proc.stdout else b""
    finally:
        os.close(master)
        os.close(slave)
    cold = json.loads(stdout)
    assert (0, False) == (proc.returncode, cold["cached"])
    assert "compiled the interpreter" in cold["built"]
    assert "compiling the sandbox interpreter" in out.decode() and "\r" in out.decode()
    warm = run_cli("wasm", "warm", PLUGINSDK_CACHE_DIR=str(tmp_path))
    assert 0 == warm.returncode, warm.stderr
    assert warm.stdout.startswith("the sandbox cache was already warm (checked in 0.")
    assert "" == warm.stderr
