"""The loop that runs a plugin on the far side of a boundary.

Guest-safe: used by worker processes (:func:`main`, see
:mod:`pluginsdk.backends.process`) and by the WASM sandbox, so it imports only
the standard library and the guest-safe parts of pluginsdk.  :func:`serve`
works over any pair of ``read(n)``/``write(b)`` callables, so the same loop
runs on a worker's private pipes or on a sandbox's FIFOs.

Protocol (every message is one frame, see :mod:`pluginsdk.codec`)::

    host -> guest                         guest -> host
    [HELLO, config]                       [READY, info] | [ERR, "load", ...]
    [CALL, hook, args]                    [OK, value] | [ERR, ...] | stream
    [BATCH, hook, [args, ...]]            [OK, [value, ...]] | [ERR, ..., index]
    stream:                               [CHUNK, items] ... [END, items]
      after each CHUNK: [MORE] | [CANCEL] (CANCEL is answered by [END, []])
    [BYE]                                 (guest exits)

HELLO's config: ``module``, ``attr``, ``hooks`` (name -> spec argument
names), ``path`` (entries to put on ``sys.path``), ``max_message`` (bytes).
READY's info: ``impls`` (hook -> its ``tryfirst``/``trylast``), ``codec``.

``args`` are the spec's arguments in spec order; the guest passes each
implementation the subset it asks for, structured by cattrs where the
implementation annotates one with a class (attrs, enum, tuple...).  ``ERR``
frames are ``[ERR, kind, exc_type, message, traceback, index, argument]``
(the last two may be missing or None: the batch item, and the argument a
codec error is about) with kind one of ``hook`` (the plugin raised),
``codec`` (a value could not cross), ``resource`` (MemoryError, message too
large), ``load`` or ``protocol``.  A stream whose generator raises delivers
the items pulled before, then the ERR frame.
"""

from __future__ import annotations

import sys
import time
from _collections_abc import Iterator  # collections.abc's own, without importing collections

from . import codec
from ._errors import PluginError, PluginResourceError

# A sandbox's start is mostly imports, so typing, inspect, traceback and
# importlib are not imported here: annotations are for type checkers only,
# and the rest is imported where needed (an error's traceback, a signature
# the fast path cannot read, an annotation naming a class).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

# Message kinds (small ints: one byte on the wire).
HELLO, CALL, BATCH, MORE, CANCEL, BYE = 0, 1, 2, 3, 4, 5
READY, OK, ERR, CHUNK, END = 10, 11, 12, 13, 14

#: A stream chunk is sent once it holds this many encoded bytes...
CHUNK_BYTES = 256 * 1024
#: ...or this many items (the first chunk holds one item, then it doubles)...
CHUNK_ITEMS = 4096
#: ...or its first item is this old (seconds), so slow generators still flow.
CHUNK_AGE = 0.05

_IMPL_ATTR = "pluginsdk_impl"  # where pluggy's HookimplMarker("pluginsdk") stores options


class LoadError(Exception):
    """The plugin cannot be served (import failed, hooks do not match)."""


class _ArgumentError(Exception):
    """An argument could not be structured as the implementation's annotation."""

    def __init__(self, argument: str, reason: str) -> None:
        super().__init__(reason)
        self.argument = argument
        self.reason = reason


class _Impl:
    """One hook implementation and which spec arguments it takes."""

    __slots__ = ("convert", "func", "indices", "opts", "whole")

    def __init__(
        self,
        func: Callable[..., Any],
        indices: tuple[int, ...],
        opts: dict[str, Any],
        n_spec: int,
        convert: Callable[[list[Any], str], list[Any]] | None = None,
    ) -> None:
        self.func = func
        self.indices = indices
        self.opts = opts
        self.convert = convert
        # Takes every spec argument in spec order, as sent: call with the args as they are.
        self.whole = indices == tuple(range(n_spec)) and convert is None

    def arguments(self, args: list[Any], hook: str) -> list[Any]:
        """This implementation's arguments out of the spec's ``args``, structured if it asks."""
        picked = [args[i] for i in self.indices]
        return picked if self.convert is None else self.convert(picked, hook)


def _function() -> None: ...


class _Probe:
    def method(self) -> None: ...


_FUNCTION = type(_function)  # types.FunctionType and MethodType, without importing types
_BOUND = type(_Probe().method)


def _argnames(func: Callable[..., Any]) -> tuple[str, ...]:
    """Arguments pluggy would pass: positional parameters without defaults.

    Read from the code object for plain functions and methods (what
    ``inspect.signature`` would say, without importing inspect); anything
    else (wrapped, callable objects, builtins) goes to inspect.
    """
    target, bound = func, False
    if type(func) is _BOUND:
        target, bound = func.__func__, True  # type: ignore[attr-defined]
    if type(target) is _FUNCTION and not hasattr(target, "__wrapped__") and not hasattr(target, "__signature__"):
        code = target.__code__
        required = code.co_varnames[: code.co_argcount - len(target.__defaults__ or ())]
        return required[1:] if bound else required
    import inspect

    params = inspect.signature(func).parameters.values()
    return tuple(
        p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    )


