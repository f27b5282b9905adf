"""The request loop that serves a plugin on the far side of a boundary.

Used by worker processes (:mod:`.worker`) and by the sandbox
(:mod:`.sandbox`): :func:`serve` works over any pair of ``read(n)`` /
``write(b)`` callables, so the same loop runs on a worker's private pipes or
on a sandbox's FIFOs.  The messages are those of :mod:`.protocol`.

``args`` are the spec's arguments in spec order; the guest passes each
implementation the subset it asks for, structured by cattrs where the
implementation annotates one with a class (attrs, enum, tuple...).  A
hook the spec declares as returning an iterator streams its items; any other
hook's iterator result (``return map(...)``, say) is sent whole, as a list, so
it never holds the worker after the call.  A stream whose generator raises
delivers the items pulled before, then the ERR frame.

A ``CALL`` or ``BATCH`` with a fifth field asks for the nanoseconds spent in
the plugin's own code (calling it, and for an iterator result, draining it):
its ``OK`` or ``END`` carries them as a fourth field, which the host's
metrics set against the time the request took to cross.  The host asks on the
requests it times (a sample); the others' replies, and the fast path, carry
no clock reads at all.
"""

from __future__ import annotations

import sys
import time
from _collections_abc import Iterator  # collections.abc's own, without importing collections

from .. import codec
from .._errors import PluginError, PluginResourceError, exception_text, format_traceback, type_name
from . import awaiting
from . import protocol as P
from .gather import serve_gather
from .impls import ArgumentError, Impl, LoadError, load_impls

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: A stream chunk is sent once it holds this many encoded bytes...
CHUNK_BYTES = 256 * 1024
#: ...or this many items (the first chunk holds one item, then it doubles)...
CHUNK_ITEMS = 4096
#: ...or its first item is this old (seconds), so slow generators still flow.
CHUNK_AGE = 0.05

_encode_frame = codec.encode_frame
_ns = time.perf_counter_ns
_PLAIN = frozenset((type(None), bool, int, float, str, bytes, list, dict, tuple))
_OK, _CALL, _BATCH, _BYE, _GATHER = P.OK, P.CALL, P.BATCH, P.BYE, P.GATHER
_COROUTINE = awaiting.COROUTINE


def _type_name(exc: BaseException) -> str:
    return type_name(type(exc))


def _tb_text(exc: BaseException, skip: int = 0) -> str:
    """Formatted traceback, without this module's own ``skip`` frames; never raises."""
    for _ in range(skip):
        tb = exc.__traceback__
        if tb is not None and tb.tb_next is not None:
            exc.__traceback__ = tb.tb_next
    return format_traceback(exc)


def _error_msg(rid: int, kind: str, exc: BaseException, index: int | None, skip: int) -> list[Any]:
    """The ERR frame describing ``exc`` (MemoryError counts as a resource error)."""
    if isinstance(exc, MemoryError):
        kind = P.RESOURCE
    return P.error_frame(rid, kind, _type_name(exc), exception_text(exc), _tb_text(exc, skip), index)


def _codec_error(msg: list[Any], exc: Exception, batch: bool) -> list[Any]:
    """The ERR frame for a reply that could not be encoded: which batch item, where in it, and why.

    The path travels after ``"return value"`` in the frame's argument field
    (``"return value[2]['when']"``); found by walking the value again, here
    on the error path only.
    """
    from .._values import RETURN

    if msg[0] == _OK and len(msg) in (3, 4):  # 4: with the guest's own time
        values = msg[2] if batch else [msg[2]]
        for index, value in enumerate(values):
            found = codec.locate_unencodable(value)
            if found is not None:
                path, reason = found
                where = index if batch else None
                return P.error_frame(_rid(msg), P.CODEC, "CodecError", reason, index=where, argument=RETURN + path)
    return P.error_frame(_rid(msg), P.CODEC, _type_name(exc), codec.describe_error(exc))


def _rid(msg: list[Any]) -> int:
    """The request id a reply carries (READY carries none: the handshake's)."""
    return msg[1] if len(msg) > 1 and type(msg[1]) is int else P.HANDSHAKE_ID


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 65536:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


