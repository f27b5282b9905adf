"""The sandbox's codec: msgpack's exact bytes, faster than msgpack's own pure-Python implementation.

:func:`make_fast_unpack` and :func:`make_fast_pack` are specialised
pure-Python codecs for plain data that give msgpack's exact results several
times faster than msgpack's pure-Python fallback (~30 µs to decode a tiny
call in the sandbox, where C extensions cannot load); anything unusual goes
to msgpack itself.  Large frames from the host (batches) come as marshal,
decoded ~7x faster still: the guest trusts its host (never the other way
round; frames *to* the host are always msgpack).

Guest-safe: the standard library only.
"""

from __future__ import annotations

import marshal
import struct

TYPE_CHECKING = False  # typing costs start-up time in the sandbox: annotations only
if TYPE_CHECKING:
    from typing import Any

_FIXSTR = [bytes((0xA0 | n,)) for n in range(32)]
_FIXARRAY = [bytes((0x90 | n,)) for n in range(16)]
_FIXMAP = [bytes((0x80 | n,)) for n in range(16)]
_POSFIX = [bytes((n,)) for n in range(128)]
_pack_f64 = struct.Struct(">Bd").pack
_pack_i = {
    code: struct.Struct(fmt).pack
    for code, fmt in (
        (0xCC, ">BB"),
        (0xCD, ">BH"),
        (0xCE, ">BI"),
        (0xCF, ">BQ"),
        (0xD0, ">Bb"),
        (0xD1, ">Bh"),
        (0xD2, ">Bi"),
        (0xD3, ">Bq"),
        (0xD9, ">BB"),
        (0xDA, ">BH"),
        (0xDB, ">BI"),
        (0xC4, ">BB"),
        (0xC5, ">BH"),
        (0xC6, ">BI"),
        (0xDC, ">BH"),
        (0xDD, ">BI"),
        (0xDE, ">BH"),
        (0xDF, ">BI"),
    )
}


class _Slow(Exception):
    """A value :func:`fast_pack` leaves to msgpack's own Packer."""


def _sized(small: list[bytes], codes: tuple[int, int, int], n: int) -> bytes:
    if n < len(small):
        return small[n]
    if n <= 0xFF and codes[0]:
        return _pack_i[codes[0]](codes[0], n)
    if n <= 0xFFFF:
        return _pack_i[codes[1]](codes[1], n)
    if n <= 0xFFFFFFFF:
        return _pack_i[codes[2]](codes[2], n)
    raise _Slow


