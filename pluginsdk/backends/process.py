"""Isolation level ``process``: a pool of pre-warmed worker processes per plugin.

Each worker is ``python -I -u -c <boot> R W MEM FILES`` running :mod:`pluginsdk._guest`:
it imports the plugin once, then serves calls over two private pipes (fds
``R``/``W``, length-prefixed msgpack frames, see :mod:`pluginsdk.codec`).
Its stdout and stderr are separate pipes whose lines go to the logger
``pluginsdk.plugin.NAME``, so nothing a plugin prints can reach the channel.

Start method: ``subprocess.Popen`` of a fresh interpreter (vfork + exec),
not ``fork``.  Forking a host that has threads (a WASM backend, a web
server, our own output pumps) copies locks held by other threads and can
deadlock the child; ``forkserver`` would be safe but brings multiprocessing's
pickling machinery and a server process of its own, for no gain over
exec'ing an interpreter directly (~40-60 ms a worker here, paid once, off
the call path, and in parallel when a pool pre-warms; measured: fork ~2 ms
but unsafe, forkserver ~20 ms, spawn 50-65 ms).  ``-I`` keeps the host's
``PYTHON*`` variables and user site out; the host's ``sys.path`` (or
``options["sys_path"]``) is put in front of the worker's so it sees what the
host sees.  ``options["python"]`` overrides the interpreter (default
``sys.executable``).  Workers get a new session so a terminal's Ctrl-C
reaches only the host, and so killing a worker kills whatever it started.
A worker exits when its channel closes (host exit or crash), unless it is
stuck in plugin code: the host kills its workers at exit (``weakref.finalize``).

Memory: ``limits.memory_mb`` is applied in the worker as RLIMIT_AS before the
plugin is imported.  It caps *address space* (heap, thread stacks, mmaps,
shared libraries: the bare worker maps ~30 MiB), not resident memory; an
allocation past it raises MemoryError in the plugin, reported as
:class:`PluginResourceError` (the worker is then replaced), or kills the
worker, reported as :class:`PluginCrashed`.

Other kinds of worker: the pool speaks to its workers only through
:class:`Worker` (send a frame, read a message, kill, say how it died); a
subclass pools another kind by overriding :meth:`ProcessBackend._new_worker`
(the ``wasm`` backend pools sandbox instances this way).

Timeouts: ``limits.timeout`` bounds one crossing (a call, one worker's share
of a batch, the wait for one stream chunk).  A worker that overruns is
killed and replaced.  The same watchdog notices a worker that exited while
its caller waits but whose channel stays open (children it forked hold the
pipe): it kills the group, so the caller sees EOF and reports the crash.

Incidents: each crash, timeout, resource cap hit, or worker replaced for
garbling its channel is recorded with :meth:`Backend.record_incident` where
the caller's error is built; recycling and idle shutdown are not incidents.
"""

from __future__ import annotations

import abc
import functools
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Generator, Sequence
from typing import Any, ClassVar

from .. import _guest as G
from .. import codec
from .._errors import (
    CodecError,
    PluginCrashed,
    PluginError,
    PluginHookError,
    PluginLoadError,
    PluginResourceError,
    PluginTimeout,
)
from .base import Backend, PluginTarget

__all__ = ["ProcessBackend", "Worker"]

#: Consecutive workers that may die while loading before the plugin is given up on.
MAX_START_FAILURES = 3
#: A worker gets at least this long to import its plugin, whatever the call timeout.
MIN_START_TIMEOUT = 10.0
#: Seconds a worker gets to exit after BYE before it is killed.
EXIT_GRACE = 2.0
#: stderr lines kept per worker, quoted when it dies.
STDERR_TAIL = 10

# Hot-path names, bound once.
_monotonic = time.monotonic
_write = os.write
_encode_frame = codec.encode_frame
_CALL, _OK = G.CALL, G.OK
_PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The worker's first line: the host's path first (``-I`` dropped PYTHONPATH), then the loop.
_BOOT = (
    "import sys;sys.path[:0]=[p for p in {path!r} if p not in sys.path];"
    "from pluginsdk._guest import main;sys.exit(main())"
)


