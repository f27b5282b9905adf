"""The one codec for everything that crosses a process or sandbox boundary.

Guest-safe: imported by worker processes and by the WASM guest, so it imports
only the standard library at module level; ``msgpack`` (and ``cattrs`` for
values that are not plain data) are imported on first use.

Wire format: msgpack.  Measured here (CPython 3.11, µs, encode / decode)::

    ==================  ==============  ==============  ====================  ===========
    payload             msgpack C       json (C)        msgpack pure-Python   msgspec
    ==================  ==============  ==============  ====================  ===========
    tiny call           0.43 / 0.20     2.4 / 1.9       3.7 / 5.1             0.09 / 0.16
    typical dict        0.85 / 0.81     4.4 / 3.6       15 / 18               0.29 / 0.51
    20k strings         390 / 1070      2200 / 1330     10900 / 16000         102 / 1030
    ==================  ==============  ==============  ====================  ===========

msgpack has a safe decoder (plain values only, every length capped by the
input's size), carries bytes and non-string map keys (so values mean the
same at every isolation level), is 5x faster than json here, and has a
pure-Python implementation of the same format for where C extensions cannot
load (CPython on WASI: ``msgpack`` falls back by itself).  msgspec is faster
still but has no pure-Python path; marshal and pickle are unsafe to decode
from an untrusted peer.  A guest may read its *trusted* host's frames with
another decoder (:class:`FrameReader`'s ``decode``; the sandbox uses marshal)
and encode with a faster encoder of the same bytes (:func:`install_packer`).

Frames: a 4-byte big-endian length, then one msgpack document.  A reader
rejects a header announcing more than its limit before reading the body, so
an oversized or truncated frame costs bounded memory and never hangs on data
that is not coming.

Values (the contract: docs/values.md): plain data (None, bool, int up to 64
bits, float, str, bytes, list, tuple, dict, with keys of those kinds) crosses
as is (tuples arrive as lists, except as dict keys); anything else is
unstructured with a private :class:`cattrs.Converter` (attrs classes,
dataclasses, enums, sets, dates and times as ISO text) or refused.
:func:`from_wire`/:func:`converter` structure values back by an annotation
(the host: the spec's return type; the guest: an implementation's parameter
types), from :mod:`pluginsdk._structure`.  Errors name the path to the part of a value to blame, found by
walking the value again once something failed (:mod:`pluginsdk._values`).
"""

from __future__ import annotations

import _thread
import struct

from ._errors import CodecError, PluginError, PluginResourceError
from ._structure import PLAIN_TYPES as _PLAIN_TYPES
from ._structure import (  # structuring by annotation: part of this module's API
    StructureError,
    argument_types,
    converter,
    from_wire,
    is_stream_type,
    item_type,
    needs_structuring,
    plain_types,
    structure,
)
from ._structure import (
    get_converter as _get_converter,
)

# Guest-safe modules import neither typing nor collections.abc at run time: the
# sandbox's start-up pays for every import (see pluginsdk.guest).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

__all__ = [
    "HEADER",
    "FrameReader",
    "decode",
    "default",
    "encode",
    "encode_frame",
    "converter",
    "from_wire",
    "needs_structuring",
    "structure",
    "StructureError",
    "argument_types",
    "locate_unencodable",
    "unencodable_error",
    "implementation",
    "install_packer",
    "make_packer",
    "item_type",
    "is_stream_type",
    "plain_types",
    "unstructure",
]

#: Frame header: body length as an unsigned 32-bit big-endian integer.
HEADER = struct.Struct(">I")
MAX_FRAME = 2**32 - 1

_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from
_unpackb: Callable[..., Any] | None = None
# One reusable msgpack Packer per thread: cheaper than msgpack.packb, which
# builds a Packer per call; a Packer must not be shared between threads.
_local = _thread._local()  # threading.local itself, without importing threading


def _load_msgpack() -> None:
    """Import msgpack once (C extension if it loads, else its pure-Python twin)."""
    global _unpackb
    import msgpack

    _unpackb = msgpack.unpackb


def make_packer() -> Callable[[Any], bytes]:
    """A new ``pack(obj) -> bytes`` with the codec's msgpack options (not thread-safe)."""
    import msgpack

    packer = msgpack.Packer(default=default, use_bin_type=True, datetime=False, autoreset=True)
    pack: Callable[[Any], bytes] = packer.pack
    return pack


