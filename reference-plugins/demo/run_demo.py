"""The pluginsdk demo: the leakscan host running its plugins at every isolation level, and containing a rogue one.

Run it in an environment where pluginsdk (with the ``wasm`` extra), leakscan
and the reference plugins, ``leakscan-rogue`` included, are installed
(``nox -s demo`` does that)::

    python reference-plugins/demo/run_demo.py [--log-dir DIR]

The host runs under ``policy.toml``: untrusted plugins in worker processes or
the sandbox.  Steps: discovery (the incompatible ``legacy`` plugin is
reported, not loaded; ``rogue`` asked for in-process and was raised), a scan
of the bundled sample log, the same log piped on stdin and redacted, a
generated 20,000-line log with a progress bar, and then the same log with
markers that make ``leakscan-rogue`` crash, hang and read host files: once
with the rogue rule in worker processes, once in the WebAssembly sandbox.
Each time the demo checks that the SDK contained it: the failures and
incidents are the expected ones and the other plugins' findings equal a scan
without the rogue rule.  Exit status 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from leakscan.cli import print_summary
from leakscan.findings import Finding
from leakscan.scanner import DEFAULT_BATCH, Report, Scanner, batches
from leakscan.spec import SPEC

from pluginsdk import Host, PluginCrashed, PluginError, PluginHookError, PluginTimeout, Policy

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "sample.log"
POLICY = HERE / "policy.toml"
SANDBOX_POLICY = HERE / "policy-sandbox.toml"
ROGUE = "rogue"
#: Lines in the generated log: enough for a lines/s figure that is not mostly start-up.
BIG_LINES = 20_000


def heading(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 74 - len(text)), flush=True)


def leakscan(*args: str, stdin: str | None = None) -> int:
    """Run the leakscan CLI as a user would; findings exit 1, which is expected here."""
    print("$ leakscan " + " ".join(args), flush=True)
    # Run next to the sample, so findings show a short "sample.log:LINE:COLUMN".
    result = subprocess.run([sys.executable, "-m", "leakscan", *args], input=stdin, text=True, cwd=HERE)
    if result.returncode not in (0, 1):
        raise SystemExit(f"leakscan {' '.join(args)} failed with exit status {result.returncode}")
    return result.returncode


def markers() -> dict[int, str]:
    """What the rogue rule meets, by line number: one misbehaviour in each of batches 2 to 5."""
    return {
        DEFAULT_BATCH + 345: "rogue:crash",  # its process ends
        2 * DEFAULT_BATCH + 567: "rogue:hang",  # it never returns
        3 * DEFAULT_BATCH + 789: "rogue:read /etc/passwd",  # a file of the machine
        4 * DEFAULT_BATCH + 901: f"rogue:read {POLICY}",  # the host's own configuration
    }


def make_big_log(path: Path, lines: int = BIG_LINES, planted: dict[int, str] | None = None) -> None:
    """A large synthetic log: mostly noise, a secret, address or webhook every few hundred lines.

    The same file every run; ``planted`` replaces the noise of some lines (by number, from 1).
    """
    rng = random.Random(42)
    paths = ["/health", "/api/v1/orders", "/api/v1/users/42", "/login", "/static/app.js"]
    leaks = [
        "user=ops@example.com",
        "key=AKIAIOSFODNN7EXAMPLE",
        "card=4111 1111 1111 1111",
        "token=ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d",
        "notify=https://hooks.slack.com/services/T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx",
    ]
    with path.open("w", encoding="utf-8") as f:
        for n in range(lines):
            extra = rng.choice(leaks) if rng.random() < 0.004 else f"bytes={rng.randint(100, 99999)}"
            status, ms = rng.choice([200, 200, 200, 404, 500]), rng.random() * 50
            stamp = f"2026-11-24T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
            line = f"{stamp} INFO api GET {rng.choice(paths)} {status} {ms:.1f}ms {extra}"
            if planted and n + 1 in planted:
                line = f"{stamp} WARN plugin-test {planted[n + 1]}"
            f.write(line + "\n")


def scan(host: Host, path: Path) -> Report:
    """Scan ``path`` with leakscan's own scanner, as ``leakscan scan`` does."""
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as f:
        return Scanner(host).scan(batches(f))


def others(report: Report) -> list[Finding]:
    return [f for f in report.findings if f.plugin != ROGUE]


