"""A wasmtime store running the sandbox interpreter: what an instance and a one-off program share.

Also :func:`run_program`, which runs the interpreter to completion with no
channel and no plugin (the bytecode warm-up of :mod:`.setup`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from .cache import Sandbox, engine_config, load_module
from .gate import OpenFiles, instantiate

__all__ = ["BASE_ARGV", "LiveInstances", "Output", "new_store", "outcome", "pump", "run_program", "wasi_config"]

#: stderr lines kept per instance, quoted when it dies.
STDERR_TAIL = 10
BASE_ARGV = ["python", "-I", "-S", "-B"]
_ENV = [("MSGPACK_PUREPYTHON", "1")]  # skips the C-extension attempt


class Output:
    """Line-buffers what the guest writes to stderr into a logger (and a tail for crash reports)."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        # A plugin's logger is pluginsdk.plugin.NAME: each line also names it, for handlers that show only messages.
        name = log.name.partition("pluginsdk.plugin.")[2]
        self._prefix = f"[{name}] " if name else ""
        self._extra = {"plugin": name} if name else {}
        self.tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self._buf = bytearray()

    def __call__(self, data: bytes) -> None:
        self._buf += data
        while b"\n" in self._buf or len(self._buf) > 65536:
            cut = self._buf.find(b"\n")
            end = cut + 1 if cut >= 0 else 65536
            line = self._buf[: end if cut < 0 else cut].decode("utf-8", "replace")
            del self._buf[:end]
            if line.startswith("\x01"):  # the plugin's print(), see pluginsdk.guest.sandbox
                self.log.info("%s%s", self._prefix, line[1:], extra={**self._extra, "plugin_stream": "stdout"})
            else:
                self.tail.append(line)
                self.log.warning("%s%s", self._prefix, line, extra={**self._extra, "plugin_stream": "stderr"})

    def ending(self, ended: str, *, at_deadline: bool, host_exiting: bool) -> str:
        """How the instance ended (``ended``: what its thread saw, if anything), with its last stderr lines."""
        how = ended or "did not end"
        if at_deadline:
            how = "stopped at its deadline"
        elif host_exiting:
            how = "stopped because the host process is exiting"
        tail = " | ".join(self.tail)
        return f"{how}; stderr: {tail}" if tail else how


class _Stoppable(Protocol):
    def signal_kill(self) -> None: ...


_I = TypeVar("_I", bound=_Stoppable)


class LiveInstances(Generic[_I]):
    """One kind's sandbox instances still running, so that the host's exit stops them (their exports trap)."""

    def __init__(self) -> None:
        self._items: set[_I] = set()
        self._lock = threading.Lock()
        self.exiting = False  # the host process is exiting: what a stopped instance's error says

    def add(self, instance: _I) -> None:
        with self._lock:
            self._items.add(instance)

    def discard(self, instance: _I) -> None:
        with self._lock:
            self._items.discard(instance)

    def stop_all(self) -> list[_I]:
        """Stop every instance still running (at interpreter exit); the instances stopped."""
        self.exiting = True
        with self._lock:
            live = list(self._items)
        for instance in live:
            instance.signal_kill()
        return live


def new_store(sandbox: Sandbox, memory_mb: int) -> tuple[Any, Any, Any, Any]:
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


def wasi_config(
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


def outcome(exc: BaseException | None) -> str:
    import wasmtime

    if exc is None:
        return "exited"
    if isinstance(exc, wasmtime.ExitTrap):
        return f"exit code {exc.code}"
    # wasmtime's text is a backtrace, then "Caused by:" and the reason: keep the reason.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = next((line for line in reversed(lines) if "trap" in line.lower()), lines[-1] if lines else "")
    return f"trap: {reason or type(exc).__name__}"


def run_program(
    sandbox: Sandbox,
    args: Sequence[str],
    *,
    writable_pycache: bool = False,
    dirs: Sequence[tuple[str, str]] = (),
    writable: Sequence[tuple[str, str]] = (),
) -> int:
    """Run the interpreter on ``args`` to completion on this thread; its exit status (-1: it trapped).

    Used for bytecode warm-ups (no plugin code, no channel): ``dirs`` are
    mounted read-only and ``writable`` writable, as ``(host, guest)`` pairs.
    What the program printed is logged when it fails.
    """
    import wasmtime

    engine, module, linker, store = new_store(sandbox, 0)
    argv = ["python", "-I", "-S", *args]
    wasi = wasi_config(sandbox, argv, dirs, writable_pycache=writable_pycache)
    for host, guest in writable:
        wasi.preopen_dir(host, guest, True)
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
        except wasmtime.WasmtimeError as exc:  # a trap: the program did not end on its own
            logging.getLogger("pluginsdk.wasm").warning("program %s trapped: %s", list(args)[:2], outcome(exc))
            status = -1
        finally:
            store.close()
            files.release_all()
        if status:
            with open(output, "rb") as f:
                Output(logging.getLogger("pluginsdk.wasm"))(f.read()[-4096:] + b"\n")
    return status


def pump(fd: int, output: Callable[[bytes], None]) -> None:
    """Feed what a guest writes to ``fd`` (its stderr) to ``output`` until the guest ends (EOF); close ``fd``."""
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