def install_packer(pack: Callable[[Any], bytes]) -> None:
    """Encode with ``pack`` in this thread from now on.

    For a guest that has a faster encoder producing the same msgpack bytes
    (the sandbox's specialised pure-Python one); it must raise ``TypeError``,
    ``ValueError`` or ``OverflowError`` for values it cannot encode, like msgpack.
    """
    _local.pack = pack


def _packer() -> Callable[[Any], bytes]:
    pack = make_packer()
    install_packer(pack)
    return pack


def implementation() -> str:
    """``"c"`` or ``"pure-python"``: which msgpack implementation is in use."""
    import msgpack

    return "pure-python" if msgpack.Unpacker.__module__.endswith("fallback") else "c"


def unstructure(value: Any) -> Any:
    """``value`` as plain data (cattrs for what msgpack cannot carry)."""
    if isinstance(value, _PLAIN_TYPES):
        return value
    return _get_converter().unstructure(value)


def default(value: Any) -> Any:
    """msgpack's fallback for types it does not know: unstructure once."""
    if isinstance(value, int):
        raise OverflowError(f"integer {value} does not fit in 64 bits")
    plain = unstructure(value)
    if type(plain) is type(value) or plain is value:
        raise TypeError(f"cannot encode object of type {type(value).__qualname__}")
    return plain


_default = default  # the name the sandbox's guest program first used


