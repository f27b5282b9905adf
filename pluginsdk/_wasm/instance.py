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

* stdin: the host writes msgpack frames (large ones as marshal, see Instance.send);
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
wake-up pipe the instance thread writes when the guest ends.
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
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .. import codec
from ..backends.process import Worker
from .cache import Sandbox, engine_config, load_module, mark_used
from .gate import OpenFiles, instantiate
from .guest_main import MARSHAL_MARK

__all__ = ["Instance", "Mounts", "run_program"]

#: Seconds the host spins on a reply before sleeping in poll().
DEFAULT_SPIN = 0.0005
#: Host frames larger than this (bytes) go to the guest as marshal (see Instance.send).
MARSHAL_ABOVE = 512
#: stderr lines kept per instance, quoted when it dies.
STDERR_TAIL = 10
#: Seconds to wait for an instance's thread to end after asking it to.
EXIT_GRACE = 2.0
_BASE_ARGV = ["python", "-I", "-S", "-B"]
_ENV = [("MSGPACK_PUREPYTHON", "1")]  # skips the C-extension attempt

_live: set[Instance] = set()
_exiting = False
_live_lock = threading.Lock()


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


class _Output:
    """Line-buffers what the guest writes to stderr into a logger (and a tail for crash reports)."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self._buf = bytearray()

    def __call__(self, data: bytes) -> None:
        self._buf += data
        while b"\n" in self._buf or len(self._buf) > 65536:
            cut = self._buf.find(b"\n")
            end = cut + 1 if cut >= 0 else 65536
            line = self._buf[: end if cut < 0 else cut].decode("utf-8", "replace")
            del self._buf[:end]
            if line.startswith("\x01"):  # the plugin's print(), see guest_main
                self.log.info("%s", line[1:], extra={"plugin_stream": "stdout"})
            else:
                self.tail.append(line)
                self.log.warning("%s", line, extra={"plugin_stream": "stderr"})


def _new_store(sandbox: Sandbox, memory_mb: int) -> tuple[Any, Any, Any, Any]:
    import wasmtime

    engine = wasmtime.Engine(engine_config())
    module = load_module(engine, sandbox)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(1)  # traps as soon as the engine's epoch moves: see module doc
    if memory_mb > 0:
        store.set_limits(memory_size=memory_mb * 2**20)
    return engine, module, linker, store


def _wasi_config(
    sandbox: Sandbox, argv: Sequence[str], dirs: Sequence[tuple[str, str]], *, writable_pycache: bool
) -> Any:
    import wasmtime

    wasi = wasmtime.WasiConfig()
    wasi.argv = list(argv)
    wasi.env = _ENV  # nothing of the host's environment
    wasi.preopen_dir(str(sandbox.lib_dir), "/lib", False)
    wasi.preopen_dir(str(sandbox.pycache_dir), "/pycache", writable_pycache)
    for host, guest in dirs:
        wasi.preopen_dir(host, guest, False)
    return wasi


def _outcome(exc: BaseException | None) -> str:
    import wasmtime

    if exc is None:
        return "exited"
    if isinstance(exc, wasmtime.ExitTrap):
        return f"exit code {exc.code}"
    # wasmtime's text is a backtrace, then "Caused by:" and the reason: keep the reason.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = next((line for line in reversed(lines) if "trap" in line.lower()), lines[-1] if lines else "")
    return f"trap: {reason or type(exc).__name__}"


def run_program(sandbox: Sandbox, args: Sequence[str], *, writable_pycache: bool = False) -> int:
    """Run the interpreter on ``args`` to completion on this thread; its exit status.

    Used for the bytecode warm-up (no plugin code, no channel).
    """
    import wasmtime

    engine, module, linker, store = _new_store(sandbox, 0)
    argv = ["python", "-I", "-S", *args]
    wasi = _wasi_config(sandbox, argv, (), writable_pycache=writable_pycache)
    # A file, not a *_custom callback: wasmtime calls those from its own
    # threads, and one arriving while the host interpreter exits aborts it.
    with tempfile.TemporaryDirectory(prefix="pluginsdk-wasm-") as tmp:
        output = os.path.join(tmp, "output")
        wasi.stdout_file = output
        wasi.stderr_file = output
        store.set_wasi(wasi)
        files = OpenFiles(0)
        try:
            instantiate(engine, linker, store, module, files).exports(store)["_start"](store)
            status = 0
        except wasmtime.ExitTrap as exc:
            status = int(exc.code)
        finally:
            store.close()
            files.release_all()
        if status:
            with open(output, "rb") as f:
                _Output(logging.getLogger("pluginsdk.wasm"))(f.read()[-4096:] + b"\n")
    return status


class Instance(Worker):
    """One running sandbox serving one plugin: a worker of the process backend's pool.

    Used by one thread at a time (the pool hands it out exclusively), apart
    from the watchdog, which may call :meth:`signal_kill` once ``deadline`` passes.
    """

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
        self._output = _Output(log)
        self.files = OpenFiles(open_files)
        mark_used(sandbox)  # a long-running host keeps its cache entries from being pruned
        self._engine, self._module, self._linker, self._store = _new_store(sandbox, memory_mb)
        self._fd_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._wfd = self._rfd = self._efd = -1
        try:
            spec = [f"p:{k}={v}" for k, v in mounts.packages.items()] + [
                f"m:{k}={v}" for k, v in mounts.modules.items()
            ]
            argv = [*_BASE_ARGV, f"/lib/{_guest_main()}", "|".join(spec)]
            wasi = _wasi_config(sandbox, argv, mounts.dirs, writable_pycache=False)
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
        self._thread = threading.Thread(target=self._run, args=(start,), name="pluginsdk-wasm", daemon=True)
        # stderr is read by a thread of ours: a wasmtime *_custom callback runs
        # on wasmtime's threads, and one arriving while the interpreter exits aborts it.
        self._pump = threading.Thread(
            target=_pump, args=(self._efd, self._output), name="pluginsdk-wasm-stderr", daemon=True
        )
        self._efd = -1  # the pump owns it now
        with _live_lock:
            _live.add(self)
        self._pump.start()
        self._thread.start()
        self.send(codec.encode_frame([0, hello]))  # HELLO; fits in the FIFO's buffer

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

    def send(self, frame: bytes) -> None:
        """Send one frame; a dead guest is reported by the next read, not here.

        Large frames (batches) are re-encoded as marshal, which the guest
        decodes ~7x faster than msgpack in pure Python (0.6 against 4.4 µs a
        batch item); it trusts its host.  Small frames are not worth it.
        """
        if len(frame) > MARSHAL_ABOVE:
            body = MARSHAL_MARK + marshal.dumps(codec.decode(memoryview(frame)[4:]))
            if len(body) <= self._max_message:
                frame = codec.HEADER.pack(len(body)) + body
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
            wait_ms: int | None = None
            if self.deadline:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    self.timed_out = True
                    self.signal_kill()
                    return b""
                wait_ms = max(1, int(left * 1000) + 1)
            poller.poll(wait_ms)
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
        self._exit = _outcome(error)
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
        how = self._exit or "did not end"
        if self._killed and self.timed_out:
            how = "stopped at its deadline"
        elif _exiting:
            how = "stopped because the host process is exiting"
        tail = " | ".join(self._output.tail)
        return f"{how}; stderr: {tail}" if tail else how

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
            self.send(codec.encode_frame([5]))  # BYE
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
        with _live_lock:
            _live.discard(self)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def _pump(fd: int, output: _Output) -> None:
    """Feed what the guest writes to stderr to ``output`` until the guest ends (EOF)."""
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                return
            output(data)
    except OSError:
        return
    finally:
        os.close(fd)


def _guest_main() -> str:
    from .cache import GUEST_MAIN

    return GUEST_MAIN


def stop_all() -> None:
    """Stop every instance still running (called at interpreter exit)."""
    global _exiting
    _exiting = True
    with _live_lock:
        live = list(_live)
    for inst in live:
        inst.signal_kill()
    for inst in live:
        inst._finish(EXIT_GRACE)


import atexit  # noqa: E402  (registered once this module is in use)

atexit.register(stop_all)