class _HookInfo:
    """Per-hook result converters (``None``: values pass as they are)."""

    __slots__ = ("convert", "item", "plain")

    def __init__(
        self,
        convert: Callable[[Any], Any] | None,
        item: Callable[[Any], Any] | None,
        plain: frozenset[type] | None = None,
    ) -> None:
        self.convert = convert
        self.item = item
        # Result types that pass unconverted; None always does (pluggy drops it).
        self.plain = (plain or frozenset()) | {type(None)}


class Worker(abc.ABC):
    """What the pool needs of a worker: one guest serving the plugin over a frame channel.

    :class:`ProcessBackend` pools these; a subclass of the backend supplies
    another kind (a sandbox instance, say) by overriding
    :meth:`ProcessBackend._new_worker`.  The contract:

    * Created by ``_new_worker`` with HELLO already sent (or about to be
      read by the guest); the pool reads READY itself, so a new worker is not
      ``ready`` until then.
    * :meth:`send` writes one whole frame; a dead guest may raise
      ``BrokenPipeError`` or pass silently: the next read reports it.
    * :attr:`reader` returns the guest's next message and raises ``EOFError``
      once the guest is gone (or killed).  While the host waits, ``deadline``
      holds the monotonic time by which the reply is due; the backend's
      watchdog sets ``timed_out`` and calls :meth:`signal_kill` when it passes.
    * Used by one thread at a time (the pool hands it out exclusively), apart
      from the watchdog: :meth:`signal_kill` and :meth:`exited` must be safe
      from another thread.
      The other attributes are the pool's bookkeeping.
    """

    pid: int  # for log messages
    reader: codec.FrameReader

    def __init__(self) -> None:
        self.deadline = 0.0  # armed (monotonic time) while the host waits for a reply
        self.timed_out = False
        self.ready = False  # READY was read
        self.calls = 0
        self.last_used = time.monotonic()

    @abc.abstractmethod
    def send(self, frame: bytes) -> None:
        """Send one encoded frame (see :func:`pluginsdk.codec.encode_frame`)."""

    def exited(self) -> bool:
        """Whether the worker has ended, for a worker whose reader may not see EOF then.

        The watchdog asks this of busy workers and kills those that ended.
        """
        return False

    def recv(self, timeout: float) -> Any:
        """The next message; ``EOFError`` if the worker died or was killed past ``timeout``."""
        self.deadline = time.monotonic() + timeout
        try:
            return self.reader.read()
        finally:
            self.deadline = 0.0

    @abc.abstractmethod
    def death_detail(self) -> str:
        """How the worker ended, for error messages (may wait briefly for it to end)."""

    @abc.abstractmethod
    def signal_kill(self) -> None:
        """Stop the worker now, from any thread; its reader then sees EOF."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop the worker and release everything it holds.  Idempotent."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Ask the worker to exit (BYE), killing it if it does not."""


