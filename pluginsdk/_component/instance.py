"""One instance of a plugin's snapshot component: the ``component`` engine's kind of worker.

The guest is not a program reading a channel but an export,
``handle(frames) -> frames`` (see :mod:`pluginsdk.guest.component_app`), so
the calls run on the caller's thread: :meth:`ComponentInstance.send` only
queues the request, and :meth:`~ComponentInstance.recv` runs the export
when it needs the reply.  The pool arms the deadline before every read, so
its watchdog stops a guest that overruns: ``signal_kill`` moves the
instance's engine epoch, the running export traps, and the read ends with
``EOFError``.  Each instance has an engine of its own for that reason
(moving an epoch traps every store of the engine); an engine whose instance
ended with no call running goes back to :class:`Runtime` for the next one.

The guest's stderr is a FIFO read by a thread into the plugin's logger
(``print`` arrives marked as stdout, as in the interpreter engine).
"""

from __future__ import annotations

import logging
import marshal
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

from .. import codec
from .._wasm.store import pump
from ..backends.worker import Worker
from ..guest import protocol as P
from ..guest.fastcodec import MARSHAL_MARK

__all__ = ["ComponentInstance", "Runtime"]

#: Host frames larger than this (bytes) go to the guest as marshal (decoded far faster in pure Python).
MARSHAL_ABOVE = 512
_encode_frame = codec.encode_frame
_live: set[ComponentInstance] = set()
_live_lock = threading.Lock()
_exiting = False


class Runtime:
    """The compiled component of one plugin, and engines with it loaded, ready for instances."""

    def __init__(self, cwasm: str, mounts: Sequence[tuple[str, str]], keep: int) -> None:
        self.cwasm = cwasm
        self.mounts = tuple(mounts)
        self.keep = keep
        self._free: list[tuple[Any, Any, Any]] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[Any, Any, Any]:
        """``(engine, component, linker)``: a free one, or a new engine with the component loaded."""
        with self._lock:
            if self._free:
                return self._free.pop()
        import wasmtime
        from wasmtime import component

        from .._wasm.cache import engine_config

        engine = wasmtime.Engine(engine_config())
        comp = component.Component.deserialize_file(engine, self.cwasm)
        linker = component.Linker(engine)
        linker.add_wasip2()
        return engine, comp, linker

    def give_back(self, triple: tuple[Any, Any, Any]) -> None:
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(triple)

    def clear(self) -> None:
        with self._lock:
            self._free.clear()


class _Call:
    """The export ``handle`` with its types looked up once (wasmtime-py looks them up on every call)."""

    def __init__(self, func: Any, store: Any) -> None:
        from wasmtime import _ffi as ffi
        from wasmtime.component._enter import enter_wasm

        fty = func.type(store)
        self._param = fty.params[0][1]
        self._result = fty.result
        self._func = func
        self._store = store
        self._ffi = ffi
        self._enter = enter_wasm

    def __call__(self, text: str) -> str:
        from ctypes import byref, pointer

        ffi, store = self._ffi, self._store
        params = (ffi.wasmtime_component_val_t * 1)()
        self._param.convert_to_c(store, text, pointer(params[0]))
        try:
            result = ffi.wasmtime_component_val_t()
            func = self._func._func

            def run() -> Any:
                return ffi.wasmtime_component_func_call(byref(func), store._context(), params, 1, byref(result), 1)

            self._enter(run)
            value: str = self._result.convert_from_c(result)
            return value
        finally:
            ffi.wasmtime_component_val_delete(byref(params[0]))


