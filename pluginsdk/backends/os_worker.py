"""The OS-process kind of worker: a fresh interpreter serving the plugin over two private pipes.

Each worker is ``python -I -u -c <boot> R W MEM FILES`` running
:mod:`pluginsdk.guest.worker`: it imports the plugin once, then serves calls
over two private pipes (fds ``R``/``W``, length-prefixed msgpack frames, see
:mod:`pluginsdk.codec`).  Its stdout and stderr are separate pipes whose
lines go to the logger ``pluginsdk.plugin.NAME``, so nothing a plugin prints
can reach the channel.

Start method: ``subprocess.Popen`` of a fresh interpreter (vfork + exec),
not ``fork``.  Forking a host that has threads (a WASM backend, a web
server, our own output pumps) copies locks held by other threads and can
deadlock the child; ``forkserver`` would be safe but brings multiprocessing's
pickling machinery and a server process of its own, for no gain over
exec'ing an interpreter directly (~40-60 ms a worker here, paid once, off
the call path).  ``-I`` keeps the host's ``PYTHON*`` variables and user site
out; the host's ``sys.path`` (or ``BackendOptions.sys_path``) is put in front of
the worker's so it sees what the host sees.  ``BackendOptions.python`` overrides
the interpreter (default ``sys.executable``); a plugin with a private
environment runs that environment's interpreter with ``host_path=False``: only
its view of the plugin and the SDK in front, the guest's support libraries
behind (``sys_path_tail``), never the host's site-packages (:mod:`pluginsdk.envs`).  Workers get a new session so
a terminal's Ctrl-C reaches only the host.

Ending a worker: on Linux the process started is a supervisor (see
:mod:`pluginsdk.guest.worker`) that kills everything the plugin started, by
any route, when the worker ends or when asked (``SIGTERM``); the host then
also kills the process group, which is all there is elsewhere.  A worker
exits when its channel closes (host exit or crash), unless it is stuck in
plugin code: the host kills its workers at exit (``weakref.finalize``).

Memory: ``limits.memory_mb`` is applied in the worker as RLIMIT_AS before the
plugin is imported.  It caps *address space* (heap, thread stacks, mmaps,
shared libraries: the bare worker maps ~30 MiB), not resident memory, and
each process: a plugin's forked children get a cap each.
"""

from __future__ import annotations

import functools
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .. import codec
from .._errors import exit_text
from ..config import BackendOptions, Limits
from ..guest import protocol as P
from .base import PluginTarget
from .worker import Worker

__all__ = ["ProcessWorker"]

#: Seconds a worker gets to exit after BYE before it is killed.
EXIT_GRACE = 2.0
#: Seconds the supervisor gets to kill what the plugin started before the group is killed.
SWEEP_GRACE = 2.5
#: stderr lines kept per worker, quoted when it dies.
STDERR_TAIL = 10

_write = os.write
_encode_frame = codec.encode_frame
_PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The worker's first line: the host's path first (``-I`` dropped PYTHONPATH), any tail after, then the loop.
_BOOT = (
    "import sys;sys.path[:0]=[p for p in {path!r} if p not in sys.path];"
    "sys.path+=[p for p in {tail!r} if p not in sys.path];"
    "from pluginsdk.guest.worker import main;sys.exit(main())"
)


class ProcessWorker(Worker):
    """One worker process and the host's end of its channel."""

    def __init__(
        self,
        target: PluginTarget,
        options: BackendOptions,
        limits: Limits,
        max_message: int,
        hello: Callable[[Sequence[str]], dict[str, Any]],
    ) -> None:
        super().__init__()
        self.plugin = target.name
        if options.host_path:
            path = _unique([target.path_entry, *(options.sys_path or sys.path), _PKG_ROOT])
        else:  # a private environment: its own path, plus only what the host put in sys_path (pluginsdk.envs)
            path = _unique(options.sys_path or ())
        tail = _unique(options.sys_path_tail)
        python = options.python or sys.executable
        to_guest_r, self.wfd = os.pipe()
        self._rfd, to_host_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [
                    python,
                    "-I",
                    "-u",
                    "-c",
                    _BOOT.format(path=path, tail=tail),
                    str(to_guest_r),
                    str(to_host_w),
                    str(limits.memory_mb or 0),  # None only for a cap switched off by the host's own code
                    str(limits.open_files or 0),
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
        self._supervised = sys.platform.startswith("linux")  # see pluginsdk.guest.worker
        self._max_message = max_message
        # Plain blocking reads: the watchdog enforces deadlines by killing the
        # worker (EOF), which keeps poll() off every call's path.
        self.reader = codec.FrameReader(functools.partial(os.read, self._rfd), max_message)
        # recv() and surplus() bound straight to the reader: one Python call less each, on every call's path.
        self.recv = self.reader.read  # type: ignore[method-assign]
        self.surplus = self.reader.pending  # type: ignore[method-assign]
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self._closed = False
        self._pump = threading.Thread(
            target=_pump_output,
            args=(self.proc, logging.getLogger(f"pluginsdk.plugin.{self.plugin}"), self.stderr_tail, self.plugin),
            name=f"pluginsdk-{self.plugin}-output-{self.pid}",
            daemon=True,
        )
        self._pump.start()
        # Fits in the pipe buffer: the worker reads it once its interpreter is up.
        try:
            self._write_frame(_encode_frame([P.HELLO, hello(path)]))
        except BrokenPipeError:
            pass  # died at once: the handshake read reports it

    # -- channel ---------------------------------------------------------
    def send(self, msg: list[Any]) -> None:
        frame = _encode_frame(msg, self._max_message)
        n = _write(self.wfd, frame)  # _write_frame, inline: every call passes here
        if n < len(frame):
            self._write_rest(frame, n)

    def _write_frame(self, frame: bytes) -> None:
        n = _write(self.wfd, frame)
        if n < len(frame):
            self._write_rest(frame, n)

    def _write_rest(self, frame: bytes, n: int) -> None:
        view = memoryview(frame)[n:]  # big frames go in pieces
        while view:
            view = view[_write(self.wfd, view) :]

    def recv(self) -> Any:
        return self.reader.read()

    def surplus(self) -> bool:
        return self.reader.pending()

    def channel_fd(self) -> int | None:
        return None if self._closed else self._rfd

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
        self._pump.join(0.5)  # let the last stderr lines in
        return exit_text(code, self.stderr_tail)

    def signal_kill(self) -> None:
        """End the worker and everything it started, from any thread.

        The supervisor (Linux) is asked first, since only it can reach processes
        that left the group; then the group is killed, whatever the answer.
        """
        if self.proc.returncode is not None:  # reaped: the pid may belong to a stranger now
            return
        if self._supervised and not self._exited(0):
            try:
                os.kill(self.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            else:
                self._exited(SWEEP_GRACE)
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
                self.send([P.BYE])
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


def _pump_output(proc: subprocess.Popen[bytes], log: logging.Logger, tail: deque[str], plugin: str) -> None:
    """Forward a worker's stdout (INFO) and stderr (WARNING) to ``log``, line by line.

    Each line's message starts with ``[plugin]``, so it says whose it is
    wherever it is shown (Python's last-resort handler shows messages only).
    """
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
                    log.log(level, "[%s] %s", plugin, line, extra={"plugin": plugin, "plugin_stream": stream})
    finally:
        sel.close()
        proc.stdout.close()
        proc.stderr.close()
