"""What this (test) process has running: its children, whether a pid lives, and waiting for either."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def children() -> set[int]:
    """PIDs of this process's live (non-zombie) children."""
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == me:
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process, whoever its parent."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (a bound on waiting, not a speed check)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
