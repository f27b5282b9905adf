"""The reference host (leakscan) and its plugins, installed as wheels into a real venv and run end to end."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from .plugin_env import REFERENCE, Env, leakscan_env, wasm_unavailable

PLUGINS = {
    "leakscan-secrets": ("secrets", "leakscan_secrets", "inprocess"),
    "leakscan-pii": ("pii", "leakscan_pii", "process"),
    "leakscan-entropy": ("entropy", "leakscan_entropy", "wasm"),
    "leakscan-legacy": ("legacy", "leakscan_legacy", "inprocess"),
    "leakscan-rogue": ("rogue", "leakscan_rogue", "inprocess"),
}
DEMO = REFERENCE / "demo"
# The demo's result, and the directory of the logs it generated.
Demo = tuple[subprocess.CompletedProcess[str], Path]


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """The shared venv with pluginsdk, the leakscan host and its reference plugins."""
    return leakscan_env(tmp_path_factory)


def run_suite(env: Env, project: Path, tmp_path: Path) -> tuple[int, int, int]:
    """Run a project's own tests in ``env``: ``(passed, failed, skipped)`` from the JUnit report."""
    report = tmp_path / "report.xml"
    result = env.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *env.pytest_plugin_args(),
        f"--junitxml={report}",
        f"--rootdir={project}",
        str(project / "tests"),
        cwd=project,
    )
    assert report.exists(), result.stdout + result.stderr
    passed = failed = skipped = 0
    for case in ET.parse(report).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            skipped += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        else:
            passed += 1
    assert 0 == failed, result.stdout
    return passed, failed, skipped


@pytest.mark.slow
class TestReferenceSuites:
    def test_host_suite_runs_plugins_end_to_end(self, env: Env, tmp_path: Path) -> None:
        """leakscan's own tests, CLI end-to-end tests included, pass against the installed plugins.

        Without leakscan-rogue: the host's tests count on exactly the four plugins
        they were written for (the discovery table's rows, the scanner's stats).
        """
        env.pip_uninstall("leakscan-rogue")
        try:
            passed, failed, skipped = run_suite(env, REFERENCE / "leakscan", tmp_path)
        finally:
            env.pip_install(str(REFERENCE / "leakscan-rogue"))
        assert (0, 0, True) == (failed, skipped, passed > 30)

    @pytest.mark.parametrize("dist", sorted(PLUGINS))
    def test_plugin_suite_passes_at_every_level(self, dist: str, env: Env, tmp_path: Path) -> None:
        """Each plugin's own tests pass; only the wasm level is skipped, and only where it is unavailable."""
        passed, failed, skipped = run_suite(env, REFERENCE / dist, tmp_path)
        # Where wasm runs, nothing may be skipped; where it doesn't, its tests are.
        expected_skips = skipped if wasm_unavailable() else 0
        assert (0, expected_skips, True) == (failed, skipped, passed > 0)


