"""End-to-end tests: the ``leakscan`` command with the reference plugins installed.

They run the real CLI in a subprocess, so plugins are discovered from the
installed distributions and run at their own isolation levels: ``secrets``
in-process, ``pii`` in worker processes, ``entropy`` in the WebAssembly
sandbox (where this machine can run it), and ``legacy`` refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from leakscan.cli import PROGRESS_MIN_BYTES

SAMPLE = Path(__file__).resolve().parents[2] / "demo" / "sample.log"

SECRETS = [
    (3, "aws-access-key-id", "secrets"),
    (4, "aws-secret-access-key", "secrets"),
    (5, "url-credentials", "secrets"),
    (14, "github-token", "secrets"),
    (15, "slack-token", "secrets"),
    (16, "stripe-key", "secrets"),
    (17, "jwt", "secrets"),
    (18, "private-key", "secrets"),
    (20, "password-assignment", "secrets"),
]
PII = [
    (7, "email", "pii"),
    (7, "phone", "pii"),
    (8, "credit-card", "pii"),
    (9, "credit-card", "pii"),
    (12, "email", "pii"),
    (12, "phone", "pii"),
    (13, "us-ssn", "pii"),
    (25, "email", "pii"),
    (25, "phone", "pii"),
    (26, "credit-card", "pii"),
]
ENTROPY = [(n, "high-entropy", "entropy") for n in (4, 14, 15, 16, 17, 17, 17, 21, 22)]


def _wasm_reason() -> str | None:
    from pluginsdk.testing import isolation_unavailable

    return isolation_unavailable("wasm")


WASM_REASON = _wasm_reason()
EXPECTED = sorted(SECRETS + PII + ([] if WASM_REASON else ENTROPY))


@pytest.fixture(autouse=True)
def _plugins_installed() -> None:
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="leakscan.plugins")}
    missing = {"secrets", "pii", "entropy", "legacy"} - names
    if missing:
        pytest.fail(f"install the reference plugins first (missing: {', '.join(sorted(missing))})", pytrace=False)


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SDK cache (discovery index, compiled WebAssembly) for the session, apart from the user's."""
    return tmp_path_factory.mktemp("pluginsdk-cache")


def leakscan(*args: str, stdin: str | None = None, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PLUGINSDK_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "leakscan", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def findings(stdout: str) -> list[tuple[int, str, str]]:
    """``(line, rule, plugin)`` of each finding in JSON output, sorted."""
    return sorted((d["line"], d["rule"], d["plugin"]) for d in map(json.loads, stdout.splitlines()))


class TestPluginsCommand:
    def test_lists_every_plugin_with_level_and_status(self, cache: Path) -> None:
        """Discovery shows each plugin's isolation and status, the incompatible one with its reason."""
        result = leakscan("plugins", cache=cache)
        rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:5]}
        entropy_status = "unavailable" if WASM_REASON else "available"
        expected = {
            "entropy": ("wasm", entropy_status),
            "legacy": ("inprocess", "incompatible"),
            "pii": ("process", "available"),
            "secrets": ("inprocess", "available"),
        }
        assert (0, expected) == (result.returncode, {n: (r[3], r[4]) for n, r in rows.items()})
        assert "requires leakscan<3,>=2, but this host provides leakscan 1.1" in result.stdout

    def test_describe_asks_each_loaded_plugin(self, cache: Path) -> None:
        """``--describe`` loads the plugins and shows what each says it detects."""
        result = leakscan("plugins", "--describe", cache=cache)
        assert ("credentials: aws-access-key-id" in result.stdout, "personal data: email" in result.stdout) == (
            True,
            True,
        )


