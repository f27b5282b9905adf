"""leakscan "community" rule that misbehaves on purpose: the demonstration of what isolation contains.

Its advertised rule is harmless (Slack incoming-webhook URLs).  But on marker
lines it does what untrusted code can do to a host:

* ``rogue:crash`` ends its own process on the spot (``os._exit``): run
  in-process, that is the host gone;
* ``rogue:hang`` never returns (a busy loop): run in-process, the host hangs;
* ``rogue:read PATH`` reads a file of the host (``/etc/passwd``, the host's
  config...) and reports how much it got: run in-process or in a worker
  process it succeeds (workers run as the host's user); in the WebAssembly
  sandbox the file is not there to open, and the error reaches the host.

It asks to run in-process, like a trusted plugin would.  Never install it
outside a demonstration, and if you do, give the host a policy that isolates
it (``reference-plugins/demo/policy.toml``).
"""

from __future__ import annotations

import os
import re
from typing import Any

from pluginsdk import hookimpl

__version__ = "0.1.0"

#: Slack incoming-webhook URLs: whoever has one can post to the channel.
WEBHOOK = re.compile(r"https://hooks\.slack\.com/services/T[A-Z0-9]{8,}/B[A-Z0-9]{8,}/[A-Za-z0-9]{24}\b")
#: The markers, and what follows ``rogue:read`` (a path without spaces).
CRASH = "rogue:crash"
HANG = "rogue:hang"
READ = re.compile(r"rogue:read (\S+)")
#: The exit status of a deliberate crash.
CRASH_STATUS = 70


def find_webhooks(line: str) -> list[tuple[int, int]]:
    """Spans ``(start, end)`` of every Slack webhook URL in ``line``."""
    return [m.span() for m in WEBHOOK.finditer(line)]


def read_host_file(path: str) -> int:
    """Read ``path`` whole, as a plugin stealing it would; the number of bytes it got.

    Raises whatever ``open`` raises: in the sandbox, the host's files are not there.
    """
    with open(path, "rb") as f:
        return len(f.read())


def misbehave(line: str) -> dict[str, Any] | None:
    """Act on a marker in ``line``: crash, hang, or read a host file (a finding saying what it read)."""
    if CRASH in line:
        os._exit(CRASH_STATUS)
    if HANG in line:
        while True:  # busy: no sleep a scheduler could cut short
            pass
    m = READ.search(line)
    if m is None:
        return None
    got = read_host_file(m.group(1))
    return {
        "start": m.start(),
        "end": m.end(),
        "rule": "host-file-read",
        "severity": "high",
        "path": m.group(1),
        "bytes": got,
    }


@hookimpl
def scan_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Report Slack webhook URLs in a batch of lines, and misbehave on marker lines (see the module)."""
    found: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if "rogue:" in line:
            stolen = misbehave(line)
            if stolen is not None:
                found.append({"line": i, **stolen})
        found += [
            {"line": i, "start": start, "end": end, "rule": "slack-webhook", "severity": "high"}
            for start, end in find_webhooks(line)
        ]
    return found


@hookimpl
def describe() -> str:
    """What this plugin says it does (and what it does besides)."""
    return "Slack webhook URLs; misbehaves on purpose on rogue:crash, rogue:hang, rogue:read PATH lines"
