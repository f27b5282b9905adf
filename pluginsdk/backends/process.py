"""Isolation level ``process``: the plugin runs in a pool of worker processes.

One of the two factories of :class:`~.pooled.PooledBackend`: its workers are
OS processes (:class:`~.os_worker.ProcessWorker`, which documents how they
start, what they may use and how they end).  Workers start as calls need
them, up to ``limits.workers``.

What it protects against: a plugin that crashes, hangs, leaks memory or
descriptors, or holds the GIL cannot take the host down or stall other
plugins; its workers are capped (memory, open files, time) and replaced.
What it does not: workers run as the host's user, so a hostile plugin can
read what the user can (the host's files, and its environment through
``/proc``), signal the host, or kill its own supervisor and leave processes
behind.  Use ``wasm`` for code you do not trust.
"""

from __future__ import annotations

from typing import ClassVar

from .os_worker import ProcessWorker
from .pooled import PooledBackend
from .worker import Worker

__all__ = ["ProcessBackend"]


class ProcessBackend(PooledBackend):
    """Runs a plugin in a pool of worker processes (see the module docstring)."""

    isolation: ClassVar[str] = "process"

    def _new_worker(self) -> Worker:
        return ProcessWorker(self.target, self.options, self.limits, self.max_message, self.hello)
