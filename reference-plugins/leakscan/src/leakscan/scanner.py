"""Runs every plugin over an input, batch by batch, and collects a report."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from pluginsdk import Host, Incident, PluginError

from .findings import SEVERITIES, Finding, accept

DEFAULT_BATCH = 2000


class Failure(NamedTuple):
    """One batch a plugin failed on.

    Attributes:
        batch: The batch's number in its input, from 1.
        first_line: Its first line's number, from 1.
        last_line: Its last line's number.
        error: What the SDK reported (a :class:`~pluginsdk.PluginCrashed`,
            :class:`~pluginsdk.PluginTimeout`, :class:`~pluginsdk.PluginHookError`...).
    """

    batch: int
    first_line: int
    last_line: int
    error: PluginError


@dataclass
class PluginStats:
    """What one plugin did during a scan.

    Attributes:
        name: The plugin's name.
        isolation: The level it ran at.
        runtime: Where it ran, as the SDK describes it (e.g. ``process (2 workers)``).
        calls: Hook calls made (one per batch).
        seconds: Time spent in its calls, boundary crossings included.
        findings: Findings it reported.
        invalid: Entries of its results that were malformed and dropped.
        errors: Batches on which it failed.
        first_error: The first failure's message.
        failures: Every batch it failed on, in input order.
        incidents: What the SDK recovered from during the scan (a worker
            that crashed or timed out and was replaced...), from
            ``host.plugin(name).incidents``; the last 20 at most.
        incident_count: How many incidents there were during the scan.
    """

    name: str
    isolation: str = ""
    runtime: str = ""
    calls: int = 0
    seconds: float = 0.0
    findings: int = 0
    invalid: int = 0
    errors: int = 0
    first_error: str = ""
    failures: list[Failure] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    incident_count: int = 0


@dataclass
class Report:
    """The result of a scan.

    Attributes:
        findings: Every finding, in input order.
        stats: Per-plugin statistics, by plugin name.
        lines: Lines scanned.
        seconds: Wall time of the whole scan.
    """

    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, PluginStats] = field(default_factory=dict)
    lines: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """Whether some plugin failed on some batch (the scan is incomplete)."""
        return any(s.errors for s in self.stats.values())


# One batch of lines: (number of the first line, lines without endings, raw lines, bytes consumed).
Batch = tuple[int, list[str], list[str], int]


def batches(stream: Iterable[str], size: int = DEFAULT_BATCH) -> Iterator[Batch]:
    """Group a text stream's lines into batches of ``size``, keeping the originals for redaction."""
    raw: list[str] = []
    consumed = 0
    first = 1
    for line in stream:
        raw.append(line)
        consumed += len(line.encode("utf-8", "surrogateescape"))
        if len(raw) >= size:
            yield first, [_strip_eol(r) for r in raw], raw, consumed
            first += len(raw)
            raw = []
    if raw:
        yield first, [_strip_eol(r) for r in raw], raw, consumed


def _strip_eol(line: str) -> str:
    return line.rstrip("\r\n")


class Scanner:
    """Calls ``scan_lines`` of every loaded plugin on each batch.

    The SDK reports each plugin's result with its own error and time
    (``host.hook.scan_lines.results``), so the report can show what each
    costs at its isolation level; a plugin that fails on a batch is
    reported, and the others still run.  ``parallel`` plugins are called
    at once (1: one after another).
    """

    def __init__(self, host: Host, *, parallel: int = 4) -> None:
        self.host = host
        self.parallel = max(1, parallel)

    def scan(
        self,
        source: Iterable[Batch],
        *,
        on_batch: Callable[[Batch, list[Finding]], None] | None = None,
        min_severity: str = "low",
    ) -> Report:
        """Scan every batch of ``source``; ``on_batch`` sees each batch with its findings.

        Findings below ``min_severity`` are dropped as if never reported.
        """
        keep = frozenset(SEVERITIES[SEVERITIES.index(min_severity) :])
        report = Report()
        # Incidents are the host's, over its life: the scan's are those after these.
        counted = {info.name: info.incident_count for info in self.host.plugins()}
        started_at = time.time()
        started = time.perf_counter()
        number = 0
        hook = self.host.hook.scan_lines
        # Plugins in worker processes or the sandbox wait on another process, so
        # calling every plugin at once makes a batch cost the slowest plugin,
        # not the sum of them all.
        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="leakscan") as pool:
            executor = pool if self.parallel > 1 else None
            for batch in source:
                first, lines, _, _ = batch
                number += 1
                found: list[Finding] = []
                for result in hook.results(executor, lines=lines):
                    stats = report.stats.setdefault(result.plugin, PluginStats(result.plugin))
                    stats.seconds += result.seconds
                    stats.calls += 1
                    if result.error is not None:
                        stats.errors += 1
                        stats.first_error = stats.first_error or str(result.error)
                        stats.failures.append(Failure(number, first, first + len(lines) - 1, result.error))
                        continue
                    if result.value is None:  # no answer (a plugin that failed to load answers nothing)
                        continue
                    accepted, invalid = accept(result.value, lines, first, result.plugin)
                    accepted = [f for f in accepted if f.severity in keep]
                    stats.findings += len(accepted)
                    stats.invalid += invalid
                    found.extend(accepted)
                found.sort()
                report.findings.extend(found)
                report.lines += len(lines)
                if on_batch is not None:
                    on_batch(batch, found)
        report.seconds = time.perf_counter() - started
        for info in self.host.plugins():
            ran = report.stats.get(info.name)
            if ran is None:
                continue
            ran.isolation, ran.runtime = info.isolation or "", info.runtime
            ran.incident_count = info.incident_count - counted.get(info.name, 0)
            recent = [i for i in info.incidents if i.time >= started_at]
            ran.incidents = recent[max(0, len(recent) - ran.incident_count) :] if ran.incident_count else []
            if info.status == "failed":  # the SDK gave up on it (failed to start, kept crashing)
                ran.errors = max(ran.errors, 1)
                ran.first_error = ran.first_error or info.reason.splitlines()[0]
        return report
