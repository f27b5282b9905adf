"""One instance of a plugin's snapshot component: the ``component`` engine's kind of worker.

The guest is not a program reading a channel but an export,
``handle(frames) -> frames`` (see :mod:`pluginsdk.guest.component_app`), so
the calls run on the caller's thread: :meth:`ComponentInstance.send` only
queues the request, and :meth:`~ComponentInstance.recv` runs the export
when it needs the reply.  The pool arms the deadline before every read, so
its watchdog stops a guest that overruns: ``signal_kill`` marks the
instance stopped and moves the engine's epoch, the running export traps
(the others sharing the engine run on, see :class:`Runtime`), and the read
ends with ``EOFError``.

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
import weakref
from collections.abc import Sequence
from typing import Any

from .. import codec
from .._wasm.store import LiveInstances, pump
from ..backends.worker import Worker
from ..guest import protocol as P
from ..guest.fastcodec import MARSHAL_MARK

__all__ = ["ComponentInstance", "Runtime"]

#: Host frames larger than this (bytes) go to the guest as marshal (decoded far faster in pure Python).
MARSHAL_ABOVE = 512
_encode_frame = codec.encode_frame
_live: LiveInstances[ComponentInstance] = LiveInstances()


class Runtime:
    """The compiled component of one plugin, loaded once: one engine, component and linker for all its instances.

    Every instance's store lives in this one engine, so the compiled code is
    mapped (and counted in the host's memory) once per plugin, not once per
    instance.  Stopping one instance moves the engine's epoch, which reaches
    every store running in it: each store's epoch callback (see
    :func:`_epoch_callback`) traps the stopped one and lets the others go on.
    """

    def __init__(self, cwasm: str, mounts: Sequence[tuple[str, str]]) -> None:
        self.cwasm = cwasm
        self.mounts = tuple(mounts)
        self._loaded: tuple[Any, Any, Any] | None = None
        self._lock = threading.Lock()
        self._users = 0

    def load(self) -> tuple[Any, Any, Any]:
        """``(engine, component, linker)``, loaded on first use."""
        with self._lock:
            if self._loaded is None:
                import wasmtime
                from wasmtime import component

                from .._wasm.cache import engine_config

                engine = wasmtime.Engine(engine_config())
                comp = component.Component.deserialize_file(engine, self.cwasm)
                linker = component.Linker(engine)
                linker.add_wasip2()
                with linker.root() as root:
                    root.add_func("sleep", _host_sleep)
                self._loaded = (engine, comp, linker)
            return self._loaded

    def instantiate(self, store: Any) -> Any:
        """An instance of the component in ``store`` (one at a time: the linker is not shared between threads)."""
        _engine, comp, linker = self.load()
        with self._lock:
            return linker.instantiate(store, comp)

    @classmethod
    def acquire(cls, cwasm: str, mounts: Sequence[tuple[str, str]]) -> Runtime:
        """The runtime of ``cwasm``, shared by every backend using it until the last one releases it."""
        key = (cwasm, tuple(mounts))
        with _runtimes_lock:
            found = _runtimes.get(key)
            if found is None:
                found = _runtimes[key] = cls(cwasm, mounts)
            found._users += 1
            return found

    def release(self) -> None:
        """One user less; the last one unloads it (instances still running keep what they use)."""
        with _runtimes_lock:
            self._users -= 1
            if self._users > 0:
                return
            _runtimes.pop((self.cwasm, self.mounts), None)
        with self._lock:
            self._loaded = None


_runtimes: dict[tuple[str, tuple[tuple[str, str], ...]], Runtime] = {}
_runtimes_lock = threading.Lock()


_current = threading.local()  # .instance: the instance whose export runs on this thread


def _host_sleep(_store: Any, nanoseconds: int) -> bool:
    """The guest's ``sleep`` import: wait, unless (or until) the instance is stopped, which traps it."""
    inst: ComponentInstance | None = getattr(_current, "instance", None)
    if inst is None:
        raise RuntimeError("sleep called outside a call")
    if inst._wake.wait(min(nanoseconds / 1e9, threading.TIMEOUT_MAX)):
        raise RuntimeError("the sandbox instance was stopped")
    return True


def _epoch_callback(inst: ComponentInstance) -> Any:
    """The store's epoch-deadline callback: trap if ``inst`` was stopped, else run on to the next epoch.

    It runs only when the engine's epoch moves (some instance of the plugin
    was stopped), never on an ordinary call.
    """
    from ctypes import c_void_p, cast

    from wasmtime import _ffi as ffi

    ref = weakref.ref(inst)

    def on_epoch(_context: Any, _data: Any, delta: Any, kind: Any) -> int:
        me = ref()
        if me is None or me._killed:
            err = ffi.wasmtime_error_new(b"the sandbox instance was stopped")
            return int(cast(err, c_void_p).value or 0)
        delta[0] = 1
        kind[0] = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE
        return 0

    from wasmtime import _bindings

    callback_type = _bindings._wasmtime_store_epoch_deadline_callback.argtypes[1]
    return callback_type(on_epoch)


def _set_epoch_callback(store: Any, callback: Any) -> None:
    from wasmtime import _bindings

    finalizer_type = _bindings._wasmtime_store_epoch_deadline_callback.argtypes[3]
    global _NO_FINALIZER
    if _NO_FINALIZER is None:
        _NO_FINALIZER = finalizer_type(lambda _data: None)
    _bindings.wasmtime_store_epoch_deadline_callback(store.ptr(), callback, None, _NO_FINALIZER)