def encode(obj: Any) -> bytes:
    """``obj`` as one msgpack document; raise ``TypeError``/``ValueError`` if it can't be."""
    try:
        pack = _local.pack
    except AttributeError:
        pack = _packer()
    result: bytes = pack(obj)
    return result


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def decode(data: bytes | bytearray | memoryview) -> Any:
    """Decode one msgpack document safely; raise :class:`CodecError` if malformed.

    Safe for data from an untrusted peer: msgpack builds only plain Python
    values, extension types are refused, and every length is capped by the
    size of ``data`` itself, so memory stays proportional to the input.
    """
    if _unpackb is None:
        _load_msgpack()
    assert _unpackb is not None
    try:
        return _unpackb(data, raw=False, strict_map_key=False, ext_hook=_reject_ext, use_list=True)
    except TypeError as exc:
        if "unhashable" not in str(exc):
            raise CodecError(f"malformed message: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # msgpack raises several unrelated types
        raise CodecError(f"malformed message: {type(exc).__name__}: {exc}") from None
    # A map key that is an array (a tuple key, sent): read again, with such keys as tuples.
    try:
        return _unpackb(
            data, raw=False, strict_map_key=False, ext_hook=_reject_ext, use_list=True, object_pairs_hook=_tuple_keys
        )
    except Exception as exc:
        raise CodecError(f"malformed message: {type(exc).__name__}: {exc}") from None


def _tuple_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """A map whose array keys become tuples (a dict key must be hashable); only after a plain decode failed."""
    return {_frozen(k): v for k, v in pairs}


def _frozen(key: Any) -> Any:
    return tuple(_frozen(k) for k in key) if type(key) is list else key


def encode_frame(obj: Any, max_size: int = MAX_FRAME) -> bytes:
    """``obj`` encoded and framed; :class:`PluginResourceError` if over ``max_size``."""
    try:
        pack = _local.pack
    except AttributeError:
        pack = _packer()
    body: bytes = pack(obj)
    size = len(body)
    if size > max_size:
        raise PluginResourceError(f"message of {size} bytes exceeds the {max_size}-byte limit")
    return _pack_header(size) + body


def encode_args(args: Iterable[Any], names: Iterable[str], hook: str) -> list[Any]:
    """Check each argument can be encoded; raise :class:`CodecError` naming the bad one and where in it.

    Only used to explain a failed :func:`encode` (the fast path encodes the
    whole message at once).
    """
    out = []
    for name, value in zip(names, args):
        found = locate_unencodable(value)
        if found is not None:
            raise CodecError(found[1], hook=hook, argument=name, path=found[0])
        out.append(value)
    return out


def locate_unencodable(value: Any) -> tuple[str, str] | None:
    """``(path, reason)`` for the part of ``value`` that cannot be encoded, or ``None`` if it all can.

    For error paths only: it walks the value again (see :mod:`pluginsdk._values`).
    """
    from . import _values

    return _values.unencodable(value, encode, unstructure)


def unencodable_error(
    value: Any,
    exc: BaseException,
    *,
    hook: str | None = None,
    argument: str = "return value",
    plugin: str | None = None,
    index: int | None = None,
) -> CodecError:
    """The :class:`CodecError` for ``value``, whose encoding failed with ``exc``: where in it, and why."""
    found = locate_unencodable(value)
    path, reason = found if found is not None else ("", _describe(exc))
    return CodecError(reason, plugin=plugin, hook=hook, argument=argument, path=path, index=index)


def _describe(exc: BaseException) -> str:
    return f"cannot be sent: {type(exc).__name__}: {exc}"


def describe_error(exc: BaseException) -> str:
    """A one-line reason an encode failed, for :class:`CodecError` messages."""
    return _describe(exc)


class FrameReader:
    """Reads frames from ``read(n)`` (returns up to ``n`` bytes, ``b""`` at EOF).

    Buffers what one ``read`` returns beyond the current frame, so small
    messages cost one system call.  Memory is bounded by ``max_size`` plus
    one read.
    """

    __slots__ = ("_buf", "_decode", "_read", "max_size")

    def __init__(
        self,
        read: Callable[[int], bytes],
        max_size: int = MAX_FRAME,
        *,
        decode: Callable[[bytes | memoryview], Any] = decode,
    ) -> None:
        self._read = read
        self._buf = bytearray()
        self.max_size = max_size
        # Only a guest reading its trusted host may swap this (e.g. for marshal.loads).
        self._decode = decode

    def _fill(self, need: int) -> None:
        buf = self._buf
        while len(buf) < need:
            chunk = self._read(max(65536, need - len(buf)))
            if not chunk:
                raise EOFError(f"channel closed after {len(buf)} of {need} bytes" if buf else "channel closed")
            buf += chunk

    def _too_large(self, size: int, head: bytes | bytearray) -> PluginError:
        # A header that reads as text, and text after it, is no frame: someone wrote to the channel.
        if len(head) >= 16 and all(32 <= b < 127 or b in (9, 10, 13) for b in head[:16]):
            text = bytes(head[:40]).decode("ascii", "replace")
            return CodecError(f"text where a frame was expected (the peer wrote to the channel): {text!r}")
        return PluginResourceError(f"message of {size} bytes exceeds the {self.max_size}-byte limit")

    def read_body(self) -> bytes | memoryview:
        """The next frame's raw body.

        Raises:
            EOFError: the peer closed the channel (possibly mid-frame).
            PluginResourceError: the frame announces more than ``max_size`` bytes;
                the channel is then out of step and must be discarded.
        """
        if not self._buf:
            # Fast path: one read brought exactly one whole frame (most replies).
            chunk = self._read(65536)
            if len(chunk) >= 4:
                (size,) = _unpack_header(chunk)
                if len(chunk) == size + 4 and size <= self.max_size:
                    return memoryview(chunk)[4:]
            return self._rest(chunk)
        return self._rest(b"")

    def _rest(self, chunk: bytes) -> bytes | memoryview:
        """The next frame's body, the slow way: ``chunk`` (already read) and buffered bytes first."""
        buf = self._buf
        if chunk:
            buf += chunk
        elif not buf:
            raise EOFError("channel closed")
        self._fill(4)
        (size,) = _unpack_header(buf)
        if size > self.max_size:
            raise self._too_large(size, buf)
        self._fill(4 + size)
        body = bytes(buf[4 : 4 + size])
        del buf[: 4 + size]
        return body

    def read(self) -> Any:
        """The next frame, decoded (see :meth:`read_body` and :func:`decode`)."""
        if not self._buf:  # read_body's fast path, inline: it is every tiny call's reply
            chunk = self._read(65536)
            if len(chunk) >= 4:
                (size,) = _unpack_header(chunk)
                if len(chunk) == size + 4 and size <= self.max_size:
                    return self._decode(memoryview(chunk)[4:])
            return self._decode(self._rest(chunk))
        return self._decode(self._rest(b""))

    def pending(self) -> bool:
        """Whether bytes of a next frame are already buffered."""
        return bool(self._buf)
