"""The guest of the ``component`` sandbox engine: the request loop, one export call at a time.

A plugin is built by ``componentize-py`` into a WebAssembly component (world
``plugin`` in ``component.wit``): a generated main module calls :func:`boot`
at build time, so the interpreter, the guest side, msgpack and the plugin's
own module are imported once and *snapshotted*; every instance starts from
that snapshot.  The host then calls the export ``handle`` with its frames
and gets the guest's frames back (bytes carried as latin-1 text).

:class:`Stepper` is :class:`.loop.Guest` turned inside out: the loop reads
its next request, here each request arrives as a call, and a stream keeps its
state between the calls that ask for the next chunk (``MORE``).

Imported on the host only by the import-rule tests: nothing runs at import.
"""

from __future__ import annotations

import sys

from .. import codec
from . import protocol as P
from .fastcodec import make_fast_pack, make_fast_unpack
from .loop import _PLAIN, Guest, _array_header

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

_CALL, _OK = P.CALL, P.OK
_encode_frame = codec.encode_frame
_unpack_header = codec.HEADER.unpack_from


class Stepper(Guest):
    """Serves one plugin one export call at a time (see the module docstring)."""

    def __init__(self) -> None:
        self._inbox = b""
        self._outbox: list[bytes] = []
        self._decode = make_fast_unpack(codec.decode)
        super().__init__(self._take, self._put, decode=self._decode, implementation="pure-python")
        self.greeted = False
        self.ended = False
        self._stream: list[Any] | None = None  # [rid, iterator, chunk limit, carried items]

    # -- the channel: this call's frames in, its replies out ----------------
    def _take(self, n: int) -> bytes:
        data, self._inbox = self._inbox[:n], self._inbox[n:]
        return data

    def _put(self, data: Any) -> int:
        self._outbox.append(bytes(data))
        return len(data)

    def feed(self, data: bytes) -> bytes:
        """Handle every frame in ``data``; the reply frames (empty once the loop has ended)."""
        self._outbox = []
        try:
            if self.greeted and not self.ended and 4 < len(data) <= self.max_message + 4:
                (size,) = _unpack_header(data)
                if size == len(data) - 4:  # one whole frame, the usual case: no reader needed
                    fast = self._fast_call(self._decode(memoryview(data)[4:]))
                    return fast if fast is not None else b"".join(self._outbox)
            self._inbox = data
            while self._inbox and not self.ended:
                self._step()
        except BaseException:  # out of step (a truncated or oversized frame): end, as the loop would
            self.ended = True
        if self.ended and not self._outbox:
            return b""
        return b"".join(self._outbox)

    def _fast_call(self, msg: Any) -> bytes | None:
        """A plain result of an implementation taking every argument, encoded at once; else dispatched."""
        if type(msg) is list and len(msg) == 4 and msg[0] == _CALL and self._stream is None:
            impl = self.impls.get(msg[2])
            if impl is not None and impl.whole:
                try:
                    result = impl.func(*msg[3])
                except BaseException as exc:
                    self.send_error(msg[1], P.HOOK, exc, skip=1)
                    return None
                if type(result) in _PLAIN:
                    try:
                        return _encode_frame([_OK, msg[1], result], self.max_message)
                    except Exception:
                        pass  # self.send() reports why as an ERR frame
                self.reply(msg[1], msg[2], result)
                return None
        self._dispatch(msg)
        return None

    # -- one frame ----------------------------------------------------------
    def _step(self) -> None:
        if not self.greeted:
            self.greeted = True
            if not self.handshake():
                self.ended = True
            return
        self._dispatch(self._reader.read())

    def _dispatch(self, msg: Any) -> None:
        kind = msg[0] if type(msg) is list and msg else None
        if self._stream is not None:
            self._stream_answer(msg)
        elif kind == P.CALL and len(msg) in (4, 5):  # a fifth field: report the plugin's time
            self.call(msg[1], msg[2], msg[3], timed=len(msg) == 5)
        elif kind == P.BATCH and len(msg) in (4, 5):
            self.batch(msg[1], msg[2], msg[3], timed=len(msg) == 5)
        elif kind == P.BYE:
            self.ended = True
        else:
            rid = msg[1] if kind is not None and len(msg) > 1 and type(msg[1]) is int else -1
            self.send(P.error_frame(rid, P.PROTOCOL, "ProtocolError", f"unexpected message {kind!r}"))

    # -- streams, one chunk per call ----------------------------------------
    def stream(self, rid: int, it: Iterator[Any], inside: int | None = None) -> None:
        self._stream = [rid, it, 1, [], [inside or 0], inside is not None]
        self._next_chunk()

    def _stream_answer(self, msg: Any) -> None:
        """MORE for this stream: the next chunk; anything else (CANCEL) ends it, as the loop does."""
        assert self._stream is not None
        rid = self._stream[0]
        if type(msg) is list and msg[:2] == [P.MORE, rid]:
            self._next_chunk()
            return
        self._end_stream()
        self.send([P.END, rid, []])

    def _next_chunk(self) -> None:
        assert self._stream is not None
        rid, it, limit, carry, spent, timed = self._stream
        items, error, done = self._fill_chunk(rid, it, limit, carry, spent)
        if items or error is None:
            last = done and error is None
            timed = last and timed
            body = _array_header(4 if timed else 3) + bytes((P.END if last else P.CHUNK,)) + codec.encode(rid)
            body += _array_header(len(items)) + b"".join(items)
            if timed:  # END carries the plugin's own time if asked, as the loop's does
                body += codec.encode(spent[0])
            self._write(codec.HEADER.pack(len(body)) + body)
        if error is not None:
            self.send(error)
        if done or error is not None:
            self._end_stream()
        else:
            self._stream[2] = min(limit * 2, 4096)

    def _end_stream(self) -> None:
        assert self._stream is not None
        close = getattr(self._stream[1], "close", None)
        self._stream = None
        if close is not None:
            close()