class Checks:
    """What the demo expects; each result printed as it is checked."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def __call__(self, ok: bool, text: str) -> None:
        print(f"  [{'ok' if ok else 'FAILED'}] {text}", flush=True)
        if not ok:
            self.failed.append(text)


def failure_kinds(report: Report) -> list[tuple[int, str]]:
    """``(batch, what)`` of each batch the rogue rule failed on."""
    stats = report.stats.get(ROGUE)
    kinds: list[tuple[int, str]] = []
    for failure in stats.failures if stats else []:
        error: PluginError = failure.error
        if isinstance(error, PluginCrashed):
            what = "crashed"
        elif isinstance(error, PluginTimeout):
            what = "timed out"
        elif isinstance(error, PluginHookError):
            what = f"raised {error.exc_type}"
        else:
            what = type(error).__name__
        kinds.append((failure.batch, what))
    return kinds


def rogue_scan(
    title: str,
    log: Path,
    policy_file: Path,
    baseline: Report,
    check: Checks,
    expect_failures: list[tuple[int, str]],
    reads: Callable[[Report], None],
) -> None:
    """Scan ``log`` with the rogue rule under ``policy_file``: the summary, its incidents, the checks."""
    heading(title)
    with Host(SPEC, policy=Policy.from_toml(policy_file)) as host:
        report = scan(host, log)
        print_summary(report, host, sys.stdout)
        incidents = host.plugin(ROGUE).incidents
    print(f'\nhost.plugin("{ROGUE}").incidents:')
    for incident in incidents:
        print(f"  {incident.kind:<8} {incident.hook}: {incident.detail}")
    print("\nchecks:")
    check(
        expect_failures == failure_kinds(report),
        f"{ROGUE}: " + ", ".join(f"{what} on batch {batch}" for batch, what in expect_failures),
    )
    replaced = [(i.kind, i.hook) for i in incidents]
    expected_incidents = [("crashed", "scan_lines"), ("timeout", "scan_lines")]
    check(expected_incidents == replaced, f"{len(expected_incidents)} incidents: crashed, timeout (replaced each time)")
    clean = all(not s.errors for name, s in report.stats.items() if name != ROGUE)
    check(clean, "no other plugin failed on any batch")
    same = others(report) == others(baseline)
    check(same, f"the other plugins' {len(others(baseline))} findings equal those of a scan without {ROGUE}")
    reads(report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", type=Path, help="write the generated logs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        logs = args.log_dir or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        return run(logs)


def run(logs: Path) -> int:
    heading("1. Discovery under the demo's policy: every plugin, its isolation level and status")
    print(POLICY.read_text(encoding="utf-8"))
    leakscan("plugins", "--describe", "--policy", POLICY.name)

    heading("2. Scan the bundled sample log (findings, then per-plugin level and time)")
    leakscan("scan", "--policy", POLICY.name, SAMPLE.name)

    heading("3. The same log on stdin, redacted")
    leakscan("scan", "--policy", POLICY.name, "--redact", "-", stdin=SAMPLE.read_text(encoding="utf-8"))

    heading(f"4. A large log ({BIG_LINES:,} lines): progress bar on stderr, summary only")
    big = logs / "big.log"
    make_big_log(big)
    leakscan("scan", "--policy", POLICY.name, "--summary", "--progress", "always", str(big))

    planted = markers()
    rogue_log = logs / "rogue.log"
    make_big_log(rogue_log, planted=planted)
    heading(f"5. The same log with markers for {ROGUE}: it crashes, hangs, reads host files")
    for number, marker in planted.items():
        print(f"  line {number:,} (batch {(number - 1) // DEFAULT_BATCH + 1}): {marker}")
    without = Policy.from_toml(POLICY)
    with Host(SPEC, policy=without.replace(disabled={*without.disabled, ROGUE})) as host:
        baseline = scan(host, rogue_log)
    print(f"  without {ROGUE}: {len(baseline.findings)} findings from the other plugins, no failure")
    check = Checks()

    def reads_succeed(report: Report) -> None:
        stolen = [f for f in report.findings if f.plugin == ROGUE and f.rule == "host-file-read"]
        paths = ", ".join(f"{f.extra['path']} ({f.extra['bytes']:,} bytes)" for f in stolen)
        check(
            2 == len(stolen),
            f"as documented, a worker process runs as the host's user: {ROGUE} read {paths or 'nothing'} "
            "(the sandbox, next, refuses that)",
        )

    rogue_scan(
        f"6. {ROGUE} in worker processes (policy.toml: min_isolation = process, timeout = 1 s)",
        rogue_log,
        POLICY,
        baseline,
        check,
        [(2, "crashed"), (3, "timed out")],
        reads_succeed,
    )

    def reads_refused(report: Report) -> None:
        stolen = [f for f in report.findings if f.plugin == ROGUE and f.rule == "host-file-read"]
        refused = [k for k in failure_kinds(report) if k[1] == "raised FileNotFoundError"]
        check(
            (0, 2) == (len(stolen), len(refused)),
            f"the sandbox refused both reads (/etc/passwd, {POLICY.name}): nothing of the host's files reached {ROGUE}",
        )

    rogue_scan(
        f"7. {ROGUE} in the WebAssembly sandbox (policy-sandbox.toml: rogue = wasm)",
        rogue_log,
        SANDBOX_POLICY,
        baseline,
        check,
        [(2, "crashed"), (3, "timed out"), (4, "raised FileNotFoundError"), (5, "raised FileNotFoundError")],
        reads_refused,
    )

    heading("Result")
    if check.failed:
        print(f"containment did NOT work as expected: {len(check.failed)} check(s) failed:")
        for text in check.failed:
            print(f"  - {text}")
        return 1
    print(
        f"containment works: {ROGUE} crashed and hung at both levels without taking the host or the other plugins\n"
        "with it (each time its worker or sandbox instance was replaced and the scan went on), and the sandbox\n"
        "kept the host's files from it. The other plugins' findings are complete."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
