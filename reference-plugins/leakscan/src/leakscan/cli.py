"""``leakscan``: find secrets and personal data in files and logs, with rules from plugins.

Exit status: 0 nothing found, 1 findings, 2 usage error or incomplete scan
(a plugin failed), so it can gate a CI job.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from pluginsdk import (
    Host,
    PluginCrashed,
    PluginError,
    PluginHookError,
    PluginProtocolError,
    PluginResourceError,
    PluginTimeout,
    Policy,
)

from . import __version__
from .findings import SEVERITIES, Finding, mask, redact
from .progress import Progress
from .scanner import DEFAULT_BATCH, Batch, Failure, Report, Scanner, batches
from .spec import SPEC

#: Inputs at least this large get a progress bar (in ``auto`` mode).
PROGRESS_MIN_BYTES = 1 << 20
#: Scans of fewer lines get no lines/s figure: their time is mostly starting workers and sandboxes.
RATE_MIN_LINES = 10_000
#: Failures named one by one in a plugin's account of what went wrong; the rest are counted.
FAILURES_SHOWN = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leakscan",
        description="Find secrets and personal data in files and logs. Rules come from plugins.",
    )
    parser.add_argument("--version", action="version", version=f"leakscan {__version__} (spec {SPEC.version})")
    sub = parser.add_subparsers(dest="command", required=True)

    host_opts = argparse.ArgumentParser(add_help=False)
    host_opts.add_argument("--policy", metavar="FILE", help="pluginsdk policy file (TOML, [policy] table)")
    host_opts.add_argument("--disable", metavar="PLUGIN", action="append", default=[], help="don't load PLUGIN")
    host_opts.add_argument(
        "--isolation",
        choices=["inprocess", "process", "wasm"],
        help="run every plugin at exactly this isolation level (for comparisons)",
    )

    plugins = sub.add_parser("plugins", parents=[host_opts], help="list the plugins found and their status")
    plugins.add_argument("--describe", action="store_true", help="load each plugin and ask what it detects")

    scan = sub.add_parser("scan", parents=[host_opts], help="scan files or stdin")
    scan.add_argument("inputs", nargs="*", default=["-"], metavar="FILE", help="files to scan; '-' is stdin (default)")
    scan.add_argument("--redact", action="store_true", help="print the input with every finding replaced")
    scan.add_argument("--format", choices=["text", "json"], default="text", help="how to print findings")
    scan.add_argument("--summary", action="store_true", help="print only the per-plugin summary")
    scan.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="N", help="lines per plugin call")
    scan.add_argument(
        "--progress",
        choices=["auto", "always", "never"],
        default="auto",
        help=f"progress bar on stderr (auto: inputs of {PROGRESS_MIN_BYTES >> 20} MiB or more, stdin on a terminal)",
    )
    scan.add_argument("--min-severity", choices=SEVERITIES, default="low", help="ignore findings below this severity")
    return parser


def make_host(args: argparse.Namespace) -> Host:
    """The SDK host for these options: policy file, disabled plugins, forced isolation."""
    policy = Policy.from_toml(args.policy) if args.policy else Policy()
    if args.disable:
        policy = policy.replace(disabled={*policy.disabled, *args.disable})
    return Host(SPEC, policy=policy, force_isolation=args.isolation)


def print_plugins(host: Host, out: TextIO, *, describe: bool = False) -> None:
    """The discovery table: every plugin found, its isolation and status."""
    descriptions: dict[str, str] = {}
    if describe:
        try:
            descriptions = host.hook.describe.by_plugin()
        except PluginError as exc:
            print(f"leakscan: describe failed: {exc}", file=sys.stderr)
    rows = [("PLUGIN", "DISTRIBUTION", "ISOLATION", "STATUS", "DETAIL")]
    for info in host.plugins():
        level = info.isolation or "-"
        if info.requested_isolation and info.isolation != info.requested_isolation:
            level = f"{info.isolation} (asked {info.requested_isolation})"
        detail = descriptions.get(info.name) or (info.reason.splitlines()[0] if info.reason else info.runtime)
        rows.append((info.name, f"{info.dist} {info.version}", level, info.status, detail))
    _table(rows, out)
    counts: dict[str, int] = {}
    for info in host.plugins():
        counts[info.status] = counts.get(info.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    total = len(host.plugins())
    print(f"leakscan {__version__}, spec {SPEC.name} {SPEC.version}: {total} plugins ({summary})", file=out)


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]
        print("  ".join(cells).rstrip(), file=out)


@contextmanager
def open_input(name: str) -> Iterator[tuple[TextIO, int | None]]:
    """The input as text (undecodable bytes kept as escapes) and its size if known."""
    if name == "-":
        st = os.fstat(sys.stdin.fileno())
        # A redirected file has a size; a pipe or terminal does not.
        size = st.st_size if stat.S_ISREG(st.st_mode) else None
        with open(sys.stdin.fileno(), encoding="utf-8", errors="surrogateescape", newline="", closefd=False) as stream:
            yield stream, size
        return
    with open(name, encoding="utf-8", errors="surrogateescape", newline="") as f:
        yield f, os.fstat(f.fileno()).st_size


def print_findings(name: str, lines: list[str], first: int, found: list[Finding], out: TextIO, fmt: str) -> None:
    for f in found:
        text = lines[f.line - first]
        if fmt == "json":
            print(json.dumps({"file": name, **f.to_json(text)}), file=out)
        else:
            where = f"{name}:{f.line}:{f.start + 1}"
            print(f"{where:<22} {f.severity:<6} {f.rule:<22} {f.plugin:<10} {mask(text[f.start : f.end])}", file=out)


def print_summary(report: Report, host: Host, out: TextIO) -> None:
    """Per-plugin results: isolation level, where it ran, findings and time."""
    rows = [("PLUGIN", "ISOLATION", "RUNTIME", "CALLS", "FINDINGS", "TIME", "ERRORS")]
    for name, s in sorted(report.stats.items()):
        errors = f"{s.errors} ({s.first_error.splitlines()[0]})" if s.errors else "-"
        if s.invalid:
            errors += f"; {s.invalid} malformed results dropped"
        rows.append((name, s.isolation, s.runtime, str(s.calls), str(s.findings), _ms(s.seconds), errors))
    _table(rows, out)
    by_severity = {sev: sum(1 for f in report.findings if f.severity == sev) for sev in SEVERITIES}
    counts = ", ".join(f"{n} {sev}" for sev, n in reversed(by_severity.items()))
    if report.lines >= RATE_MIN_LINES:
        took = f"{_ms(report.seconds)} ({report.lines / report.seconds if report.seconds else 0:,.0f} lines/s)"
    else:
        took = f"{_ms(report.seconds)} (too few lines to measure lines/s)"
    n = len(report.findings)
    print(f"{n} finding{'' if n == 1 else 's'} ({counts}) in {report.lines:,} lines, {took}", file=out)
    accounts = what_went_wrong(report)
    if accounts:
        print("contained (the SDK kept these failures from the host and the other plugins):", file=out)
        for line in accounts:
            print(f"  {line}", file=out)
    skipped = [i for i in host.plugins() if i.status not in ("loaded", "available")]
    for info in skipped:
        print(f"not run: {info.name} ({info.status}: {info.reason.splitlines()[0] if info.reason else ''})", file=out)


def what_went_wrong(report: Report) -> list[str]:
    """What happened to each plugin that failed or had incidents during the scan: a headline, then one line a batch.

    For example::

        rogue: crashed on batch 2, timed out on batch 3; 2 incidents (crashed, timeout); other plugins unaffected
          batch 2 (lines 2,001-4,000): crashed (exit code 70); worker replaced
          batch 3 (lines 4,001-6,000): timed out after 1 s; worker replaced

    Built from the errors the SDK returned per batch (``PluginResult.error``) and
    the incidents it recorded (``host.plugin(name).incidents``).
    """
    troubled = {name: s for name, s in sorted(report.stats.items()) if s.errors or s.incident_count}
    lines = []
    for name, s in troubled.items():
        by_kind: dict[str, list[int]] = {}
        details = []
        for failure in s.failures:
            kind, detail = describe_failure(failure, s.isolation)
            by_kind.setdefault(kind, []).append(failure.batch)
            details.append(f"  batch {failure.batch} (lines {failure.first_line:,}-{failure.last_line:,}): {detail}")
        parts = [f"{kind} on {_batches(numbers)}" for kind, numbers in by_kind.items()]
        if s.errors and not s.failures:  # the SDK gave up on it: no batch to name
            parts.append(f"failed ({s.first_error.splitlines()[0] if s.first_error else 'no reason given'})")
        text = f"{name}: {', '.join(parts) or 'no failed batch'}"
        if s.incident_count:
            kinds = sorted({i.kind for i in s.incidents})
            plural = "" if s.incident_count == 1 else "s"
            text += f"; {s.incident_count} incident{plural} ({', '.join(kinds)})"
        others = sorted(n for n in troubled if n != name)
        text += f"; also failing: {', '.join(others)}" if others else "; other plugins unaffected"
        lines.append(text)
        lines += details[:FAILURES_SHOWN]
        if len(details) > FAILURES_SHOWN:
            lines.append(f"  ... and {len(details) - FAILURES_SHOWN} more failed batches")
    return lines


def describe_failure(failure: Failure, isolation: str) -> tuple[str, str]:
    """What one failed batch was: a short kind (``timed out``) and the detail (``timed out after 1 s; ...``)."""
    error = failure.error
    replaced = f"{'sandbox instance' if isolation == 'wasm' else 'worker'} replaced"
    if isinstance(error, PluginCrashed):
        return "crashed", f"crashed ({error.detail or 'no detail'}); {replaced}"
    if isinstance(error, PluginTimeout):
        return "timed out", f"timed out after {error.timeout:g} s; {replaced}"
    if isinstance(error, PluginHookError):
        return f"raised {error.exc_type}", f"raised {error.exc_type}: {_first_line(error.exc_message)}"
    if isinstance(error, PluginProtocolError):
        return "broke the protocol", f"broke the protocol ({_first_line(error.detail)}); {replaced}"
    if isinstance(error, PluginResourceError):
        return "hit a resource cap", f"hit a resource cap: {_first_line(error.message)}"
    return "failed", f"failed: {_first_line(error.message)}"


def _batches(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:FAILURES_SHOWN])) + (", ..." if len(numbers) > FAILURES_SHOWN else "")
    return f"batch {shown}" if len(numbers) == 1 else f"batches {shown}"


def _first_line(text: str, limit: int = 120) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


class _BatchWriter:
    """Writes each scanned batch as it completes: findings, or the redacted text; and moves the progress bar."""

    def __init__(self, args: argparse.Namespace, label: str, out: TextIO, progress: Progress | None) -> None:
        self.args = args
        self.label = label
        self.out = out
        self.progress = progress
        self.bytes = 0
        self.lines = 0

    def __call__(self, batch: Batch, found: list[Finding]) -> None:
        first, lines, raw, consumed = batch
        if self.args.redact:
            by_line: dict[int, list[Finding]] = {}
            for f in found:
                by_line.setdefault(f.line, []).append(f)
            for i, line in enumerate(raw):
                hits = by_line.get(first + i)
                if hits:
                    body = lines[i]  # the line without its ending, which is kept as it was
                    line = redact(body, hits) + line[len(body) :]
                self.out.write(line)
        elif not self.args.summary:
            print_findings(self.label, lines, first, found, self.out, self.args.format)
        self.bytes, self.lines = consumed, self.lines + len(lines)
        if self.progress is not None:
            self.progress.update(self.bytes, self.lines)


def cmd_scan(args: argparse.Namespace, host: Host) -> int:
    scanner = Scanner(host)
    out = sys.stdout
    # With --redact, stdout carries the redacted text, so everything else goes to stderr.
    info_out = sys.stderr if args.redact else out
    total = Report()
    for name in args.inputs:
        label = "<stdin>" if name == "-" else name
        with open_input(name) as (stream, size):
            interactive_stdin = size is None and name == "-" and sys.stderr.isatty()
            show = args.progress == "always" or (
                args.progress == "auto" and ((size or 0) >= PROGRESS_MIN_BYTES or interactive_stdin)
            )
            writer = _BatchWriter(args, label, out, Progress(size, label=label) if show else None)
            report = scanner.scan(batches(stream, args.batch_size), on_batch=writer, min_severity=args.min_severity)
            if writer.progress is not None:
                writer.progress.finish(writer.bytes, writer.lines)
        _merge(total, report)
    if args.format == "text" or args.summary or args.redact:
        if not args.summary and not args.redact:
            print(file=info_out)
        print_summary(total, host, info_out)
    if total.failed:
        return 2
    return 1 if total.findings else 0


def _merge(total: Report, report: Report) -> None:
    total.findings.extend(report.findings)
    total.lines += report.lines
    total.seconds += report.seconds
    for name, s in report.stats.items():
        t = total.stats.setdefault(name, type(s)(name))
        t.isolation, t.runtime = s.isolation, s.runtime
        t.calls += s.calls
        t.seconds += s.seconds
        t.findings += s.findings
        t.invalid += s.invalid
        t.errors += s.errors
        t.first_error = t.first_error or s.first_error
        t.failures += s.failures
        t.incidents += s.incidents
        t.incident_count += s.incident_count


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        print("leakscan: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        with make_host(args) as host:
            if args.command == "plugins":
                print_plugins(host, sys.stdout, describe=args.describe)
                return 0
            return cmd_scan(args, host)
    except OSError as exc:
        print(f"leakscan: {exc}", file=sys.stderr)
        return 2
    except PluginError as exc:
        print(f"leakscan: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