_NO_FINALIZER: Any = None


class _Call:
    """The export ``handle``, called straight through wasmtime's C API.

    wasmtime-py looks the function's types up and converts its values through
    generic code on every call; here the argument and result slots, the
    function and the store are set up once, and a call is one copy of the
    frame in, the call, one copy of the reply out.  Frames are bytes carried
    as latin-1 text (a WIT ``string``, UTF-8 on the wire).
    """

    def __init__(self, func: Any, store: Any) -> None:
        import ctypes
        from ctypes import CFUNCTYPE, c_char_p, c_size_t, c_void_p

        from wasmtime import _ffi as ffi

        dll = ffi.dll
        self._ffi = ffi
        self._keep = (func, store)  # what the addresses below point into
        self._arg = ffi.wasmtime_component_val_t()
        self._out = ffi.wasmtime_component_val_t()
        self._string = ffi.WASMTIME_COMPONENT_STRING.value
        self._arg_vec = ctypes.addressof(self._arg.of.string)
        self._out_vec = ctypes.addressof(self._out.of.string)
        self._out_str = self._out.of.string
        self._func = ctypes.addressof(func._func)
        self._context = ctypes.cast(store._context(), c_void_p).value
        self._args = (self._func, self._context, ctypes.addressof(self._arg), 1, ctypes.addressof(self._out), 1)
        self._vec_new = CFUNCTYPE(None, c_void_p, c_size_t, c_char_p)(("wasm_byte_vec_new", dll))
        self._vec_delete = CFUNCTYPE(None, c_void_p)(("wasm_byte_vec_delete", dll))
        self._call = CFUNCTYPE(c_void_p, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t)(
            ("wasmtime_component_func_call", dll)
        )
        self._string_at = ctypes.string_at

    def __call__(self, frame: bytes) -> bytes:
        text = frame.decode("latin-1").encode()
        self._arg.kind = self._string
        self._vec_new(self._arg_vec, len(text), text)
        err = self._call(*self._args)
        self._vec_delete(self._arg_vec)
        if err:
            self._raise(err)
        out = self._out_str
        reply = self._string_at(out.data, out.size)
        self._vec_delete(self._out_vec)
        return reply.decode().encode("latin-1")

    def _raise(self, err: int) -> None:
        from ctypes import POINTER, cast

        from wasmtime import WasmtimeError
        from wasmtime.component._enter import maybe_raise_last_exn

        error = WasmtimeError._from_ptr(cast(err, POINTER(self._ffi.wasmtime_error_t)))
        maybe_raise_last_exn()  # a host function's own exception (the stopped sleep's), if any
        raise error


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
        self._wake = threading.Event()  # set when stopped: ends a wait in _host_sleep
        self._output = Output(log)
        self._engine, _comp, _linker = runtime.load()
        self._store = wasmtime.Store(self._engine)
        self._store.set_epoch_deadline(1)  # asks _epoch_callback once the epoch moves (see Runtime)
        self._on_epoch = _epoch_callback(self)  # kept alive as long as the store
        _set_epoch_callback(self._store, self._on_epoch)
        if memory_mb > 0:
            self._store.set_limits(memory_size=memory_mb * 2**20)
        wasi = wasmtime.WasiConfig()
        for host, guest in (*runtime.mounts, *extra_mounts):
            wasi.preopen_dir(host, guest, False)
        self._efd = self._stderr_fifo(wasi)
        try:
            self._store.set_wasi(wasi)
            instance = runtime.instantiate(self._store)
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
        _current.instance = self
        try:
            reply = self._call(frame)
        except Exception as exc:  # a trap (the deadline's included), or the store was refused memory
            from .._wasm.store import outcome

            self._ended = outcome(exc)
            return b""
        finally:
            _current.instance = None
            with self._lock:
                self._busy = False
                if self._stopped():  # signal_kill() ran meanwhile: the store is ours to free
                    self._release()
        if not reply:
            self._ended = "the guest ended its loop"
            return b""
        return reply

    # -- lifecycle -------------------------------------------------------------
    def _stopped(self) -> bool:
        return self._killed

    def death_detail(self) -> str:
        self._pump.join(0.2)  # its last stderr lines
        at_deadline = self._killed and self.timed_out
        return self._output.ending(self._ended or "", at_deadline=at_deadline, host_exiting=_live.exiting)

    def signal_kill(self) -> None:
        """Stop the guest from any thread: a running export traps at once (the engine's epoch moves)."""
        with self._lock:
            if self._killed:
                return
            self._killed = True
            self._wake.set()
            self._engine.increment_epoch()
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
                self._release()
                return
        self.kill()

    def _release(self) -> None:
        """Free the store (no call runs in it: the caller holds the lock)."""
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        self._out = b""
        self._store.close()  # the guest's memory and descriptors, now rather than at GC; ends stderr
        _live.discard(self)

    @property
    def alive(self) -> bool:
        return not self._closed


def stop_all() -> None:
    """Stop every instance still running (called at interpreter exit)."""
    _live.stop_all()  # running exports trap


import atexit  # noqa: E402  (registered once this module is in use)

atexit.register(stop_all)