class ComponentInstance(Worker):
    """One instance serving one plugin (see the module docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        hello: dict[str, Any],
        extra_mounts: Sequence[tuple[str, str]],
        *,
        max_message: int,
        memory_mb: int,
        log: logging.Logger,
    ) -> None:
        import wasmtime

        from .._wasm.store import Output

        super().__init__()
        self._runtime = runtime
        self._max_message = max_message
        self._pending: list[bytes] = []
        self._out = b""
        self._killed = False
        self._ended: str | None = None
        self._busy = False
        self._closed = False
        self._lock = threading.Lock()
        self._output = Output(log)
        self._triple = runtime.take()
        engine, comp, linker = self._triple
        self._store = wasmtime.Store(engine)
        self._store.set_epoch_deadline(1)  # traps once this instance's engine epoch moves (see module doc)
        if memory_mb > 0:
            self._store.set_limits(memory_size=memory_mb * 2**20)
        wasi = wasmtime.WasiConfig()
        for host, guest in (*runtime.mounts, *extra_mounts):
            wasi.preopen_dir(host, guest, False)
        self._efd = self._stderr_fifo(wasi)
        try:
            self._store.set_wasi(wasi)
            instance = linker.instantiate(self._store, comp)
            func = instance.get_func(self._store, "handle")
            if func is None:
                raise RuntimeError("the component has no export 'handle'")
            self._call = _Call(func, self._store)
        except BaseException:
            os.close(self._efd)
            self._store.close()
            raise
        self.pid = id(self)
        self.reader = codec.FrameReader(self._read, max_message)
        self._pump = threading.Thread(target=pump, args=(self._efd, self._output), name="pluginsdk-wasm-stderr")
        self._pump.daemon = True
        self._pump.start()
        with _live_lock:
            _live.add(self)
        self._pending.append(_encode_frame([P.HELLO, hello]))

    def _stderr_fifo(self, wasi: Any) -> int:
        """A FIFO as the guest's stderr, its read end ours (opened first, so no open blocks), then unlinked."""
        tmp = tempfile.mkdtemp(prefix="pluginsdk-component-")
        try:
            path = os.path.join(tmp, "err")
            os.mkfifo(path, 0o600)
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            wasi.stderr_file = path
            os.set_blocking(fd, True)
            return fd
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- the channel -----------------------------------------------------------
    def send(self, msg: list[Any]) -> None:
        """Encode one request and queue it: the export runs when its reply is read (under the deadline)."""
        frame = _encode_frame(msg, self._max_message)
        if len(frame) > MARSHAL_ABOVE:
            body = MARSHAL_MARK + marshal.dumps(codec.decode(memoryview(frame)[4:]))
            if len(body) <= self._max_message:
                frame = codec.HEADER.pack(len(body)) + body
        self._pending.append(frame)

    def recv(self) -> Any:
        return self.reader.read()

    def surplus(self) -> bool:
        return bool(self._out) or self.reader.pending()

    def _read(self, n: int) -> bytes:
        if not self._out:
            if self._killed or self._ended is not None or not self._pending:
                return b""
            self._out = self._run(self._pending.pop(0))
        data, self._out = self._out[:n], self._out[n:]
        return data

    def _run(self, frame: bytes) -> bytes:
        """Run the export on ``frame``; its reply frames (empty once the guest has ended)."""
        with self._lock:
            if self._killed:
                return b""
            self._busy = True
        try:
            reply = self._call(frame.decode("latin-1"))
        except Exception as exc:  # a trap (the deadline's included), or the store was refused memory
            from .._wasm.store import outcome

            self._ended = outcome(exc)
            return b""
        finally:
            with self._lock:
                self._busy = False
                if self._stopped():  # signal_kill() ran meanwhile: the store is ours to free
                    self._release()
        if not reply:
            self._ended = "the guest ended its loop"
            return b""
        return reply.encode("latin-1")

    # -- lifecycle -------------------------------------------------------------
    def _stopped(self) -> bool:
        return self._killed

    def death_detail(self) -> str:
        self._pump.join(0.2)  # its last stderr lines
        how = self._ended or "did not end"
        if self._killed and self.timed_out:
            how = "stopped at its deadline"
        elif _exiting:
            how = "stopped because the host process is exiting"
        tail = " | ".join(self._output.tail)
        return f"{how}; stderr: {tail}" if tail else how

    def signal_kill(self) -> None:
        """Stop the guest from any thread: a running export traps at once (the engine's epoch moves)."""
        with self._lock:
            if self._killed:
                return
            self._killed = True
            self._triple[0].increment_epoch()
            if not self._busy:
                self._release()

    def kill(self) -> None:
        self.signal_kill()

    def stop(self) -> None:
        """Say BYE (the guest ends its loop), then release the instance."""
        if not self._killed and self._ended is None:
            self.send([P.BYE])
            try:
                self._read(1)
            except Exception:
                pass
        clean = self._ended is not None and not self._ended.startswith("trap")
        with self._lock:
            if not self._killed and clean and not self._busy:
                self._killed = True
                self._release(reuse=True)
                return
        self.kill()

    def _release(self, reuse: bool = False) -> None:
        """Free the store (no call runs in it: the caller holds the lock); the engine is reused if clean."""
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        self._out = b""
        self._store.close()  # the guest's memory and descriptors, now rather than at GC; ends stderr
        if reuse:
            self._runtime.give_back(self._triple)
        with _live_lock:
            _live.discard(self)

    @property
    def alive(self) -> bool:
        return not self._closed


def stop_all() -> None:
    """Stop every instance still running (at interpreter exit): running exports trap."""
    global _exiting
    _exiting = True
    with _live_lock:
        live = list(_live)
    for inst in live:
        inst.signal_kill()


import atexit  # noqa: E402  (registered once this module is in use)

atexit.register(stop_all)
