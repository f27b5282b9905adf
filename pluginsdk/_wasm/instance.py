"""One sandbox instance: CPython on WASI in wasmtime, inside the host process.

Each instance has its own ``Engine`` (sharing the mmapped compiled module
costs <1 ms), so a per-call deadline is free: the store's epoch deadline is
one tick, and the engine's epoch is only ever incremented to stop *this*
instance (a timeout, or shutdown).  A shared engine would trap every
instance at once, or need a deadline re-armed before each call from the
thread that runs the guest.

The instance runs ``_start`` on a thread of its own; the guest loop blocks
reading requests from its stdin.  The channel is two FIFOs, created in a
private temporary directory and unlinked once both ends are open:

* stdin: the host writes msgpack frames (batches as marshal, see Instance.send);
* stdout: the guest writes msgpack frames, read by the host with
  :class:`pluginsdk.codec.FrameReader` (size-limited, safe decoding);
* stderr: read by a thread of ours into the plugin's logger.

Descriptors: every file the guest opens is a descriptor of the host
process; :mod:`.gate` counts them per instance (``Instance.files``) and
refuses an open past the cap with ``EMFILE``.  It also takes the guest's
sleeps, so that a stopped instance ends at once even when asleep.

The host reads non-blocking: it spins for up to 500 µs (a tiny call
answers in ~80 µs, and waking a sleeping thread costs about that again on a
busy 2-core machine), then sleeps in ``poll`` on the reply FIFO and a
wake-up pipe, written when the guest ends or is stopped.  Deadlines are the
pool's (see :class:`pluginsdk.backends.worker.Worker`): its watchdog stops an
instance that overruns, which ends the read.
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

import attrs

from .. import codec
from ..backends.worker import Worker
from ..guest import protocol as P
from ..guest.fastcodec import MARSHAL_MARK
from .cache import GUEST_MAIN, Sandbox, mark_used
from .gate import OpenFiles, instantiate
from .store import BASE_ARGV, LiveInstances, Output, new_store, outcome, pump, wasi_config

__all__ = ["Instance", "Mounts"]

#: Seconds the host spins on a reply before sleeping in poll().
DEFAULT_SPIN = 0.0005
#: Host frames larger than this (bytes) go to the guest as marshal (see Instance.send).
MARSHAL_ABOVE = 512
_encode_frame = codec.encode_frame
#: Seconds to wait for an instance's thread to end after asking it to.
EXIT_GRACE = 2.0

_live: LiveInstances[Instance] = LiveInstances()


@attrs.frozen
class Mounts:
    """Host directories an instance sees, read-only, beyond the guest libraries.

    Attributes:
        dirs: ``(host_dir, guest_dir)`` pairs.
        packages: Top-level package name -> guest directory (found by the guest's finder).
        modules: Top-level module name -> guest file.
        sys_path: Guest directories to put on ``sys.path``.
    """

    dirs: tuple[tuple[str, str], ...] = ()
    packages: Mapping[str, str] = attrs.field(factory=dict)
    modules: Mapping[str, str] = attrs.field(factory=dict)
    sys_path: tuple[str, ...] = ()


class Instance(Worker):
    """One running sandbox serving one plugin: the sandbox kind of :class:`Worker`."""

    def __init__(
        self,
        sandbox: Sandbox,
        hello: dict[str, Any],
        mounts: Mounts,
        *,
        max_message: int,
        memory_mb: int,
        open_files: int = 0,
        log: logging.Logger,
        spin: float = DEFAULT_SPIN,
    ) -> None:
        super().__init__()
        self._spin = spin
        self._max_message = max_message
        self._closed = False
        self._killed = False
        self._exit: str | None = None
        self._output = Output(log)
        self.files = OpenFiles(open_files)
        mark_used(sandbox)  # a long-running host keeps its cache entries from being pruned
        self._engine, self._module, self._linker, self._store = new_store(sandbox, memory_mb)
        self._fd_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._wfd = self._rfd = self._efd = -1
        try:
            spec = [f"p:{k}={v}" for k, v in mounts.packages.items()] + [
                f"m:{k}={v}" for k, v in mounts.modules.items()
            ]
            argv = [*BASE_ARGV, f"/lib/{GUEST_MAIN}", "|".join(spec)]
            wasi = wasi_config(sandbox, argv, mounts.dirs, writable_pycache=False)
            self._open_channel(wasi)
            self._store.set_wasi(wasi)
            instance = instantiate(
                self._engine, self._linker, self._store, self._module, self.files, lambda: self._killed
            )
            start = instance.exports(self._store)["_start"]
        except BaseException:
            self._close_fds()
            self._store.close()
            self.files.release_all()
            raise
        self.pid = id(self)  # for log messages shared with the process backend
        self.reader = codec.FrameReader(self._read, max_message)
        # recv() and surplus() bound straight to the reader: one Python call less each, on every call's path.
        self.recv = self.reader.read  # type: ignore[method-assign]
        self.surplus = self.reader.pending  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._run, args=(start,), name="pluginsdk-wasm", daemon=True)
        # stderr is read by a thread of ours: a wasmtime *_custom callback runs
        # on wasmtime's threads, and one arriving while the interpreter exits aborts it.
        self._pump = threading.Thread(
            target=pump, args=(self._efd, self._output), name="pluginsdk-wasm-stderr", daemon=True
        )
        self._efd = -1  # the pump owns it now
        _live.add(self)
        self._pump.start()
        self._thread.start()
        self._write_frame(_encode_frame([P.HELLO, hello]))  # fits in the FIFO's buffer

    # -- channel -------------------------------------------------------------
    def _open_channel(self, wasi: Any) -> None:
        """FIFOs as the guest's stdin/stdout, opened so that no open() blocks, then unlinked."""
        tmp = tempfile.mkdtemp(prefix="pluginsdk-wasm-")
        try:
            to_guest, to_host, errors = (os.path.join(tmp, n) for n in ("in", "out", "err"))
            for path in (to_guest, to_host, errors):
                os.mkfifo(path, 0o600)
            # A reader must exist before a non-blocking writer may open, and the
            # other way round for wasmtime's blocking opens.
            placeholder = os.open(to_guest, os.O_RDONLY | os.O_NONBLOCK)
            try:
                self._wfd = os.open(to_guest, os.O_WRONLY | os.O_NONBLOCK)
                self._rfd = os.open(to_host, os.O_RDONLY | os.O_NONBLOCK)
                self._efd = os.open(errors, os.O_RDONLY | os.O_NONBLOCK)
                wasi.stdin_file = to_guest
                wasi.stdout_file = to_host
                wasi.stderr_file = errors
            finally:
                os.close(placeholder)
            os.set_blocking(self._wfd, True)
            os.set_blocking(self._efd, True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def send(self, msg: list[Any]) -> None:
        """Encode and send one request; a dead guest is reported by the next read, not here.

        Large frames (batches) are re-encoded as marshal, which the guest
        decodes ~7x faster than msgpack in pure Python (0.6 against 4.4 µs a
        batch item); it trusts its host.  msgpack is encoded first all the
        same: it decides what may cross, and its round trip (in C) is the
        value contract's normalisation, so values arrive as they would in a
        worker process.  Checking and normalising each value in Python on the
        way to a single marshal pass was measured slower on the host (0.38
        against 0.21 µs an item, 1,000 one-string items).
        """
        frame = _encode_frame(msg, self._max_message)
        if len(frame) > MARSHAL_ABOVE:
            body = MARSHAL_MARK + marshal.dumps(codec.decode(memoryview(frame)[4:]))
            if len(body) <= self._max_message:
                frame = codec.HEADER.pack(len(body)) + body
        self._write_frame(frame)

    def _write_frame(self, frame: bytes) -> None:
        # Under the lock: signal_kill() (the watchdog's thread) closes this fd.
        with self._fd_lock:
            if self._wfd < 0:
                return
            try:
                n = os.write(self._wfd, frame)
                if n < len(frame):
                    view = memoryview(frame)[n:]
                    while view:
                        view = view[os.write(self._wfd, view) :]
            except OSError:  # BrokenPipeError included: the guest is gone
                pass

    def recv(self) -> Any:
        return self.reader.read()

    def surplus(self) -> bool:
        return self.reader.pending()

    def retire_reason(self) -> str | None:
        """An instance refused a descriptor is replaced: that hands back what a leaking plugin holds.

        Its files are host descriptors (see :mod:`pluginsdk._wasm.gate`).
        """
        files = self.files
        if not files.refused:
            return None
        cap = f"its cap of {files.limit}" if files.refused_by == "cap" else "the host's budget"
        return (
            f"opened more files than {cap} allows ({files.held} held, {files.refused} refused with EMFILE);"
            " the instance was replaced"
        )

    def _read(self, n: int) -> bytes:
        fd = self._rfd
        try:
            return os.read(fd, n)
        except BlockingIOError:
            pass
        spin_until = time.perf_counter() + self._spin
        while time.perf_counter() < spin_until:
            try:
                return os.read(fd, n)
            except BlockingIOError:
                pass
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            if self._exit is not None or self._killed:
                try:  # what the guest wrote before it ended still counts
                    return os.read(fd, n)
                except (BlockingIOError, OSError):
                    return b""
            poller.poll()  # the guest's end, or signal_kill(), writes the wake-up pipe
            try:
                return os.read(fd, n)
            except BlockingIOError:
                pass

    # -- lifecycle -----------------------------------------------------------
    def _run(self, start: Any) -> None:
        error: BaseException | None = None
        try:
            start(self._store)
        except Exception as exc:  # ExitTrap, Trap, WasmtimeError: how the guest ended
            error = exc
        self._exit = outcome(error)
        # The exception's traceback holds this frame, and with it ``start`` and the
        # store: break the cycle so a closed instance is freed now, not at the next GC.
        del error, start
        with self._fd_lock:  # the host may have closed (and the OS reused) the fd already
            if self._wake_w >= 0:
                os.write(self._wake_w, b"x")
        # Nothing runs in the store any more: free its memory (and descriptors) now, not at GC.
        try:
            self._store.close()
            self._linker.close()
            self._module.close()
        finally:
            self.files.release_all()

    def death_detail(self) -> str:
        """How the guest ended (waits briefly for it to)."""
        self._thread.join(EXIT_GRACE)
        self._pump.join(0.5)  # its last stderr lines
        at_deadline = self._killed and self.timed_out
        return self._output.ending(self._exit or "", at_deadline=at_deadline, host_exiting=_live.exiting)

    def signal_kill(self) -> None:
        """Stop the guest: trap its running code, and end its input (for a blocked read)."""
        if self._killed:
            return
        self._killed = True
        self._engine.increment_epoch()
        with self._fd_lock:
            if self._wfd >= 0:
                os.close(self._wfd)
            self._wfd = -1
            if self._wake_w >= 0:  # a reader asleep in poll() wakes now, whatever the guest is doing
                os.write(self._wake_w, b"k")

    def kill(self) -> None:
        """Stop the guest and release everything it holds.

        Running wasm traps at once, and so does a sleeping guest (the gate
        sleeps for it in slices); a guest blocked in another host call is
        not waited for: its thread ends when that call returns.
        """
        self.signal_kill()
        self._finish(0.05)

    def stop(self) -> None:
        """Ask the guest to exit (BYE), stopping it if it does not."""
        if not self._closed and self._exit is None and not self._killed:
            self.send([P.BYE])
            self._thread.join(EXIT_GRACE)
        self.kill()

    def _close_fds(self) -> None:
        with self._fd_lock:
            for fd in (self._wfd, self._rfd, self._efd, self._wake_r, self._wake_w):
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._wfd = self._rfd = self._efd = self._wake_r = self._wake_w = -1

    def _finish(self, grace: float) -> None:
        if self._closed:
            return
        self._closed = True
        # A guest blocked in a host call other than a sleep cannot be
        # interrupted; its thread ends when the call returns and traps.
        self._thread.join(grace)
        self._close_fds()
        _live.discard(self)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def stop_all() -> None:
    """Stop every instance still running (called at interpreter exit)."""
    for inst in _live.stop_all():
        inst._finish(EXIT_GRACE)


import atexit  # noqa: E402  (registered once this module is in use)

atexit.register(stop_all)