#: Built-in modules a plugin may not create: a subinterpreter would start with fresh, unguarded modules.
DENIED_BUILTINS = frozenset({"_interpreters", "_interpqueues", "_interpchannels", "_xxsubinterpreters"})


def _fileno(obj: Any) -> int:
    fd = obj if type(obj) is int else obj.fileno()
    if type(fd) is not int or fd < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
    return fd


class _Builtin:
    """A Python function that behaves as a built-in one where it is stored: not bound as a method in a class."""

    __slots__ = ("__name__", "_func")

    def __init__(self, func: Any, name: str) -> None:
        self._func = func
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<built-in function {self.__name__}>"


def _host_waits(host_sleep: Any) -> None:
    """Route every wait of the guest through ``host_sleep``, the host's wait that its deadline interrupts.

    WASI 0.2 gives the guest's own sleeps to wasmtime, where a deadline cannot
    stop them, so no function that sleeps in WASI is left: ``time.sleep`` and
    ``select.select`` call the host's wait (the originals are dropped,
    wherever the snapshot held them); ``select.poll`` and its kin are
    removed (``selectors`` then uses ``select.select``).  Every built-in
    module is created now, and the import system hands out these same
    objects again (``_imp.create_builtin``), so a plugin that forgets and
    re-imports ``time`` or ``select``, or reloads them, gets the guarded ones.
    """
    import _imp
    import gc
    import importlib
    import select
    import time

    def sleep(seconds: Any) -> None:
        if type(seconds) not in (int, float):
            if isinstance(seconds, (str, bytes)) or not hasattr(seconds, "__float__"):
                raise TypeError(f"'{type(seconds).__name__}' object cannot be interpreted as an integer or float")
            seconds = float(seconds)
        if seconds != seconds:
            raise ValueError("Invalid value NaN (not a number)")
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        if seconds > 0:
            host_sleep(min(int(seconds * 1e9), 2**64 - 1))

    def select_(rlist: Any, wlist: Any, xlist: Any, timeout: float | None = None) -> Any:
        """Files and streams are always ready in WASI, and the sandbox has no sockets: only a bare wait waits."""
        ready = [list(rlist), list(wlist), list(xlist)]
        for group in ready:
            for obj in group:
                _fileno(obj)
        if timeout is not None and (timeout != timeout or timeout < 0):
            raise ValueError("timeout must be non-negative")
        if ready[0] or ready[1]:
            return ready[0], ready[1], []
        if timeout is None:
            raise OSError(22, "select() with nothing to wait for and no timeout would never return")
        sleep(timeout)
        return [], [], []

    swaps: list[tuple[Any, Any]] = [
        (time.sleep, _Builtin(sleep, "sleep")),
        (select.select, _Builtin(select_, "select")),
    ]
    time.sleep, select.select = swaps[0][1], swaps[1][1]
    for name in ("poll", "epoll", "devpoll", "kqueue"):
        if hasattr(select, name):
            swaps.append((getattr(select, name), None))
            delattr(select, name)
    selectors = sys.modules.get("selectors")
    if selectors is not None:
        selectors.DefaultSelector = selectors.SelectSelector  # type: ignore[attr-defined]
    made: dict[str, Any] = {}
    for name in sys.builtin_module_names:
        if name in DENIED_BUILTINS:
            continue
        try:
            made[name] = importlib.import_module(name)
        except Exception:
            pass
    for name in DENIED_BUILTINS:
        sys.modules.pop(name, None)

    def create_builtin(spec: Any) -> Any:
        try:
            return made[spec.name]
        except KeyError:
            raise ImportError(f"no built-in module named {spec.name}", name=spec.name) from None

    def exec_builtin(module: Any) -> int:
        return 0  # made (and run) once, above

    swaps += [
        (_imp.create_builtin, _Builtin(create_builtin, "create_builtin")),
        (_imp.exec_builtin, _Builtin(exec_builtin, "exec_builtin")),
    ]
    _imp.create_builtin, _imp.exec_builtin = swaps[-2][1], swaps[-1][1]
    # Whoever copied an original before now (``from time import sleep``) gets the guarded one instead.
    for old, new in swaps:
        for holder in gc.get_referrers(old):
            if type(holder) is dict:
                for key in [k for k, v in holder.items() if v is old]:
                    if new is None:
                        del holder[key]
                    else:
                        holder[key] = new
    del swaps, old, new