def _int(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _POSFIX[n]
    if -0x20 <= n < 0:
        return struct.pack("b", n)
    if 0 <= n:
        for code, top in ((0xCC, 0xFF), (0xCD, 0xFFFF), (0xCE, 0xFFFFFFFF), (0xCF, 0xFFFFFFFFFFFFFFFF)):
            if n <= top:
                return _pack_i[code](code, n)
    else:
        for code, low in ((0xD0, -0x80), (0xD1, -0x8000), (0xD2, -0x80000000), (0xD3, -0x8000000000000000)):
            if n >= low:
                return _pack_i[code](code, n)
    raise _Slow


def _enc(obj: Any, out: bytearray) -> None:
    t = type(obj)
    if t is str:
        if len(obj) < 32 and obj.isascii():
            out += _FIXSTR[len(obj)]
            out += obj.encode()
        else:
            b = obj.encode()
            out += _sized(_FIXSTR, (0xD9, 0xDA, 0xDB), len(b))
            out += b
    elif t is list or t is tuple:
        out += _sized(_FIXARRAY, (0, 0xDC, 0xDD), len(obj))
        for x in obj:
            t = type(x)
            if t is str and len(x) < 32 and x.isascii():  # the common items, inlined: short text,
                out += _FIXSTR[len(x)]
                out += x.encode()
            elif t is int and 0 <= x < 0x80:  # and small numbers (a frame's kind and request id)
                out += _POSFIX[x]
            else:
                _enc(x, out)
    elif t is int:
        out += _int(obj)
    elif obj is None:
        out += b"\xc0"
    elif t is bool:
        out += b"\xc3" if obj else b"\xc2"
    elif t is float:
        out += _pack_f64(0xCB, obj)
    elif t is dict:
        out += _sized(_FIXMAP, (0, 0xDE, 0xDF), len(obj))
        for k, v in obj.items():
            _enc(k, out)
            _enc(v, out)
    elif t is bytes:
        out += _sized([], (0xC4, 0xC5, 0xC6), len(obj))
        out += obj
    else:
        raise _Slow


def make_fast_pack(slow_pack: Any) -> Any:
    """``pack(obj) -> bytes`` producing msgpack's exact bytes; ``slow_pack`` takes what it can't."""

    def fast_pack(obj: Any) -> bytes:
        out = bytearray()
        try:
            _enc(obj, out)
        except (_Slow, RecursionError, UnicodeError):
            return bytes(slow_pack(obj))
        return bytes(out)

    return fast_pack


def _str(b: bytes, i: int, n: int) -> tuple[str, int]:
    j = i + n
    return b[i:j].decode(), j


def _dec(b: bytes, i: int) -> tuple[Any, int]:
    """One msgpack value of ``b`` at ``i``: ``(value, next index)``; ``_Slow`` for what it leaves."""
    c = b[i]
    i += 1
    if c < 0x80:
        return c, i
    if c >= 0xE0:
        return c - 0x100, i
    if c >= 0xA0 and c < 0xC0:
        j = i + (c & 0x1F)
        return b[i:j].decode(), j
    if c >= 0x90 and c < 0xA0:
        return _array(b, i, c & 0x0F)
    if c >= 0x80 and c < 0x90:
        return _map(b, i, c & 0x0F)
    if c == 0xC0:
        return None, i
    if c == 0xC2:
        return False, i
    if c == 0xC3:
        return True, i
    fmt = _UNPACK.get(c)
    if fmt is None:  # ext types, reserved byte: msgpack's own decoder decides
        raise _Slow
    kind, st = fmt
    (v,) = st.unpack_from(b, i)
    i += st.size
    if kind == 0:
        return v, i
    if kind == 1:
        return _str(b, i, v)
    if kind == 2:
        return bytes(b[i : i + v]), i + v
    if kind == 3:
        return _array(b, i, v)
    return _map(b, i, v)


def _array(b: bytes, i: int, n: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    append = out.append
    for _ in range(n):
        c = b[i]
        if c < 0x80:  # positive fixint, inlined: a frame's kind and request id, small numbers
            append(c)
            i += 1
        elif c >= 0xA0 and c < 0xC0:  # fixstr, the common item, inlined
            j = i + 1 + (c & 0x1F)
            append(b[i + 1 : j].decode())
            i = j
        else:
            v, i = _dec(b, i)
            append(v)
    return out, i


def _map(b: bytes, i: int, n: int) -> tuple[dict[Any, Any], int]:
    out: dict[Any, Any] = {}
    for _ in range(n):
        k, i = _dec(b, i)
        v, i = _dec(b, i)
        out[k] = v
    return out, i


# type byte -> (kind, struct): kind 0 number, 1 str, 2 bin, 3 array, 4 map (length follows)
_UNPACK = {
    code: (kind, struct.Struct(fmt))
    for code, kind, fmt in (
        (0xCC, 0, ">B"), (0xCD, 0, ">H"), (0xCE, 0, ">I"), (0xCF, 0, ">Q"),
        (0xD0, 0, ">b"), (0xD1, 0, ">h"), (0xD2, 0, ">i"), (0xD3, 0, ">q"),
        (0xCA, 0, ">f"), (0xCB, 0, ">d"),
        (0xD9, 1, ">B"), (0xDA, 1, ">H"), (0xDB, 1, ">I"),
        (0xC4, 2, ">B"), (0xC5, 2, ">H"), (0xC6, 2, ">I"),
        (0xDC, 3, ">H"), (0xDD, 3, ">I"), (0xDE, 4, ">H"), (0xDF, 4, ">I"),
    )
}  # fmt: skip


#: Opens a host frame whose body is marshal: 0xC1 is the one byte msgpack never uses.
MARSHAL_MARK = b"\xc1"


def make_fast_unpack(slow_unpack: Any) -> Any:
    """``unpack(data)`` giving what ``codec.decode`` gives; ``slow_unpack`` takes what it can't.

    For frames from the host, which the guest trusts: anything unexpected
    (ext types, trailing bytes, unhashable keys, bad UTF-8) goes to msgpack.
    """

    def fast_unpack(data: bytes | memoryview) -> Any:
        b = bytes(data)
        if b[:1] == MARSHAL_MARK:  # a large frame the host sent as marshal
            try:
                return marshal.loads(memoryview(b)[1:])
            except (EOFError, ValueError, TypeError):
                return slow_unpack(b)  # not marshal after all: the codec's own error
        try:
            value, end = _dec(b, 0)
            if end == len(b):
                return value
        except (_Slow, IndexError, TypeError, UnicodeError, RecursionError, struct.error):
            pass
        return slow_unpack(b)

    return fast_unpack
