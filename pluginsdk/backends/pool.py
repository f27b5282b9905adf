"""One pool of workers for one plugin: checkout, the watchdog, recycling, idle shutdown, start failures.

Workers are started as demand grows: one when the plugin loads, another
each time a caller finds every worker busy, up to ``size``.  The pool knows
nothing of the protocol: the backend gives it a ``spawn`` factory and a
``handshake`` that reads a new worker's READY.

Every wait has a deadline:

* a caller waiting for a free worker: ``timeout`` (then
  :class:`~pluginsdk.PluginTimeout`, and nothing is lost: the worker it waited
  for stays in the pool);
* a new worker's handshake: ``max(timeout, MIN_START_TIMEOUT)``;
* a reply, a stream chunk, a stream the consumer stopped reading: the
  deadline the client arms on the worker (:attr:`Worker.deadline`);
* all three worker deadlines are enforced here, by the watchdog thread,
  which kills a worker past its deadline (its waiting caller then sees
  ``EOFError`` and reports the timeout), and a busy worker that has ended
  while its channel stays open;
* stopping a worker: its kind's grace period (a few seconds), then a kill.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable

from .._errors import PluginError, PluginLoadError, PluginTimeout
from ..config import Limits
from .worker import Worker

__all__ = ["MAX_START_FAILURES", "MIN_START_TIMEOUT", "Pool", "StartFailed"]

#: Consecutive workers that may die while loading before the plugin is given up on.
MAX_START_FAILURES = 3
#: A worker gets at least this long to import its plugin, whatever the call timeout.
MIN_START_TIMEOUT = 10.0

_monotonic = time.monotonic


class StartFailed(Exception):
    """A new worker died or timed out before READY (the next one may do better).

    ``args``: the incident's kind and what happened.
    """


class Pool:
    """Workers for one plugin, handed out to one thread at a time (see the module docstring)."""

    def __init__(
        self,
        *,
        name: str,
        log: logging.Logger,
        limits: Limits,
        spawn: Callable[[], Worker],
        handshake: Callable[[Worker], None],
        record_incident: Callable[[str, str], None],
    ) -> None:
        self.name, self.log = name, log
        # ``limits`` is checked and complete (see PooledBackend); 0 means "never" for the last two.
        self.size, self.timeout = int(limits.workers or 1), float(limits.timeout or 0)
        self.recycle_after, self.idle_timeout = int(limits.recycle_after or 0), float(limits.idle_timeout or 0)
        self._spawn_worker, self._handshake, self._record = spawn, handshake, record_incident
        # Fast paths take the bare lock (a C-level ``with``); waiting uses the condition.
        self.lock = threading.Lock()
        self._cond = threading.Condition(self.lock)
        self.idle: list[Worker] = []  # LIFO: the warmest worker goes first
        self.all: set[Worker] = set()
        self._starting = 0
        self._waiters = 0
        self._start_failures = 0
        self.failed: str | None = None
        self.closed = False
        # Without recycling or idle shutdown, giving a worker back needs no bookkeeping.
        self.plain_release = not self.recycle_after and not self.idle_timeout
        self._watchdog: threading.Thread | None = None
        self._finalizer = weakref.finalize(self, _kill_all, self.all)

    def occupancy(self) -> str:
        return f"{len(self.all)}/{self.size}"

    def start_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=_watch,
                args=(weakref.ref(self), self._tick()),
                daemon=True,
                name=f"pluginsdk-{self.name}-watchdog",
            )
            self._watchdog.start()

    def check_usable(self) -> None:
        if self.closed:
            raise PluginError("backend is closed", plugin=self.name)
        if self.failed is not None:
            raise PluginLoadError(self.failed, plugin=self.name)

    def give_up(self, reason: str) -> None:
        """Fail the plugin for good: every call from now on raises PluginLoadError(``reason``)."""
        with self.lock:
            self.failed = reason
            self._cond.notify_all()

    # -- checkout ----------------------------------------------------------
    def take(self) -> Worker:
        """A ready worker for this thread alone: idle, newly started, or freed within ``timeout``."""
        with self.lock:
            w = self.idle.pop() if self.idle and self.failed is None and not self.closed else None
        if w is not None and w.ready:
            return w
        deadline = _monotonic() + self.timeout
        while True:
            w = w or self._take(deadline)
            if w.ready or self.ensure_ready(w):
                return w
            w = None

    def _take(self, deadline: float) -> Worker:
        with self.lock:
            while True:
                if self.idle and self.failed is None and not self.closed:
                    return self.idle.pop()
                self.check_usable()
                if len(self.all) + self._starting < self.size:
                    self._starting += 1
                    break
                left = deadline - _monotonic()
                if left <= 0:
                    raise PluginTimeout(
                        f"no worker became free within {self.timeout:g}s (all {self.size} busy)",
                        plugin=self.name,
                        timeout=self.timeout,
                    )
                self._waiters += 1
                try:
                    self._cond.wait(left)
                finally:
                    self._waiters -= 1
        return self._spawn()

    def take_idle(self) -> Worker | None:
        """An idle worker (its handshake maybe unfinished), or ``None``: never starts one, never waits."""
        with self.lock:
            if self.idle and self.failed is None and not self.closed:
                return self.idle.pop()
        return None

    def contended(self) -> bool:
        """Whether callers wait for a worker: one held without waiting for it should be given back."""
        return self._waiters > 0

    def can_grow(self) -> bool:
        """Whether a worker may start now (fewer than ``size`` running or starting); a hint, not a reservation."""
        return len(self.all) + self._starting < self.size

    def try_take(self) -> Worker | None:
        """An idle or newly started worker (its handshake maybe unfinished), or ``None`` rather than wait."""
        with self.lock:
            self.check_usable()
            if self.idle:
                return self.idle.pop()
            if len(self.all) + self._starting >= self.size:
                return None
            self._starting += 1
        return self._spawn()

    def ensure_ready(self, w: Worker) -> bool:
        """Finish ``w``'s handshake; ``False`` if it died starting (the caller may retry)."""
        try:
            self._handshake(w)
        except StartFailed as exc:
            self.discard(w, replace=False)
            return self._start_failed(*exc.args)
        except PluginLoadError as exc:
            self.discard(w, replace=False)
            self.give_up(exc.message)
            raise
        except BaseException:
            self.discard(w, replace=False)
            raise
        w.ready = True
        with self.lock:
            self._start_failures = 0
        return True

    def _start_failed(self, kind: str, detail: str) -> bool:
        self._record(kind, f"worker failed to start: {detail}")
        with self.lock:
            self._start_failures += 1
            failures = self._start_failures
            if failures >= MAX_START_FAILURES:
                self.failed = f"worker died while loading the plugin, {failures} times in a row ({detail})"
                self._cond.notify_all()
        self.log.warning("plugin %r: worker failed to start: %s", self.name, detail)
        self.check_usable()
        return False

    def _spawn(self) -> Worker:
        """Start a worker in a slot reserved by incrementing ``_starting``."""
        try:
            w = self._spawn_worker()
        except BaseException:
            with self.lock:
                self._starting -= 1
                self._cond.notify()
            raise
        with self.lock:
            self._starting -= 1
            closed = self.closed
            if not closed:
                self.all.add(w)
        if closed:
            w.kill()
            self.check_usable()
        return w

    def release(self, w: Worker, *, used: bool = True, retire: bool = False) -> None:
        """Give ``w`` back after a call, or retire it (``retire``, recycling, a watchdog kill)."""
        w.calls += used
        retire = retire or bool(self.recycle_after and w.calls >= self.recycle_after)
        with self.lock:
            # Under the lock: the watchdog only kills workers that are not idle.
            kept = not (retire or w.timed_out or self.closed) and w in self.all
            if kept:
                w.last_used = _monotonic()
                self.idle.append(w)
                if self._waiters:
                    self._cond.notify()
        if not kept:
            self.discard(w, graceful=retire and not w.timed_out)

    def release_fast(self, w: Worker) -> bool:
        """:meth:`release` after a plain call when :attr:`plain_release`; ``False`` if ``w`` needs the slow path."""
        w.calls += 1
        with self.lock:
            if w.timed_out or self.closed:
                return False
            self.idle.append(w)
            if self._waiters:
                self._cond.notify()
        return True

    def discard(self, w: Worker, *, graceful: bool = False, replace: bool = True) -> None:
        """Remove ``w`` for good; start a replacement so the pool stays warm."""
        with self.lock:
            member = w in self.all
            self.all.discard(w)
            replace = replace and member and not self.closed and self.failed is None
            if replace:
                self._starting += 1
            self._cond.notify()
        if graceful:
            w.stop()
        else:
            w.kill()
        if not replace:
            return
        try:
            new = self._spawn()
        except PluginError:
            return
        except Exception as exc:  # out of processes or fds: the next call tries again
            self.log.warning("plugin %r: could not start a worker: %s", self.name, exc)
            return
        with self.lock:
            self.idle.insert(0, new)  # its handshake completes on first use
            if self._waiters:
                self._cond.notify()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            idle = list(self.idle)
            busy = [w for w in self.all if w not in idle]
            self.idle.clear()
            self.all.difference_update(idle)
            self._cond.notify_all()
        for w in idle:
            w.stop()
        # A busy worker's channel belongs to the thread using it: only stop the guest;
        # that thread sees EOF and discards it (the finalizer remains the safety net).
        for w in busy:
            w.signal_kill()
        if not busy:
            self._finalizer()

    # -- the watchdog ------------------------------------------------------
    def _tick(self) -> float:
        """The watchdog's period: deadlines overrun by a twentieth at most, and an exited
        worker noticed within 0.25 s, for a few wake-ups a second when nothing happens."""
        ticks = [0.25, self.timeout / 20]
        if self.idle_timeout > 0:
            ticks.append(self.idle_timeout / 4)
        return max(0.01, min(ticks))

    def housekeeping(self) -> None:
        """Kill workers past their deadline, or ended while their caller waits; shut down workers idle too long."""
        now = _monotonic()
        with self.lock:
            idle = set(self.idle)
            busy = [w for w in self.all if w.deadline and w not in idle]
            late = [w for w in busy if now > w.deadline]
            for w in late:
                w.timed_out = True
            # A stream its consumer stopped reading: the slot is freed now, whoever holds the stream.
            reclaimed = [w for w in late if w.held]
            for w in reclaimed:
                self.all.discard(w)
            if reclaimed:
                self._cond.notify_all()
            stale = []
            if self.idle_timeout > 0:
                stale = [w for w in self.idle if now - w.last_used >= self.idle_timeout]
                for w in stale:
                    self.idle.remove(w)
                    self.all.discard(w)
        for w in late:
            w.signal_kill()  # its caller reads EOF and reports the timeout
        for w in busy:
            # Ended, yet its caller still waits: something it started holds the channel
            # open.  Killing it closes the channel; the caller reports the crash.
            if w.deadline and not w.timed_out and w.exited():
                w.signal_kill()
        for w in stale:
            w.stop()
        for w in reclaimed:
            w.kill()  # nobody reads from it: its holder finds it timed out when it comes back


def _watch(ref: weakref.ref[Pool], tick: float) -> None:
    """The watchdog: deadlines and idle shutdown, until the pool closes or goes away."""
    while True:
        pool = ref()
        if pool is None or pool.closed:
            return
        try:
            pool.housekeeping()
        except Exception:  # a watchdog that died would leave every deadline unenforced
            pool.log.exception("plugin %r: watchdog error", pool.name)
        del pool  # hold no reference while sleeping
        time.sleep(tick)


def _kill_all(workers: set[Worker]) -> None:
    """Finalizer: kill every worker left (pool collected or interpreter exiting)."""
    for w in list(workers):
        w.kill()
    workers.clear()