class _ProcessWorker(Worker):
    """One worker process and the host's end of its channel."""

    def __init__(self, target: PluginTarget, max_message: int) -> None:
        super().__init__()
        self.plugin = target.name
        path = _unique([target.path_entry, *target.options.get("sys_path", sys.path), _PKG_ROOT])
        python = target.options.get("python") or sys.executable
        to_guest_r, self.wfd = os.pipe()
        self._rfd, to_host_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [
                    python,
                    "-I",
                    "-u",
                    "-c",
                    _BOOT.format(path=path),
                    str(to_guest_r),
                    str(to_host_w),
                    str(target.limits.memory_mb or 0),
                    str(target.limits.open_files or 0),
                ],
                pass_fds=(to_guest_r, to_host_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except BaseException:
            os.close(self.wfd)
            os.close(self._rfd)
            raise
        finally:
            os.close(to_guest_r)
            os.close(to_host_w)
        self.pid = self.proc.pid
        # Plain blocking reads: the watchdog enforces deadlines by killing the
        # worker (EOF), which keeps poll() off every call's path.
        self.reader = codec.FrameReader(functools.partial(os.read, self._rfd), max_message)
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self._closed = False
        self._pump = threading.Thread(
            target=_pump_output,
            args=(self.proc, logging.getLogger(f"pluginsdk.plugin.{self.plugin}"), self.stderr_tail),
            name=f"pluginsdk-{self.plugin}-output-{self.pid}",
            daemon=True,
        )
        self._pump.start()
        hello = {
            "module": target.module,
            "attr": target.attr,
            "hooks": {h: list(a) for h, a in target.hooks.items()},
            "path": path,
            "max_message": max_message,
            "name": target.name,
        }
        # Fits in the pipe buffer: the worker reads it once its interpreter is up.
        try:
            self.send(codec.encode_frame([G.HELLO, hello]))
        except BrokenPipeError:
            pass  # died at once: the handshake read reports it

    # -- channel ---------------------------------------------------------
    def send(self, frame: bytes) -> None:
        n = _write(self.wfd, frame)
        if n < len(frame):  # big frames go in pieces
            view = memoryview(frame)[n:]
            while view:
                view = view[_write(self.wfd, view) :]

    # -- lifecycle -------------------------------------------------------
    def _exited(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the worker to exit, *without* reaping it.

        An unreaped worker keeps its pid, and so its process group, reserved:
        whatever it started can still be killed through the group (``kill``),
        with no risk of signalling a stranger that reused the pid.
        """
        if self.proc.returncode is not None:
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                if os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return True
            except ChildProcessError:  # already reaped elsewhere
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)

    def exited(self) -> bool:
        """Whether the process ended (not reaped, so its group can still be killed)."""
        return self._exited(0)

    def death_detail(self) -> str:
        """How the process ended (waits briefly for it to exit)."""
        if not self._exited(EXIT_GRACE):
            return "closed its channel but did not exit"
        self.signal_kill()  # the worker is gone: its children go too
        code = self.proc.wait()
        if code < 0:
            try:
                how = f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        self._pump.join(0.5)  # let the last stderr lines in
        tail = " | ".join(self.stderr_tail)
        return f"{how}; stderr: {tail}" if tail else how

    def signal_kill(self) -> None:
        """SIGKILL the worker's process group (it and whatever it started)."""
        if self.proc.returncode is None:  # not reaped: the pid cannot have been reused
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def kill(self) -> None:
        """Kill the worker and release everything it holds."""
        self.signal_kill()
        self._finish()

    def stop(self) -> None:
        """Ask the worker to exit (BYE), killing it if it does not."""
        if not self._closed and self.proc.returncode is None:
            try:
                self.send(codec.encode_frame([G.BYE]))
            except OSError:
                pass
            else:
                self._exited(EXIT_GRACE)
        self.kill()  # the group too: a worker's leftovers must not outlive it

    def _finish(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fd in (self.wfd, self._rfd):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=EXIT_GRACE)
        except subprocess.TimeoutExpired:
            pass
        self._pump.join(EXIT_GRACE)


def _unique(entries: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(e for e in entries if e))


def _pump_output(proc: subprocess.Popen[bytes], log: logging.Logger, tail: deque[str]) -> None:
    """Forward a worker's stdout (INFO) and stderr (WARNING) to ``log``, line by line."""
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    streams = {proc.stdout.fileno(): ("stdout", logging.INFO), proc.stderr.fileno(): ("stderr", logging.WARNING)}
    buffers = {fd: bytearray() for fd in streams}
    for fd in streams:
        sel.register(fd, selectors.EVENT_READ)
    try:
        while sel.get_map():
            for key, _ in sel.select():
                fd = int(key.fd)
                data = os.read(fd, 65536)
                buf = buffers[fd]
                if data:
                    buf += data
                else:
                    sel.unregister(fd)
                    buf += b"\n" if buf else b""
                stream, level = streams[fd]
                while b"\n" in buf or len(buf) > 65536:
                    cut = buf.find(b"\n")
                    end = cut + 1 if cut >= 0 else 65536
                    line = buf[: end if cut < 0 else cut].decode("utf-8", "replace").rstrip("\r")
                    del buf[:end]
                    if stream == "stderr":
                        tail.append(line)
                    log.log(level, "%s", line, extra={"plugin_stream": stream})
    finally:
        sel.close()
        proc.stdout.close()
        proc.stderr.close()


def _kill_all(workers: set[Worker]) -> None:
    """Finalizer: kill every worker left (backend collected or interpreter exiting)."""
    for w in list(workers):
        w.kill()
    workers.clear()


class ProcessBackend(Backend):
    """Runs a plugin in a pool of worker processes (see the module docstring)."""

    isolation: ClassVar[str] = "process"

    def __init__(self, target: PluginTarget, *, log: logging.Logger) -> None:
        super().__init__(target, log=log)
        limits = target.limits
        self._size = max(1, limits.workers or 1)
        self._timeout = float(limits.timeout or 30.0)
        self._recycle_after = limits.recycle_after or 0
        self._idle_timeout = float(limits.idle_timeout or 0.0)
        self._max_message = int((limits.max_message_mb or 64) * 2**20)
        # Fast paths take the bare lock (a C-level ``with``); waiting uses the condition.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._start_lock = threading.Lock()
        self._idle: list[Worker] = []  # LIFO: the warmest worker goes first
        self._all: set[Worker] = set()
        self._starting = 0
        self._waiters = 0
        self._start_failures = 0
        self._failed: str | None = None
        self._closed = False
        self._started = False
        self._hooks: dict[str, _HookInfo] = {}
        # Without recycling or idle shutdown, releasing a worker needs no bookkeeping.
        self._plain_release = not self._recycle_after and not self._idle_timeout
        self._watchdog: threading.Thread | None = None
        self._impl_options: dict[str, dict[str, bool]] = {}
        self._finalizer = weakref.finalize(self, _kill_all, self._all)

    # -- Backend API -----------------------------------------------------
    @property
    def failed_reason(self) -> str | None:
        return self._failed

    def describe(self) -> str:
        return f"process ({self._occupancy()} workers)"

    @property
    def started(self) -> bool:
        return self._started

    @property
    def max_message(self) -> int:
        """The largest frame either side accepts, in bytes."""
        return self._max_message

    def _occupancy(self) -> str:
        """``live/size`` of the pool, for :meth:`describe`."""
        return f"{len(self._all)}/{self._size}"

    @property
    def impl_options(self) -> dict[str, dict[str, bool]]:
        """Each implementation's ``tryfirst``/``trylast``, as the worker reported (after start)."""
        return dict(self._impl_options)

    def start(self) -> None:
        with self._start_lock:
            if self._started:
                return
            self._check_usable()
            if self._watchdog is None:  # first: it also enforces the handshake deadline
                self._watchdog = threading.Thread(
                    target=_watch,
                    args=(weakref.ref(self), self._tick()),
                    daemon=True,
                    name=f"pluginsdk-{self.target.name}-watchdog",
                )
                self._watchdog.start()
            # Spawn every worker wanted first, so their interpreters start in parallel.
            count = self._size if self.target.options.get("prewarm") else 1
            workers = [w for w in (self._try_take() for _ in range(count)) if w is not None]
            ready: list[Worker] = []
            try:
                for w in workers or [self._acquire()]:
                    ready.append(w if w.ready or self._ensure_ready(w) else self._acquire())
            finally:
                for w in ready:
                    self._release(w, used=False)
            self._started = True

    def call(self, hook: str, args: tuple[Any, ...]) -> Any:
        if not self._started:
            self.start()
        info = self._hooks.get(hook) or self._hook_info(hook)
        try:
            frame = _encode_frame([_CALL, hook, args], self._max_message)
        except Exception as exc:
            raise self._encode_error(hook, exc, [args]) from None
        with self._lock:  # fast path of _acquire: a warm idle worker
            w = self._idle.pop() if self._idle and self._failed is None and not self._closed else None
        if w is None or not w.ready:
            w = self._acquire(w)
        try:
            w.send(frame)
            w.deadline = _monotonic() + self._timeout
            reply = w.reader.read()
            w.deadline = 0.0
        except BaseException as exc:
            w.deadline = 0.0
            error = self._channel_error(w, hook, exc)  # before the kill, so the detail says how it died
            self._discard(w)
            raise error from None
        kind = reply[0]
        if kind == _OK:
            if self._plain_release:
                w.calls += 1
                with self._lock:  # fast path of _release
                    if not (w.timed_out or self._closed):
                        self._idle.append(w)
                        if self._waiters:
                            self._cond.notify()
                        w = None
            if w is not None:
                self._release(w, hook=hook)
            value = reply[1]
            return value if info.convert is None or type(value) in info.plain else info.convert(value)
        if kind == G.CHUNK or kind == G.END:
            stream = self._stream(w, hook, reply, info.item)
            next(stream)  # primed: closing or dropping it now always reaches its cleanup
            return stream
        self._release(w, error=reply, hook=hook)
        raise self._error(hook, reply)

    def call_batch(self, hook: str, items: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Split ``items`` into one contiguous share per free worker; results in order."""
        if not items:
            return []
        if not self._started:
            self.start()
        self._hooks.get(hook) or self._hook_info(hook)
        workers = [self._acquire()]
        pending: list[Worker] = []  # taken, handshake maybe unfinished
        try:
            while len(workers) + len(pending) < min(self._size, len(items)):
                more = self._try_take()
                if more is None:
                    break
                pending.append(more)
            # Idle workers may be replacements whose READY is still unread: finish every
            # handshake before a share is sent (new workers came up in parallel meanwhile).
            while pending:
                w = pending.pop(0)
                if w.ready or self._ensure_ready(w):
                    workers.append(w)
        except BaseException:
            for w in workers + pending:
                self._release(w, used=False)
            raise
        parts = _split(len(items), len(workers))
        try:
            frames = [self._batch_frame(hook, items[a:b]) for a, b in parts]
        except BaseException:
            for w in workers:
                self._release(w, used=False)
            raise
        return self._run_batch(hook, workers, frames, parts)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = list(self._idle)
            busy = [w for w in self._all if w not in idle]
            self._idle.clear()
            self._all.difference_update(idle)
            self._cond.notify_all()
        for w in idle:
            w.stop()
        # A busy worker's fds belong to the thread using it: only kill the process;
        # that thread sees EOF and discards it (the finalizer remains the safety net).
        for w in busy:
            w.signal_kill()
        if not busy:
            self._finalizer()

    # -- pool ------------------------------------------------------------
    def _check_usable(self) -> None:
        if self._closed:
            raise PluginError("backend is closed", plugin=self.target.name)
        if self._failed is not None:
            raise PluginLoadError(self._failed, plugin=self.target.name)

    def _new_worker(self) -> Worker:
        """Start one worker (HELLO sent, READY not yet read): the hook a subclass overrides
        to pool another kind of worker.  Raise :class:`PluginError` if it cannot start.
        """
        return _ProcessWorker(self.target, self._max_message)

    def _spawn(self) -> Worker:
        """Start a worker in a slot reserved by incrementing ``_starting``."""
        try:
            w = self._new_worker()
        except BaseException:
            with self._lock:
                self._starting -= 1
                self._cond.notify()
            raise
        with self._lock:
            self._starting -= 1
            closed = self._closed
            if not closed:
                self._all.add(w)
        if closed:
            w.kill()
            self._check_usable()
        return w

    def _acquire(self, w: Worker | None = None) -> Worker:
        """A ready worker for this thread alone (``w``, if given, is one taken but not ready)."""
        while True:
            w = w or self._take()
            if w.ready or self._ensure_ready(w):
                return w
            w = None

    def _take(self) -> Worker:
        """An idle worker, a newly spawned one if there is room, or wait for one."""
        with self._lock:
            while True:
                if self._idle and self._failed is None and not self._closed:
                    return self._idle.pop()
                self._check_usable()
                if len(self._all) + self._starting < self._size:
                    self._starting += 1
                    break
                self._waiters += 1
                try:
                    self._cond.wait()
                finally:
                    self._waiters -= 1
        return self._spawn()

    def _try_take(self) -> Worker | None:
        """Like :meth:`_take`, but ``None`` rather than waiting."""
        with self._lock:
            self._check_usable()
            if self._idle:
                return self._idle.pop()
            if len(self._all) + self._starting >= self._size:
                return None
            self._starting += 1
        return self._spawn()

    def _ensure_ready(self, w: Worker) -> bool:
        """Finish ``w``'s handshake; ``False`` if it died starting (the caller may retry)."""
        try:
            reply = w.recv(max(self._timeout, MIN_START_TIMEOUT))
        except (EOFError, PluginError):
            kind, detail = ("timeout", "did not start in time") if w.timed_out else ("crashed", w.death_detail())
            self._discard(w, replace=False)
            return self._start_failed(kind, detail)
        except BaseException:
            self._discard(w, replace=False)
            raise
        if reply[0] == G.READY:
            w.ready = True
            self._impl_options = reply[1].get("impls") or {}
            with self._lock:
                self._start_failures = 0
            return True
        self._discard(w, replace=False)
        message, tb = f"cannot load plugin: {reply[2]}: {reply[3]}", reply[4]
        self._give_up(message)
        raise PluginLoadError(message, plugin=self.target.name, traceback=tb)

    def _give_up(self, reason: str) -> None:
        """Fail the plugin for good: every call from now on raises PluginLoadError(``reason``)."""
        with self._lock:
            self._failed = reason
            self._cond.notify_all()

    def _start_failed(self, kind: str, detail: str) -> bool:
        self.record_incident(kind, f"worker failed to start: {detail}")
        with self._lock:
            self._start_failures += 1
            failures = self._start_failures
            if failures >= MAX_START_FAILURES:
                self._failed = f"worker died while loading the plugin, {failures} times in a row ({detail})"
                self._cond.notify_all()
        self.log.warning("plugin %r: worker failed to start: %s", self.target.name, detail)
        self._check_usable()
        return False

    def _release(
        self, w: Worker, error: list[Any] | None = None, *, used: bool = True, hook: str | None = None
    ) -> None:
        """Give ``w`` back to the pool after a call of ``hook``, or retire it (recycling, MemoryError, watchdog)."""
        w.calls += used
        retire = (self._recycle_after and w.calls >= self._recycle_after) or (
            error is not None and error[1] == "resource" and error[2] == "MemoryError"
        )
        with self._lock:
            # Under the lock: the watchdog only kills workers that are not idle.
            if not (retire or w.timed_out or self._closed) and w in self._all:
                w.last_used = time.monotonic()
                self._idle.append(w)
                if self._waiters:
                    self._cond.notify()
                return
        self._discard(w, graceful=bool(retire) and not w.timed_out)

    def _discard(self, w: Worker, *, graceful: bool = False, replace: bool = True) -> None:
        """Remove ``w`` for good; start a replacement so the pool stays warm."""
        with self._lock:
            member = w in self._all
            self._all.discard(w)
            replace = replace and member and not self._closed and self._failed is None
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
            self.log.warning("plugin %r: could not start a worker: %s", self.target.name, exc)
            return
        with self._lock:
            self._idle.insert(0, new)  # its handshake completes on first use
            if self._waiters:
                self._cond.notify()

    # -- housekeeping (watchdog thread) ------------------------------------
    def _tick(self) -> float:
        """The watchdog's period: deadlines overrun by a twentieth at most, and an exited
        worker noticed within 0.25 s, for a few wake-ups a second when nothing happens."""
        ticks = [0.25, self._timeout / 20]
        if self._idle_timeout > 0:
            ticks.append(self._idle_timeout / 4)
        return max(0.01, min(ticks))

    def _housekeeping(self) -> None:
        """Kill workers past their deadline, or ended while their caller waits; shut down workers idle too long."""
        now = time.monotonic()
        with self._lock:
            idle = set(self._idle)
            busy = [w for w in self._all if w.deadline and w not in idle]
            late = [w for w in busy if now > w.deadline]
            for w in late:
                w.timed_out = True
            stale = []
            if self._idle_timeout > 0:
                stale = [w for w in self._idle if now - w.last_used >= self._idle_timeout]
                for w in stale:
                    self._idle.remove(w)
                    self._all.discard(w)
        for w in late:
            w.signal_kill()  # its caller reads EOF and reports the timeout
        for w in busy:
            # Ended, yet its caller still waits: children it forked hold the channel
            # open.  Killing the group closes it; the caller reports the crash.
            if w.deadline and not w.timed_out and w.exited():
                w.signal_kill()
        for w in stale:
            w.stop()

    # -- crossings -------------------------------------------------------
    def _hook_info(self, hook: str) -> _HookInfo:
        """How to convert ``hook``'s results (built once per hook)."""
        if hook not in self.target.hooks:
            raise PluginError(f"does not implement hook {hook!r}", plugin=self.target.name)
        tp = self.target.spec.types(hook)[1]
        item_tp = codec.item_type(tp)
        if item_tp is Any:
            info = _HookInfo(codec.converter(tp, hook=hook), None, codec.plain_types(tp))
        else:  # an iterator hook: items stream; a plain list answer is converted item by item
            item = codec.converter(item_tp, hook=hook)
            info = _HookInfo(None if item is None else _list_of(item), item)
        self._hooks[hook] = info
        return info

    def _batch_frame(self, hook: str, share: Sequence[tuple[Any, ...]]) -> bytes:
        try:
            return codec.encode_frame([G.BATCH, hook, share], self._max_message)
        except Exception as exc:
            raise self._encode_error(hook, exc, share) from None

    def _encode_error(self, hook: str, exc: Exception, arg_sets: Sequence[tuple[Any, ...]]) -> PluginError:
        """The error for a request that could not be encoded, naming the argument to blame."""
        if isinstance(exc, PluginResourceError):
            return PluginResourceError(f"hook {hook!r}: arguments: {exc.message}", plugin=self.target.name)
        names = self.target.hooks[hook]
        try:
            for args in arg_sets:
                codec.encode_args(args, names, hook)
        except CodecError as bad:
            bad.plugin = self.target.name
            return bad
        return CodecError(codec.describe_error(exc), plugin=self.target.name, hook=hook)

    def _reply(self, w: Worker, hook: str) -> Any:
        """``w``'s next message; channel failures become SDK errors.

        After any exception the worker is out of step and must be discarded.
        """
        try:
            return w.recv(self._timeout)
        except BaseException as exc:
            raise self._channel_error(w, hook, exc) from None

    def _channel_error(self, w: Worker, hook: str, exc: BaseException) -> BaseException:
        """The SDK error for a failure to talk to ``w`` (anything else is returned as is).

        ``w`` is discarded after this, so a failure that is the plugin's doing is recorded as an incident.
        """
        name = self.target.name
        error: PluginError
        if isinstance(exc, (EOFError, BrokenPipeError)):
            if self._closed:
                return PluginError(f"backend closed during hook {hook!r}", plugin=name)
            if w.timed_out:
                kind = "timeout"
                error = PluginTimeout(
                    f"hook {hook!r} timed out after {self._timeout:g}s; worker replaced",
                    plugin=name,
                    timeout=self._timeout,
                )
            else:
                detail = w.death_detail()
                kind = "crashed"
                error = PluginCrashed(
                    f"worker crashed during hook {hook!r} ({detail}); worker replaced", plugin=name, detail=detail
                )
        elif isinstance(exc, PluginResourceError):
            kind, error = "resource", PluginResourceError(f"hook {hook!r}: reply: {exc.message}", plugin=name)
        elif isinstance(exc, CodecError):  # bytes that are no message: the channel is out of step
            kind, error = "replaced", CodecError(exc.message, plugin=name, hook=hook, argument="return value")
        else:
            return exc
        self.record_incident(kind, error.message, hook)
        return error

    def _error(self, hook: str, reply: list[Any]) -> PluginError:
        """The SDK exception for an ``ERR`` reply; a resource cap hit is recorded as an incident.

        A hook that raised, or a value that cannot cross, is the caller's to
        handle and leaves the worker sound: not an incident.
        """
        _, kind, exc_type, message, tb, index, argument = (list(reply) + [None] * 7)[:7]
        name = self.target.name
        where = f" (batch item {index})" if index is not None else ""
        err: PluginError
        if kind == "hook":
            err = PluginHookError(
                plugin=name, hook=hook, exc_type=exc_type, exc_message=message, traceback=tb, index=index
            )
        elif kind == "codec":
            err = CodecError(
                message, plugin=name, hook=hook, argument=f"{argument or 'return value'}{where}", index=index
            )
        elif kind == "resource":
            if exc_type == "MemoryError":
                message = f"out of memory (the worker's cap is {self.target.limits.memory_mb} MiB) {message}"
            err = PluginResourceError(f"hook {hook!r}{where}: {exc_type}: {message.strip()}", plugin=name, index=index)
            self.record_incident("resource", err.message, hook)
        else:
            err = PluginError(f"hook {hook!r}{where}: {exc_type}: {message}", plugin=name)
        return err

    def _run_batch(
        self, hook: str, workers: list[Worker], frames: list[bytes], parts: list[tuple[int, int]]
    ) -> list[Any]:
        """Send every share, then collect replies in order (every channel stays in step)."""
        for w, frame in zip(workers, frames):
            try:
                w.send(frame)
            except BrokenPipeError:
                pass  # the worker is dead: reading its reply reports it
        values: list[Any] = []
        first_error: BaseException | None = None
        for w, (start, _) in zip(workers, parts):
            try:
                reply = self._reply(w, hook)
            except BaseException as exc:
                self._discard(w)
                first_error = first_error or exc
                continue
            if reply[0] == G.OK:
                self._release(w, hook=hook)
                values.extend(reply[1])
                continue
            self._release(w, error=reply, hook=hook)
            if len(reply) > 5 and reply[5] is not None:
                reply[5] += start  # index within the whole batch
            error = self._error(hook, reply)  # always: it records a cap hit as an incident
            first_error = first_error or error
        if first_error is not None:
            raise first_error
        info = self._hooks[hook]
        if info.convert is None or {type(v) for v in values} <= info.plain:
            return values
        return [info.convert(v) for v in values]

    def _stream(
        self, w: Worker | None, hook: str, reply: list[Any], item: Callable[[Any], Any] | None
    ) -> Generator[Any, None, None]:
        """Items of a streamed result as they arrive; holds ``w`` until the stream ends.

        Its first ``next()`` yields a placeholder (see :meth:`call`), so that
        a stream dropped unread still gives its worker back.
        """
        owed = reply[0] == G.CHUNK  # the worker waits for MORE or CANCEL
        more_sent = False  # the worker is producing the next chunk
        try:
            yield None
            while w is not None:
                kind = reply[0]
                if kind == G.ERR:
                    self._release(w, error=reply, hook=hook)
                    w = None
                    raise self._error(hook, reply)
                if kind == G.CHUNK:
                    # Ask for the next chunk now, so the worker fills it while we hand these out.
                    try:
                        w.send(codec.encode_frame([G.MORE]))
                    except BrokenPipeError:
                        pass  # the worker died: reading its next reply reports the crash
                    owed, more_sent = False, True
                yield from reply[1] if item is None else map(item, reply[1])
                if kind == G.END:
                    self._release(w, hook=hook)
                    w = None
                    return
                reply = self._reply(w, hook)
                owed, more_sent = reply[0] == G.CHUNK, False
        except GeneratorExit:
            if w is not None:
                self._cancel_stream(w, hook, owed, more_sent)
            raise
        except BaseException:
            if w is not None:
                self._discard(w)
            raise

    def _cancel_stream(self, w: Worker, hook: str, owed: bool, more_sent: bool) -> None:
        """The consumer stopped early: tell the worker, or replace it if it won't listen."""
        try:
            if more_sent:  # let the chunk in production arrive first
                owed = self._reply(w, hook)[0] == G.CHUNK
            if owed and self._reply_to(w, hook, [G.CANCEL])[0] != G.END:
                message = f"hook {hook!r}: unexpected reply to CANCEL; worker replaced"
                self.record_incident("replaced", message, hook)
                raise PluginError(message, plugin=self.target.name)
            self._release(w, hook=hook)
        except BaseException:
            self._discard(w)

    def _reply_to(self, w: Worker, hook: str, msg: list[Any]) -> Any:
        w.send(codec.encode_frame(msg))
        return self._reply(w, hook)


def _list_of(item: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: [item(x) for x in v] if isinstance(v, list) else v


def _split(n: int, k: int) -> list[tuple[int, int]]:
    """``n`` items in ``k`` contiguous, near-equal parts, as (start, stop)."""
    base, extra = divmod(n, k)
    bounds, start = [], 0
    for i in range(k):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _watch(ref: weakref.ref[ProcessBackend], tick: float) -> None:
    """The watchdog: deadlines and idle shutdown, until the backend closes or goes away."""
    while True:
        backend = ref()
        if backend is None or backend._closed:
            return
        try:
            backend._housekeeping()
        except Exception:  # a watchdog that died would leave every deadline unenforced
            backend.log.exception("plugin %r: watchdog error", backend.target.name)
        del backend  # hold no reference while sleeping
        time.sleep(tick)