@pytest.mark.slow
class TestReferenceDistributions:
    @pytest.mark.parametrize("dist", sorted(PLUGINS))
    def test_wheel_ships_the_manifest(self, dist: str, env: Env) -> None:
        """The installed wheel contains the package's pluginsdk.toml next to its code."""
        _, module, _ = PLUGINS[dist]
        probe = env.run(
            "python",
            "-c",
            f"from importlib.metadata import files; print(sorted(str(f) for f in files({dist!r}) "
            f"if str(f).startswith({module!r} + '/')))",
        )
        assert f"'{module}/pluginsdk.toml'" in probe.stdout, probe.stdout + probe.stderr

    @pytest.mark.parametrize("dist", ["leakscan-secrets", "leakscan-pii", "leakscan-entropy", "leakscan-rogue"])
    def test_pluginsdk_check_accepts_plugin(self, dist: str, env: Env) -> None:
        """``pluginsdk check`` finds manifest, code and spec in agreement."""
        result = env.run("pluginsdk", "check", str(REFERENCE / dist))
        assert (0, True) == (result.returncode, "plugin project is valid" in result.stdout), (
            result.stdout + result.stderr
        )

    def test_pluginsdk_check_flags_the_incompatible_plugin(self, env: Env) -> None:
        """``pluginsdk check`` refuses the legacy plugin: it requires a spec version the host does not provide."""
        result = env.run("pluginsdk", "check", str(REFERENCE / "leakscan-legacy"))
        output = result.stdout + result.stderr
        assert (True, True) == (result.returncode != 0, "requires leakscan<3,>=2" in output), output

    def test_discovery_reports_each_level_and_the_incompatible_plugin(self, env: Env) -> None:
        """``leakscan plugins`` shows every reference plugin at its level; legacy is incompatible, not loaded."""
        result = env.run("leakscan", "plugins")
        rows = {cells[0]: (cells[3], cells[4]) for cells in map(str.split, result.stdout.splitlines()[1:6])}
        entropy = "unavailable" if wasm_unavailable() else "available"
        expected = {
            "entropy": ("wasm", entropy),
            "legacy": ("inprocess", "incompatible"),
            "pii": ("process", "available"),
            "rogue": ("inprocess", "available"),
            "secrets": ("inprocess", "available"),
        }
        assert expected == rows


FAULTY = """
import os

from pluginsdk import hookimpl


@hookimpl
def scan_lines(lines):
    if any("boom" in line for line in lines):
        raise RuntimeError("rule exploded")
    if any("crash" in line for line in lines):
        os._exit(3)  # takes its worker process down
    return []
"""


@pytest.fixture
def faulty(env: Env, tmp_path: Path) -> Iterator[str]:
    """A third-party rule that raises on "boom" and kills its process on "crash", installed for one test."""
    project = tmp_path / "leakscan-faulty"
    package = project / "leakscan_faulty"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(FAULTY))
    (package / "pluginsdk.toml").write_text(
        '[plugin]\nrequires = "leakscan>=1,<2"\nisolation = "process"\nhooks = ["scan_lines"]\n'
    )
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        '[project]\nname = "leakscan-faulty"\nversion = "0.1"\n'
        '[project.entry-points."leakscan.plugins"]\nfaulty = "leakscan_faulty"\n'
    )
    env.pip_install(str(project))
    try:
        yield "faulty"
    finally:
        env.pip_uninstall("leakscan-faulty")


@pytest.mark.slow
class TestFaultyPlugin:
    @pytest.mark.parametrize(
        ("trigger", "error"),
        [("boom", "raised RuntimeError: rule exploded"), ("crash", "worker crashed")],
        ids=["raises", "kills-its-worker"],
    )
    def test_failure_is_reported_and_other_plugins_still_scan(
        self, trigger: str, error: str, faulty: str, env: Env
    ) -> None:
        """A failing process-isolated rule makes the scan incomplete (exit 2), names the error, spares the rest."""
        stdin = f"{trigger}\nkey=AKIAIOSFODNN7EXAMPLE\n"
        text = env.run("leakscan", "scan", "--disable", "entropy", "-", stdin=stdin)
        rows = {line.split()[0]: line for line in text.stdout.splitlines() if line.split()[:1] == [faulty]}
        found = env.run("leakscan", "scan", "--format", "json", "--disable", "entropy", "-", stdin=stdin)
        rules = [json.loads(line)["rule"] for line in found.stdout.splitlines()]
        assert (2, True, ["aws-access-key-id"]) == (text.returncode, error in rows.get(faulty, ""), rules), text.stdout


# What the demo's summary says of leakscan-rogue, under each of its policies (the demo plants one
# misbehaviour in each of batches 2 to 5 of its generated log: crash, hang, read two host files).
ROGUE_IN_PROCESSES = "rogue: crashed on batch 2, timed out on batch 3; 2 incidents (crashed, timeout)"
ROGUE_IN_SANDBOX = (
    "rogue: crashed on batch 2, timed out on batch 3, raised FileNotFoundError on batches 4, 5; "
    "2 incidents (crashed, timeout)"
)