class TestScan:
    def test_sample_findings_from_every_level(self, cache: Path) -> None:
        """Every planted secret and piece of personal data is found by the right plugin, nothing else."""
        result = leakscan("scan", "--format", "json", str(SAMPLE), cache=cache)
        assert (1, EXPECTED) == (result.returncode, findings(result.stdout))

    def test_stdin_gives_the_same_findings(self, cache: Path) -> None:
        """Input piped on stdin is scanned like the file."""
        result = leakscan("scan", "--format", "json", "-", stdin=SAMPLE.read_text(), cache=cache)
        assert EXPECTED == findings(result.stdout)

    def test_same_findings_when_every_plugin_runs_in_processes(self, cache: Path) -> None:
        """Forced to the process level, every plugin finds what it finds at its own level.

        The entropy plugin runs here even where the sandbox is unavailable.
        """
        result = leakscan("scan", "--format", "json", "--isolation", "process", str(SAMPLE), cache=cache)
        assert sorted(SECRETS + PII + ENTROPY) == findings(result.stdout)

    def test_summary_shows_each_plugin_level_and_time(self, cache: Path) -> None:
        """The text report ends with one row per plugin: isolation, runtime, calls, findings, time."""
        result = leakscan("scan", str(SAMPLE), cache=cache)
        rows = {}
        for line in result.stdout.splitlines():
            cells = line.split()
            if cells and cells[0] in ("secrets", "pii", "entropy") and "ms" in cells:
                rows[cells[0]] = (cells[1], cells[-4])
        expected = {"secrets": ("inprocess", "9"), "pii": ("process", "10")}
        if not WASM_REASON:
            expected["entropy"] = ("wasm", "9")
        assert expected == rows

    def test_incompatible_plugin_reported_not_run(self, cache: Path) -> None:
        """The legacy plugin is named in the report as not run, with the reason."""
        result = leakscan("scan", str(SAMPLE), cache=cache)
        assert "not run: legacy (incompatible: requires leakscan<3,>=2" in result.stdout

    def test_redact_removes_every_finding(self, cache: Path) -> None:
        """Redacted output keeps every line but no finding: scanning it again finds nothing."""
        redacted = leakscan("scan", "--redact", str(SAMPLE), cache=cache)
        rescan = leakscan("scan", "--format", "json", "-", stdin=redacted.stdout, cache=cache)
        original = SAMPLE.read_text()
        assert (1, len(original.splitlines()), "AKIAIOSFODNN7EXAMPLE" in redacted.stdout, 0, "") == (
            redacted.returncode,
            len(redacted.stdout.splitlines()),
            False,
            rescan.returncode,
            rescan.stdout,
        )

    def test_min_severity_drops_lower_findings(self, cache: Path) -> None:
        """``--min-severity high`` reports only high-severity findings."""
        result = leakscan("scan", "--format", "json", "--min-severity", "high", str(SAMPLE), cache=cache)
        severities = {json.loads(line)["severity"] for line in result.stdout.splitlines()}
        assert (1, {"high"}) == (result.returncode, severities)

    def test_clean_input_exits_zero(self, cache: Path) -> None:
        """No findings: exit status 0."""
        result = leakscan("scan", "-", stdin="hello\nworld\n", cache=cache)
        totals = [line.rsplit(", ", 1)[0] for line in result.stdout.splitlines() if line.endswith("lines/s)")]
        assert (0, ["0 findings (0 high, 0 medium, 0 low) in 2 lines"]) == (result.returncode, totals)

    def test_progress_bar_on_large_input(self, tmp_path: Path, cache: Path) -> None:
        """An input of 1 MiB or more gets a progress bar on stderr, ending at 100%."""
        big = tmp_path / "big.log"
        line = "2026-11-24T08:00:01Z INFO api GET /health 200 user=jane.doe@example.com\n"
        big.write_text(line * (PROGRESS_MIN_BYTES // len(line) + 1))
        result = leakscan("scan", "--summary", "--disable", "entropy", str(big), cache=cache)
        last = result.stderr.strip().splitlines()[-1]
        assert (1, True) == (result.returncode, last.startswith(f"{big} [{'#' * 30}] 100%"))


class TestPolicy:
    def test_policy_file_raises_isolation_and_disables(self, tmp_path: Path, cache: Path) -> None:
        """A policy file can lift every plugin to the process level and disable one; discovery shows both."""
        policy = tmp_path / "policy.toml"
        policy.write_text('[policy]\nmin_isolation = "process"\ndisabled = ["pii"]\n')
        result = leakscan("plugins", "--policy", str(policy), cache=cache)
        rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:5]}
        assert (0, True, True) == (
            result.returncode,
            "process (asked inprocess)  available" in rows["secrets"],
            "disabled" in rows["pii"],
        )

    def test_invalid_policy_is_a_usage_error(self, tmp_path: Path, cache: Path) -> None:
        """A malformed policy stops leakscan with exit status 2 and the SDK's explanation."""
        policy = tmp_path / "policy.toml"
        policy.write_text('[policy]\nmin_isolation = "docker"\n')
        result = leakscan("plugins", "--policy", str(policy), cache=cache)
        assert (2, True) == (result.returncode, "min_isolation" in result.stderr)