def _resolve(module: str, attr: str | None) -> Any:
    __import__(module)  # importlib.import_module without importing importlib
    obj: Any = sys.modules[module]
    for part in (attr or "").split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def load_impls(module: str, attr: str | None, hooks: dict[str, Sequence[str]]) -> dict[str, _Impl]:
    """Import the plugin once and check its hook implementations against ``hooks``.

    Raises:
        LoadError: an implementation is not declared, takes arguments the
            spec does not have, is a wrapper, or a declared hook is missing.
        Exception: whatever importing the plugin raised.
    """
    obj = _resolve(module, attr)
    impls: dict[str, _Impl] = {}
    problems: list[str] = []
    for name in dir(obj):
        func = getattr(obj, name, None)
        opts = getattr(func, _IMPL_ATTR, None)
        if not isinstance(opts, dict) or not callable(func):
            continue
        hook = opts.get("specname") or name
        if hook not in hooks:
            problems.append(f"implements {hook!r}, which it does not declare")
            continue
        if opts.get("hookwrapper") or opts.get("wrapper"):
            problems.append(f"{hook!r} is a wrapper, which cannot run across a boundary")
            continue
        spec_args = list(hooks[hook])
        wanted = _argnames(func)
        extra = [a for a in wanted if a not in spec_args]
        if extra:
            problems.append(f"{hook!r} takes {extra}, not in the spec's {spec_args}")
            continue
        indices = tuple(spec_args.index(a) for a in wanted)
        impls[hook] = _Impl(func, indices, dict(opts), len(spec_args), _arg_converter(func, wanted))
    problems += [f"declares {h!r} but does not implement it" for h in hooks if h not in impls]
    if problems:
        raise LoadError("; ".join(problems))
    return impls


# Annotations that never need structuring, as objects or as strings (postponed evaluation).
_PLAIN_ANNOTATIONS = frozenset(
    {str, int, float, bool, bytes, object, list, dict, None, type(None)}
    | {"str", "int", "float", "bool", "bytes", "object", "list", "dict", "None", "Any", "typing.Any"}
)


def _arg_converter(func: Callable[..., Any], names: Sequence[str]) -> Callable[[list[Any], str], list[Any]] | None:
    """Structure the arguments ``func`` annotates with classes (attrs, enums...), or ``None``.

    Arguments cross as plain data; an implementation that annotates one with
    a class gets an instance (built by cattrs), as it would in-process.
    """
    annotations = getattr(func, "__annotations__", None) or {}
    try:
        if all(annotations.get(n, "str") in _PLAIN_ANNOTATIONS for n in names):
            return None  # the common case, decided without importing typing
    except TypeError:  # an unhashable annotation: let typing judge it
        pass
    import typing

    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable annotations: the implementation gets plain data
        return None
    targets = [(i, n, hints[n]) for i, n in enumerate(names) if n in hints and codec.needs_structuring(hints[n])]
    if not targets:
        return None

    def convert(values: list[Any], hook: str) -> list[Any]:
        for i, name, tp in targets:
            try:
                values[i] = codec.structure(values[i], tp)
            except ValueError as exc:
                raise _ArgumentError(name, str(exc)) from None
        return values

    return convert


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _tb_text(exc: BaseException, skip: int = 0) -> str:
    """Formatted traceback, without this module's own ``skip`` frames."""
    tb = exc.__traceback__
    for _ in range(skip):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    try:
        import traceback

        return "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:  # e.g. out of descriptors, the very error being reported: frames only
        lines = ["Traceback (most recent call last):\n"]
        while tb is not None:
            code = tb.tb_frame.f_code
            lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}\n')
            tb = tb.tb_next
        return "".join(lines) + f"{_type_name(exc)}: {exc}\n"


_encode_frame = codec.encode_frame
_PLAIN = frozenset((type(None), bool, int, float, str, bytes, list, dict, tuple))