class Guest:
    """Serves one plugin over a frame channel; see the module docstring."""

    def __init__(
        self,
        read: Callable[[int], bytes],
        write: Callable[[Any], int | None],
        *,
        decode: Callable[[bytes | memoryview], Any] = codec.decode,
        implementation: str | None = None,
    ) -> None:
        """``decode`` reads the host's frames: msgpack by default; a sandbox may use a
        faster encoding it trusts its host to send (frames *to* the host are always msgpack).
        ``implementation`` is the msgpack implementation READY reports, if the caller
        knows it (default: :func:`codec.implementation`, which imports msgpack).
        """
        self._implementation = implementation
        self._reader = codec.FrameReader(read, decode=decode)
        self._raw_write = write
        self.max_message = codec.MAX_FRAME
        self.impls: dict[str, Impl] = {}
        self.streams: frozenset[str] = frozenset()

    # -- channel ---------------------------------------------------------
    def _write(self, data: bytes) -> None:
        n = self._raw_write(data)
        if n is not None and n < len(data):
            self._write_rest(data, n)

    def _write_rest(self, data: bytes, n: int) -> None:
        """Finish a short write of ``data`` (``n`` bytes went)."""
        view = memoryview(data)[n:]
        while view:
            m = self._raw_write(view)
            view = view[m if m is not None else len(view) :]

    def send(self, msg: list[Any], *, batch: bool = False) -> None:
        """Send ``msg``; a value that cannot cross becomes an ``ERR`` frame for the same request.

        ``batch``: ``msg`` answers a batch (its value is the list of results).
        """
        try:
            frame = _encode_frame(msg, self.max_message)
        except PluginResourceError as exc:
            frame = _encode_frame(P.error_frame(_rid(msg), P.RESOURCE, "MessageTooLarge", exc.message))
        except Exception as exc:
            frame = _encode_frame(_codec_error(msg, exc, batch))
        self._write(frame)

    def send_error(self, rid: int, kind: str, exc: BaseException, index: int | None = None, skip: int = 1) -> None:
        self.send(_error_msg(rid, kind, exc, index, skip))

    # -- lifecycle -------------------------------------------------------
    def handshake(self) -> bool:
        """Read HELLO, load the plugin, answer READY (or a load error); False if it failed."""
        msg = self._reader.read()
        if not isinstance(msg, list) or len(msg) != 2 or msg[0] != P.HELLO:
            raise EOFError("expected HELLO")
        config: dict[str, Any] = msg[1]
        self.max_message = int(config.get(P.MAX_MESSAGE) or codec.MAX_FRAME)
        self._reader.max_size = self.max_message
        self.streams = frozenset(config.get(P.STREAMS) or ())
        for entry in reversed(config.get(P.PATH) or []):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        rid = P.HANDSHAKE_ID
        try:
            self.impls = load_impls(config[P.MODULE], config.get(P.ATTR), config[P.HOOKS])
        except LoadError as exc:
            self.send(P.error_frame(rid, P.LOAD, "LoadError", str(exc)))
            return False
        except BaseException as exc:  # anything the plugin's import raised, even SystemExit
            self.send_error(rid, P.LOAD, exc, skip=0)
            return False
        opts = {h: {k: bool(i.opts.get(k)) for k in ("tryfirst", "trylast")} for h, i in self.impls.items()}
        self.send([P.READY, {P.IMPLS: opts, P.CODEC_NAME: self._implementation or codec.implementation()}])
        return True

    def serve_forever(self) -> None:
        """Answer requests until BYE or the host closes the channel."""
        read, raw_write, impls, max_message = self._reader.read, self._raw_write, self.impls, self.max_message
        while True:
            try:
                msg = read()
            except (EOFError, PluginError):  # closed, or out of step: nothing sane to answer
                return
            kind = msg[0] if type(msg) is list and msg else None
            if kind == _CALL and (len(msg) == 4 or len(msg) == 5):
                rid = msg[1]
                # Inlined fast path: a plain result of an implementation taking every argument.  A timed
                # request (a fifth field) takes it too, so that the sample is timed as the others run.
                impl = impls.get(msg[2])
                if impl is not None and impl.whole:
                    timed = len(msg) == 5
                    start = _ns() if timed else 0
                    try:
                        result = impl.func(*msg[3])
                    except BaseException as exc:
                        self.send_error(rid, P.HOOK, exc, skip=1)
                        continue
                    reply = [_OK, rid, result, _ns() - start] if timed else [_OK, rid, result]
                    if type(result) in _PLAIN:
                        try:
                            frame = _encode_frame(reply, max_message)
                        except Exception:
                            self.send(reply)  # reports why as an ERR frame
                            continue
                        n = raw_write(frame)
                        if n is not None and n < len(frame):
                            self._write_rest(frame, n)
                        continue
                    self.reply(rid, msg[2], result, reply[3] if timed else None)
                else:
                    self.call(rid, msg[2], msg[3], timed=len(msg) == 5)
            elif kind == _GATHER and len(msg) == 3:
                serve_gather(self, msg[1], msg[2])
            elif kind == _BATCH and len(msg) in (4, 5):
                self.batch(msg[1], msg[2], msg[3], timed=len(msg) == 5)
            elif kind == _BYE:
                return
            else:
                rid = msg[1] if kind is not None and len(msg) > 1 and type(msg[1]) is int else -1
                self.send(P.error_frame(rid, P.PROTOCOL, "ProtocolError", f"unexpected message {kind!r}"))

    # -- requests --------------------------------------------------------
    def _impl(self, rid: int, hook: str) -> Impl | None:
        impl = self.impls.get(hook)
        if impl is None:
            self.send(P.error_frame(rid, P.PROTOCOL, "ProtocolError", f"no implementation of {hook!r}"))
        return impl

    def call(self, rid: int, hook: str, args: list[Any], timed: bool = False) -> None:
        """Answer a call; ``timed``: with the nanoseconds the plugin took."""
        impl = self._impl(rid, hook)
        if impl is None:
            return
        try:
            call_args = impl.arguments(args, hook)
        except ArgumentError as exc:
            self.send(P.error_frame(rid, P.CODEC, "CodecError", exc.reason, argument=exc.argument))
            return
        start = _ns()
        try:
            result = impl.func(*call_args)
        except BaseException as exc:
            self.send_error(rid, P.HOOK, exc, skip=1)
            return
        self.reply(rid, hook, result, _ns() - start if timed else None)

    def reply(self, rid: int, hook: str, result: Any, inside: int | None = None) -> None:
        """Answer a call with ``result``: streamed if it is an iterator of a streaming hook, else one OK frame.

        ``inside``: the nanoseconds the call itself took (draining an iterator
        adds to it), to be reported; ``None``: the host did not ask.  An ``async def``
        implementation's coroutine is run to its result first (its time counts too).
        """
        if type(result) is _COROUTINE:
            start = _ns()
            try:
                result = awaiting.run(result)
            except BaseException as exc:
                self.send_error(rid, P.HOOK, exc, skip=1)
                return
            if inside is not None:
                inside += _ns() - start
        if type(result) not in _PLAIN and isinstance(result, Iterator):
            if hook in self.streams:
                self.stream(rid, result, inside)
                return
            start = _ns()
            try:  # not a streaming hook: the whole result, now (the host's deadline bounds it)
                result = list(result)
            except BaseException as exc:
                self.send_error(rid, P.HOOK, exc, skip=1)
                return
            if inside is not None:
                inside += _ns() - start
        self.send([_OK, rid, result] if inside is None else [_OK, rid, result, inside])

    def batch(self, rid: int, hook: str, items: list[list[Any]], timed: bool = False) -> None:
        """Answer a batch; ``timed``: with the nanoseconds the plugin took for all of it."""
        impl = self._impl(rid, hook)
        if impl is None:
            return
        func, arguments = impl.func, impl.arguments
        results: list[Any] = []
        append = results.append
        start = _ns()
        try:
            if impl.whole:
                for args in items:
                    append(func(*args))
            else:
                for args in items:
                    call_args = arguments(args, hook)
                    append(func(*call_args))
        except ArgumentError as exc:
            self.send(P.error_frame(rid, P.CODEC, "CodecError", exc.reason, index=len(results), argument=exc.argument))
            return
        except BaseException as exc:
            self.send_error(rid, P.HOOK, exc, index=len(results), skip=1)
            return
        if not {type(r) for r in results} <= _PLAIN:  # a batch has no room for streams
            for index, result in enumerate(results):
                if type(result) is _COROUTINE:
                    try:
                        result = results[index] = awaiting.run(result)
                    except BaseException as exc:
                        for later in results[index + 1 :]:  # never to be awaited: closed quietly
                            if type(later) is _COROUTINE:
                                later.close()
                        self.send_error(rid, P.HOOK, exc, index=index, skip=1)
                        return
                if isinstance(result, Iterator):
                    try:
                        results[index] = list(result)
                    except BaseException as exc:
                        self.send_error(rid, P.HOOK, exc, index=index, skip=1)
                        return
        self.send([_OK, rid, results, _ns() - start] if timed else [_OK, rid, results], batch=True)

    def stream(self, rid: int, it: Iterator[Any], inside: int | None = None) -> None:
        """Send ``it``'s items in growing chunks, waiting for MORE after each one.

        ``END`` reports ``inside`` (the call's own time) plus the time spent
        pulling items from ``it``; nothing if ``inside`` is ``None`` (not asked).

        Chunks start at one item (the first arrives at once) and double up
        to :data:`CHUNK_ITEMS`; a chunk also closes at :data:`CHUNK_BYTES`
        or once its first item is :data:`CHUNK_AGE` old (checked as items
        arrive).  Items pulled before an error are delivered, then the error.
        """
        limit = 1
        carry: list[bytes] = []
        rid_bytes = codec.encode(rid)
        spent = [inside or 0]  # _fill_chunk adds the time it spends in next(it)
        timed = inside is not None
        try:
            while True:
                items, error, done = self._fill_chunk(rid, it, limit, carry, spent)
                if items or error is None:
                    last = done and error is None
                    body = _array_header(4 if last and timed else 3) + bytes((P.END if last else P.CHUNK,)) + rid_bytes
                    body += _array_header(len(items)) + b"".join(items)
                    if last and timed:
                        body += codec.encode(spent[0])
                    self._write(codec.HEADER.pack(len(body)) + body)
                    if last:
                        return
                    answer = self._reader.read()
                    if type(answer) is not list or answer[:2] != [P.MORE, rid]:
                        self.send([P.END, rid, [], spent[0]] if timed else [P.END, rid, []])
                        return
                if error is not None:
                    self.send(error)
                    return
                limit = min(limit * 2, CHUNK_ITEMS)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def _fill_chunk(
        self, rid: int, it: Iterator[Any], limit: int, carry: list[bytes], spent: list[int]
    ) -> tuple[list[bytes], list[Any] | None, bool]:
        """Pull and encode up to ``limit`` items: ``(items, error frame or None, exhausted)``.

        An item that would push the chunk past the message limit is left in
        ``carry`` to open the next chunk.  The time spent in ``next(it)`` is
        added to ``spent[0]``.
        """
        items: list[bytes] = carry[:]
        carry.clear()
        size = sum(map(len, items))
        started = time.monotonic()
        budget = self.max_message - 32  # room for the chunk's own headers
        while len(items) < limit and size < CHUNK_BYTES and time.monotonic() - started <= CHUNK_AGE:
            pulled = _ns()
            try:
                item = next(it)
            except StopIteration:
                spent[0] += _ns() - pulled
                return items, None, True
            except BaseException as exc:
                return items, _error_msg(rid, P.HOOK, exc, None, 1), True
            spent[0] += _ns() - pulled
            try:
                data = codec.encode(item)
            except Exception as exc:
                return items, _codec_error([_OK, rid, item], exc, False), True
            if len(data) > budget:
                msg = f"stream item of {len(data)} bytes exceeds the {self.max_message}-byte limit"
                return items, P.error_frame(rid, P.RESOURCE, "MessageTooLarge", msg), True
            if size + len(data) > budget:
                carry.append(data)
                return items, None, False
            items.append(data)
            size += len(data)
        return items, None, False


def serve(
    read: Callable[[int], bytes],
    write: Callable[[Any], int | None],
    *,
    decode: Callable[[bytes | memoryview], Any] = codec.decode,
    implementation: str | None = None,
) -> int:
    """Run the guest protocol over ``read``/``write``; return an exit status.

    The channel must be private to the loop: if it is the process's standard
    output, point ``sys.stdout`` elsewhere first, or a plugin's ``print``
    corrupts it.
    """
    guest = Guest(read, write, decode=decode, implementation=implementation)
    try:
        if not guest.handshake():
            return 3
    except EOFError:
        return 0
    guest.serve_forever()
    return 0