def _extract_stdlib(target: str) -> None:
    """Copy the interpreter's standard library (``/python`` while building) to ``target``.

    Only the modules imported at build time are in the snapshot; the host
    mounts this copy read-only at ``/python`` so that later imports work too.
    """
    import shutil

    skip = shutil.ignore_patterns("__pycache__", "idlelib", "tkinter", "turtledemo", "ensurepip", "test")
    shutil.copytree("/python", target, ignore=skip, dirs_exist_ok=True)


_server: Stepper | None = None


def boot(module: str, out: str, extract_to: str | None = None) -> None:
    """Build time: prepare the guest and import the plugin, all of it kept in the snapshot.

    ``out`` is a directory writable while building: the guest's Python
    version goes there (``python-version``), and the standard library when
    ``extract_to`` names a directory.
    """
    global _server
    import importlib
    import io
    import os

    from .sandbox import _MarkedStdout

    os.environ.clear()  # the build's variables mean nothing to the plugin
    os.environ["MSGPACK_PUREPYTHON"] = "1"
    if extract_to is not None:
        _extract_stdlib(extract_to)
    with open(f"{out}/python-version", "w") as f:
        f.write(".".join(map(str, sys.version_info[:3])))
    # The fast encoders recurse in Python: allow the nesting msgpack's C encoder allows (1022 levels).
    sys.setrecursionlimit(2500)
    sys.stdout = _MarkedStdout()
    sys.stdin = io.StringIO()
    from wit_world import sleep as host_sleep  # type: ignore[import-not-found]  # generated from component.wit

    _host_waits(host_sleep)
    packer = codec.make_packer()  # msgpack, for the values the fast encoder leaves to it
    codec.install_packer(make_fast_pack(lambda obj: bytes(packer(obj))))
    # What a call may need later is imported now, into the snapshot.
    for name in ("pluginsdk.guest.impls", "traceback", "inspect", "typing", "pluggy", "cattrs"):
        try:
            importlib.import_module(name)
        except Exception:
            pass
    try:
        importlib.import_module(module)
    except BaseException:  # reported by HELLO at run time, where the import is tried again
        for name in [n for n in sys.modules if n == module or n.startswith(module + ".")]:
            del sys.modules[name]
    _server = Stepper()


class WitWorld:
    """The component's export (``component.wit``)."""

    def handle(self, frames: str) -> str:
        server = _server
        if server is None:
            return ""
        # Never let an exception escape: componentize-py would trap the instance.
        try:
            return server.feed(frames.encode("latin-1")).decode("latin-1")
        except BaseException:
            return ""