def _error_msg(kind: str, exc: BaseException, index: int | None, skip: int) -> list[Any]:
    """The ERR frame describing ``exc`` (MemoryError counts as a resource error)."""
    if isinstance(exc, MemoryError):
        kind = "resource"
    return [ERR, kind, _type_name(exc), str(exc), _tb_text(exc, skip), index]


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
        self.impls: dict[str, _Impl] = {}

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

    def send(self, msg: list[Any]) -> None:
        """Send ``msg``; a value that cannot cross becomes an ``ERR`` frame instead."""
        try:
            frame = _encode_frame(msg, self.max_message)
        except PluginResourceError as exc:
            frame = codec.encode_frame([ERR, "resource", "MessageTooLarge", exc.message, "", None])
        except Exception as exc:
            text = codec.describe_error(exc)
            frame = codec.encode_frame([ERR, "codec", _type_name(exc), text, "", None])
        self._write(frame)

    def send_error(self, kind: str, exc: BaseException, index: int | None = None, skip: int = 1) -> None:
        self.send(_error_msg(kind, exc, index, skip))

    # -- lifecycle -------------------------------------------------------
    def handshake(self) -> bool:
        """Read HELLO, load the plugin, answer READY (or a load error); False if it failed."""
        msg = self._reader.read()
        if not isinstance(msg, list) or not msg or msg[0] != HELLO:
            raise EOFError("expected HELLO")
        config: dict[str, Any] = msg[1]
        self.max_message = int(config.get("max_message") or codec.MAX_FRAME)
        self._reader.max_size = self.max_message
        for entry in reversed(config.get("path") or []):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        try:
            self.impls = load_impls(config["module"], config.get("attr"), config["hooks"])
        except LoadError as exc:
            self.send([ERR, "load", "LoadError", str(exc), "", None])
            return False
        except BaseException as exc:  # anything the plugin's import raised, even SystemExit
            self.send_error("load", exc, skip=0)
            return False
        opts = {h: {k: bool(i.opts.get(k)) for k in ("tryfirst", "trylast")} for h, i in self.impls.items()}
        self.send([READY, {"impls": opts, "codec": self._implementation or codec.implementation()}])
        return True

    def serve_forever(self) -> None:
        """Answer requests until BYE or the host closes the channel."""
        read, raw_write, impls, max_message = self._reader.read, self._raw_write, self.impls, self.max_message
        while True:
            try:
                msg = read()
            except (EOFError, PluginError):  # closed, or out of step: nothing sane to answer
                return
            kind = msg[0]
            if kind == CALL:
                # Inlined fast path: a plain result of an implementation taking every argument.
                impl = impls.get(msg[1])
                if impl is not None and impl.whole:
                    try:
                        result = impl.func(*msg[2])
                    except BaseException as exc:
                        self.send_error("hook", exc, skip=1)
                        continue
                    if type(result) in _PLAIN:
                        try:
                            frame = _encode_frame([OK, result], max_message)
                        except Exception:
                            self.send([OK, result])  # reports why as an ERR frame
                            continue
                        n = raw_write(frame)
                        if n is not None and n < len(frame):
                            self._write_rest(frame, n)
                        continue
                    self.reply(result)
                else:
                    self.call(msg[1], msg[2])
            elif kind == BATCH:
                self.batch(msg[1], msg[2])
            elif kind == BYE:
                return
            else:
                self.send([ERR, "protocol", "ProtocolError", f"unexpected message {kind!r}", "", None])

    # -- requests --------------------------------------------------------
    def _impl(self, hook: str) -> _Impl | None:
        impl = self.impls.get(hook)
        if impl is None:
            self.send([ERR, "protocol", "ProtocolError", f"no implementation of {hook!r}", "", None])
        return impl

    def call(self, hook: str, args: list[Any]) -> None:
        impl = self._impl(hook)
        if impl is None:
            return
        try:
            call_args = impl.arguments(args, hook)
        except _ArgumentError as exc:
            self.send([ERR, "codec", "CodecError", exc.reason, "", None, exc.argument])
            return
        try:
            result = impl.func(*call_args)
        except BaseException as exc:
            self.send_error("hook", exc, skip=1)
            return
        self.reply(result)

    def reply(self, result: Any) -> None:
        """Answer a call with ``result``: streamed if it is an iterator, else one OK frame."""
        if type(result) not in _PLAIN and isinstance(result, Iterator):
            self.stream(result)
        else:
            self.send([OK, result])

    def batch(self, hook: str, items: list[list[Any]]) -> None:
        impl = self._impl(hook)
        if impl is None:
            return
        func, arguments = impl.func, impl.arguments
        results: list[Any] = []
        append = results.append
        try:
            if impl.whole:
                for args in items:
                    append(func(*args))
            else:
                for args in items:
                    call_args = arguments(args, hook)
                    append(func(*call_args))
        except _ArgumentError as exc:
            self.send([ERR, "codec", "CodecError", exc.reason, "", len(results), exc.argument])
            return
        except BaseException as exc:
            self.send_error("hook", exc, index=len(results), skip=1)
            return
        if not {type(r) for r in results} <= _PLAIN:  # a batch has no room for streams
            for index, result in enumerate(results):
                if isinstance(result, Iterator):
                    try:
                        results[index] = list(result)
                    except BaseException as exc:
                        self.send_error("hook", exc, index=index, skip=1)
                        return
        self.send([OK, results])

    def stream(self, it: Iterator[Any]) -> None:
        """Send ``it``'s items in growing chunks, waiting for MORE after each one.

        Chunks start at one item (the first arrives at once) and double up
        to :data:`CHUNK_ITEMS`; a chunk also closes at :data:`CHUNK_BYTES`
        or once its first item is :data:`CHUNK_AGE` old (checked as items
        arrive).  Items pulled before an error are delivered, then the error.
        """
        limit = 1
        carry: list[bytes] = []
        try:
            while True:
                items, error, done = self._fill_chunk(it, limit, carry)
                if items or error is None:
                    last = done and error is None
                    body = _array_header(2) + bytes((END if last else CHUNK,))
                    body += _array_header(len(items)) + b"".join(items)
                    self._write(codec.HEADER.pack(len(body)) + body)
                    if last:
                        return
                    if self._reader.read()[0] != MORE:
                        self.send([END, []])
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
        self, it: Iterator[Any], limit: int, carry: list[bytes]
    ) -> tuple[list[bytes], list[Any] | None, bool]:
        """Pull and encode up to ``limit`` items: ``(items, error frame or None, exhausted)``.

        An item that would push the chunk past the message limit is left in
        ``carry`` to open the next chunk.
        """
        items: list[bytes] = carry[:]
        carry.clear()
        size = sum(map(len, items))
        started = time.monotonic()
        budget = self.max_message - 16  # room for the chunk's own headers
        while len(items) < limit and size < CHUNK_BYTES and time.monotonic() - started <= CHUNK_AGE:
            try:
                item = next(it)
            except StopIteration:
                return items, None, True
            except BaseException as exc:
                return items, _error_msg("hook", exc, None, 1), True
            try:
                data = codec.encode(item)
            except Exception as exc:
                return items, [ERR, "codec", _type_name(exc), codec.describe_error(exc), "", None], True
            if len(data) > budget:
                msg = f"stream item of {len(data)} bytes exceeds the {self.max_message}-byte limit"
                return items, [ERR, "resource", "MessageTooLarge", msg, "", None], True
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