@pytest.fixture(scope="module")
def demo(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """``run_demo.py`` run once in the reference venv: its result, and the directory of the logs it generated."""
    logs = tmp_path_factory.mktemp("demo-logs")
    return env.run("python", str(DEMO / "run_demo.py"), "--log-dir", str(logs), cwd=DEMO, timeout=300), logs


def scan_text(env: Env, logs: Path, *args: str) -> tuple[int, list[tuple[str, ...]], str]:
    """``leakscan scan ARGS rogue.log`` in text form: exit status, findings (where, severity, rule, plugin), output."""
    result = env.run("leakscan", "scan", *args, "rogue.log", cwd=logs)
    found = [tuple(line.split()[:4]) for line in result.stdout.splitlines() if line.startswith("rogue.log:")]
    return result.returncode, found, result.stdout + result.stderr


def summary_of(demo_output: str, step: str) -> str:
    """The output of the demo's step ``step`` (its heading's number)."""
    match = re.search(rf"^=== {step}\. .*?(?=^=== )", demo_output, flags=re.S | re.M)
    assert match is not None, demo_output
    return match.group()


@pytest.mark.slow
@pytest.mark.skipif(wasm_unavailable() is not None, reason="the demo runs the rogue plugin in the sandbox too")
class TestDemo:
    def test_demo_succeeds_because_the_rogue_plugin_is_contained(self, demo: Demo) -> None:
        """The demo exits 0, every check it makes holding, and says what happened to rogue at each level."""
        result, _ = demo
        out = result.stdout
        in_processes, in_sandbox = summary_of(out, "6"), summary_of(out, "7")
        assert (0, True, True, True, 0, 10) == (
            result.returncode,
            ROGUE_IN_PROCESSES + "; other plugins unaffected" in in_processes,
            ROGUE_IN_SANDBOX + "; other plugins unaffected" in in_sandbox,
            "containment works" in out,
            out.count("[FAILED]"),
            out.count("[ok]"),
        ), out + result.stderr

    def test_throughput_only_where_it_means_something(self, demo: Demo) -> None:
        """The 27-line sample gets no lines/s figure (its time is start-up); the 20,000-line log does."""
        result, _ = demo
        output = result.stdout + result.stderr  # with --redact (step 3), the summary goes to stderr
        totals = [line for line in output.splitlines() if re.match(r"\d+ findings? \(", line)]
        small = [t for t in totals if " in 27 lines, " in t]
        large = [t for t in totals if " in 20,000 lines, " in t]
        assert (True, True, True) == (
            len(small) == 2 and all(t.endswith("(too few lines to measure lines/s)") for t in small),
            len(large) == 3,  # step 4, and the rogue scans of steps 6 and 7
            all(re.search(r"\(\d[\d,]* lines/s\)$", t) for t in large),
        ), "\n".join(totals)

    @pytest.mark.parametrize(
        ("policy", "account"),
        [("policy.toml", ROGUE_IN_PROCESSES), ("policy-sandbox.toml", ROGUE_IN_SANDBOX)],
        ids=["process", "wasm"],
    )
    def test_cli_contains_rogue_and_the_others_find_everything(
        self, policy: str, account: str, env: Env, demo: Demo
    ) -> None:
        """Checked apart from the demo, with the CLI on the demo's log: the scan is incomplete (exit 2), its
        summary names rogue's failures and incidents, and every other plugin's findings equal a scan without rogue."""
        _, logs = demo
        baseline_status, baseline, _ = scan_text(env, logs, "--policy", str(DEMO / "policy.toml"), "--disable", "rogue")
        status, found, out = scan_text(env, logs, "--policy", str(DEMO / policy))
        others = [f for f in found if f[3] != "rogue"]
        assert (1, 2, True, True, baseline) == (
            baseline_status,
            status,
            len(baseline) > 50,
            f"  {account}; other plugins unaffected" in out,
            others,
        ), out