def _limit_memory(megabytes: int) -> None:
    """Cap this process's address space (RLIMIT_AS): every mapping counts.

    That is heap, thread stacks, mmapped files and shared libraries alike, so
    the cap must leave room for the interpreter (~30 MiB of mappings) on top
    of what the plugin means to use.  Allocations beyond it fail, which
    Python reports as MemoryError.
    """
    import resource

    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _move_down(fd: int) -> int:
    """``fd`` renumbered to the lowest free descriptor (the host passes its own, often high, numbers)."""
    import os

    low = os.dup(fd)  # the lowest free number, not inheritable
    if low < fd:
        os.close(fd)
        return low
    os.close(low)
    return fd


def _limit_open_files(count: int, highest: int) -> None:
    """Let the plugin hold ``count`` more descriptors than this process has open now (RLIMIT_NOFILE).

    The limit bounds descriptor *numbers*, so it counts from the highest in
    use (``highest`` if procfs cannot say); soft and hard alike, so the
    plugin cannot raise it again.
    """
    import os
    import resource

    try:
        listed = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        listed = []
    for fd in listed:  # the listing's own descriptor, closed by now, is not in use
        try:
            os.fstat(fd)
            highest = max(highest, fd)
        except OSError:
            pass
    limit = highest + 1 + count
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def main(argv: Sequence[str] | None = None) -> int:
    """Worker-process entry: ``_guest READ_FD WRITE_FD MEMORY_MB [OPEN_FILES]``."""
    import io
    import os
    import signal

    args = list(sys.argv[1:] if argv is None else argv)
    read_fd, write_fd, memory_mb = int(args[0]), int(args[1]), int(args[2])
    open_files = int(args[3]) if len(args) > 3 else 0
    # Ctrl-C in a terminal reaches the whole process group; the host decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_mb > 0:
        _limit_memory(memory_mb)
    if open_files > 0:
        read_fd, write_fd = _move_down(read_fd), _move_down(write_fd)
        if argv is None:  # keep ``sys.argv`` saying where the channel is
            sys.argv[1:3] = [str(read_fd), str(write_fd)]
        _limit_open_files(open_files, max(read_fd, write_fd))
    for fd in (read_fd, write_fd):  # nothing the plugin starts inherits the channel
        os.set_inheritable(fd, False)
    reader = io.FileIO(read_fd, "rb", closefd=True)
    writer = io.FileIO(write_fd, "wb", closefd=True)
    try:
        return serve(reader.read, writer.write)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
