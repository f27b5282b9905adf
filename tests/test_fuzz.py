"""Boundary fuzzing: values round-trip through every backend, and hostile frames fail safely.

The value rules tested here are the codec's documented ones (:mod:`pluginsdk.codec`):
plain data (None, bool, int within 64 bits, float, str, bytes, list, tuple,
dict with keys of those hashable kinds) crosses unchanged, except that tuples
arrive as lists.  Two more rules come from pluggy rather than the codec: a
hook returning ``None`` contributes no result, so echoing ``None`` gives
``[]``; and NaN is compared as "also NaN" (it never equals itself).  Values
are compared strictly: same types (``True`` is not ``1``), same float bits
(``-0.0`` is not ``0.0``), same dict order.
"""

from __future__ import annotations

import functools
import math
import os
import struct
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pluginsdk import HookSpec, Host, codec, hookspec
from pluginsdk._errors import CodecError, PluginResourceError
from pluginsdk.backends.wasm import WasmBackend
from pluginsdk.guest.fastcodec import MARSHAL_MARK, make_fast_pack, make_fast_unpack

from .plugin_factory import install_plugin

_WASM_REASON = WasmBackend.unavailable_reason()
_WASM = pytest.param(
    "wasm",
    marks=[
        pytest.mark.wasm,
        pytest.mark.skipif(_WASM_REASON is not None, reason=f"wasm backend unavailable: {_WASM_REASON}"),
    ],
)
LEVELS = ["inprocess", "process", _WASM]


class FuzzHooks:
    @hookspec
    def echo(self, value: Any) -> Any:
        """Return ``value`` unchanged."""


SPEC = HookSpec("fuzzkit", version="1.0", hooks=FuzzHooks)

ECHO_PLUGIN = """
from pluginsdk import hookimpl

@hookimpl
def echo(value):
    return value
"""

ECHO_MANIFEST = """
[plugin]
requires = "fuzzkit>=1.0,<2"
isolation = "inprocess"
hooks = ["echo"]

[limits]
workers = 1
"""

# --- values -----------------------------------------------------------------

INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
LEAVES = (
    st.none()
    | st.booleans()
    | INT64
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
# Non-string keys are documented to cross too; floats are left out (a NaN key never compares equal).
KEYS = st.text(max_size=10) | INT64 | st.binary(max_size=10) | st.booleans() | st.none()
VALUES = st.recursive(
    LEAVES | st.text(min_size=200, max_size=400) | st.binary(min_size=200, max_size=700),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.tuples(inner, inner)
        | st.dictionaries(KEYS, inner, max_size=6)
        | st.lists(st.integers(0, 3), min_size=16, max_size=40)  # past fixarray's 15 items
    ),
    max_leaves=25,
)


def wire(value: Any) -> Any:
    """``value`` as it arrives from across a boundary: tuples become lists, nothing else changes."""
    if isinstance(value, (list, tuple)):
        return [wire(v) for v in value]
    if isinstance(value, dict):
        return {k: wire(v) for k, v in value.items()}
    return value  # (recursive: only for the generated values, which are shallow)


def echoed(value: Any, level: str) -> list[Any]:
    """What ``host.hook.echo(value=value)`` returns at ``level``."""
    if value is None:
        return []  # pluggy: None is "no result"
    return [value if level == "inprocess" else wire(value)]


def same(a: Any, b: Any) -> bool:
    """Strict equality: same types, NaN equals NaN, floats compared bit for bit, dict order kept."""
    stack = [(a, b)]  # iterative: deeply nested values must not exhaust the test's own stack
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            if not ((math.isnan(x) and math.isnan(y)) or struct.pack(">d", x) == struct.pack(">d", y)):
                return False
        elif isinstance(x, (list, tuple)):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif isinstance(x, dict):
            if len(x) != len(y):
                return False
            for (kx, vx), (ky, vy) in zip(x.items(), y.items()):
                stack += [(kx, ky), (vx, vy)]
        elif x != y:
            return False
    return True


class Same:
    """Wraps a value so ``expected == actual`` asserts use :func:`same` (and pytest shows both)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return same(self.value, other.value if isinstance(other, Same) else other)

    def __repr__(self) -> str:
        return repr(self.value)


def nested(depth: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``depth`` one-item lists."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# --- hosts ------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A site with the echo plugin, on ``sys.path`` for the module (the in-process level imports it)."""
    root = tmp_path_factory.mktemp("fuzz-site")
    install_plugin(
        root, "echo", ECHO_PLUGIN, module="fuzzkit_echo", dist="fuzzkit-echo", group="fuzzkit.plugins",
        manifest=ECHO_MANIFEST,
    )  # fmt: skip
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("fuzzkit_echo", None)


@pytest.fixture(scope="module", params=LEVELS)
def echo_host(request: pytest.FixtureRequest, echo_site: Path) -> Iterator[tuple[str, Host]]:
    """One warm host per isolation level, reused by every example."""
    level = request.param
    with Host(SPEC, path=[str(echo_site)], force_isolation=level, prewarm=True) as host:
        info = host.load("echo")
        assert ("loaded", "") == (info.status, info.reason)
        yield level, host


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BOUNDARY_VALUES = [
    *sorted({n for k in (7, 8, 16, 32, 64) for n in (2 ** (k - 1) - 1, 2 ** (k - 1), 2**k - 1, 2**k)} - {2**64}),
    *(-n for k in (5, 7, 8, 15, 16, 31, 32, 63) for n in (2**k, 2**k + 1) if n <= 2**63),
    *("x" * n for n in (31, 32, 255, 256, 65535, 65536)),
    *(b"x" * n for n in (0, 255, 256, 65535, 65536)),
    list(range(65536)),
    {i: i for i in range(65536)},
    float("inf"),
    -0.0,
    5e-324,
    "\U0010ffff\x00é",
]


def boundary_id(value: Any) -> str:
    if isinstance(value, (str, bytes, list, dict)):
        return f"{type(value).__name__}{len(value)}"
    return repr(value)


class TestRoundTrip:
    @FUZZ
    @given(value=VALUES)
    @example(value=None)
    @example(value=float("nan"))
    @example(value={1: (True, -0.0), b"k": [None], "": {False: b""}})
    def test_echo_returns_the_value(self, echo_host: tuple[str, Host], value: Any) -> None:
        """Any value the codec accepts comes back unchanged (tuples as lists) from a call."""
        level, host = echo_host
        assert Same(echoed(value, level)) == host.hook.echo(value=value)

    @FUZZ
    @given(values=st.lists(VALUES, min_size=1, max_size=8))
    def test_map_returns_each_value(self, echo_host: tuple[str, Host], values: list[Any]) -> None:
        """A batch returns every item's value, in order (large batches reach the sandbox as marshal)."""
        level, host = echo_host
        assert Same([echoed(v, level) for v in values]) == host.hook.echo.map([{"value": v} for v in values])

    @pytest.mark.parametrize("value", BOUNDARY_VALUES, ids=boundary_id)
    def test_encoding_boundaries(self, echo_host: tuple[str, Host], value: Any) -> None:
        """Values at each msgpack size-class boundary (ints, strings, bytes, arrays, maps) come back unchanged."""
        level, host = echo_host
        assert Same(echoed(value, level)) == host.hook.echo(value=value)
        assert Same([echoed(value, level)]) == host.hook.echo.map([{"value": value}])

    @pytest.mark.parametrize("depth", [100, 494, 495, 900, 1000])
    def test_deep_nesting(self, echo_host: tuple[str, Host], depth: int) -> None:
        """Lists nested as deep as the host's encoder allows (1022 levels) come back unchanged from a call."""
        _level, host = echo_host
        assert Same([nested(depth)]) == host.hook.echo(value=nested(depth))

    @pytest.mark.parametrize(
        "value",
        [2**64, -(2**63) - 1, object(), "\ud800", [1, {"x": object()}]],
        ids=["big", "small", "obj", "surrogate", "nested"],
    )
    def test_unencodable_values_are_refused(self, echo_host: tuple[str, Host], value: Any) -> None:
        """Values the codec refuses raise CodecError before crossing (in-process they pass as they are)."""
        level, host = echo_host
        if level == "inprocess":
            assert [value] == host.hook.echo(value=value)
            return
        with pytest.raises(CodecError) as info:
            host.hook.echo(value=value)
        assert ("echo", "value") == (info.value.hook, info.value.argument)
        assert Same(["still fine"]) == host.hook.echo(value="still fine")


class TestGuestCodec:
    """The sandbox's specialised codecs against the codec itself, run here on the host."""

    @settings(max_examples=200, deadline=None)
    @given(value=VALUES)
    def test_fast_pack_gives_msgpack_bytes(self, value: Any) -> None:
        """The guest's fast encoder produces the codec's exact bytes for any plain value."""
        assert codec.encode(value) == make_fast_pack(codec.encode)(value)

    @settings(max_examples=200, deadline=None)
    @given(value=VALUES)
    def test_fast_unpack_reads_what_the_codec_writes(self, value: Any) -> None:
        """The guest's fast decoder reads any encoded plain value as the codec does."""
        data = codec.encode(value)
        assert Same(codec.decode(data)) == make_fast_unpack(codec.decode)(data)

    @settings(max_examples=300, deadline=None)
    @given(data=st.binary(max_size=64).filter(lambda b: not b.startswith(MARSHAL_MARK)))
    def test_fast_unpack_agrees_on_any_bytes(self, data: bytes) -> None:
        """On arbitrary bytes the fast decoder returns what the codec returns, or raises CodecError as it does."""
        try:
            expected: Any = Same(codec.decode(data))
        except CodecError:
            expected = CodecError
        try:
            actual: Any = make_fast_unpack(codec.decode)(data)
        except CodecError:
            actual = CodecError
        assert expected == actual

    def test_fast_unpack_deep_nesting(self) -> None:
        """Input nested deeper than the recursion limit gives what the codec gives, not RecursionError."""
        data = codec.encode(nested(sys.getrecursionlimit()))
        assert Same(codec.decode(data)) == make_fast_unpack(codec.decode)(data)


# --- frames -----------------------------------------------------------------

MAX = 4096  # the readers' limit: small, so "oversized" is cheap to claim
ERRORS = (CodecError, PluginResourceError, EOFError)  # FrameReader.read's documented failures


def pipe_reader(data: bytes, *, step: int | None = None, max_size: int = MAX) -> tuple[codec.FrameReader, int]:
    """A FrameReader over a real pipe holding ``data``, its write end closed (so EOF always comes).

    ``step`` caps each ``read`` to split frames at arbitrary points.  Returns the reader and the
    pipe's read fd (closed by the caller).
    """
    r, w = os.pipe()
    writer = None
    if len(data) <= 32768:  # fits the pipe's buffer: write it all now
        os.write(w, data)
        os.close(w)
    else:

        def feed() -> None:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(w, view) :]
            except OSError:  # the reader stopped early and closed its end
                pass
            finally:
                os.close(w)

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
    read: Callable[[int], bytes] = functools.partial(os.read, r)
    if step is not None:
        read = functools.partial(lambda n, s: os.read(r, min(n, s)), s=step)
    return codec.FrameReader(read, max_size=max_size), r


def drain(reader: codec.FrameReader, size: int) -> tuple[list[Any], BaseException | None]:
    """Read frames until one fails; each frame costs 4+ bytes, so at most ``size // 4 + 1`` reads."""
    values = []
    for _ in range(size // 4 + 1):
        try:
            values.append(reader.read())
        except Exception as exc:
            return values, exc
    raise AssertionError(f"{len(values)} frames read out of {size} bytes")


def frame(value: Any) -> bytes:
    return codec.encode_frame(value)


# Random bodies behind well-formed headers (within the limit), so decoding is reached too.
FRAMED_JUNK = st.lists(
    st.binary(max_size=MAX).map(lambda b: struct.pack(">I", len(b)) + b) | st.binary(max_size=20), max_size=4
).map(b"".join)


class TestFrames:
    @settings(max_examples=300, deadline=None)
    @given(data=st.binary(max_size=8192) | FRAMED_JUNK)
    def test_random_bytes_fail_with_a_documented_error(self, data: bytes) -> None:
        """Random bytes give plain values, then CodecError, PluginResourceError or EOFError, never a hang."""
        reader, fd = pipe_reader(data)
        try:
            _, error = drain(reader, len(data))
        finally:
            os.close(fd)
        assert isinstance(error, ERRORS), repr(error)

    @settings(max_examples=100, deadline=None)
    @given(values=st.lists(VALUES, max_size=5), step=st.integers(1, 70000))
    def test_frames_survive_any_read_boundaries(self, values: list[Any], step: int) -> None:
        """Frames split at arbitrary read boundaries decode to their values, then EOF."""
        data = b"".join(frame(v) for v in values)
        reader, fd = pipe_reader(data, step=step, max_size=1 << 20)
        try:
            got, error = drain(reader, len(data))
        finally:
            os.close(fd)
        assert Same([wire(v) for v in values]) == got
        assert isinstance(error, EOFError)

    @settings(max_examples=100, deadline=None)
    @given(value=VALUES, data=st.data())
    def test_truncated_frame_is_eof(self, value: Any, data: st.DataObject) -> None:
        """A frame cut anywhere raises EOFError once the peer has closed, not a hang or a bogus value."""
        whole = frame(value)
        cut = data.draw(st.integers(0, len(whole) - 1), label="cut")
        reader, fd = pipe_reader(whole[:cut], max_size=1 << 20)
        try:
            with pytest.raises(EOFError):
                reader.read()
        finally:
            os.close(fd)

    @settings(max_examples=100, deadline=None)
    @given(claimed=st.integers(MAX + 1, 2**32 - 1), tail=st.binary(max_size=100_000))
    @example(claimed=2**32 - 1, tail=b"")
    @example(claimed=MAX + 1, tail=b"x" * (MAX + 1))
    def test_oversized_header_is_refused_with_bounded_memory(self, claimed: int, tail: bytes) -> None:
        """A header claiming more than the limit (up to 4 GiB) raises PluginResourceError without buffering it."""
        reader, fd = pipe_reader(struct.pack(">I", claimed) + tail)
        tracemalloc.start()
        try:
            with pytest.raises(PluginResourceError, match=f"{claimed} bytes exceeds the {MAX}-byte limit"):
                reader.read()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            os.close(fd)
        assert peak < 256 * 1024, peak  # one 64 KiB read, and change

    @pytest.mark.parametrize(
        "body",
        [
            b"\xdd\xff\xff\xff\xff",  # array claiming 4 billion items
            b"\xdb\xff\xff\xff\xff" + b"x" * 100,  # str claiming 4 GiB
            b"\xdf\xff\xff\xff\xff\x01",  # map claiming 4 billion pairs
            b"\x91" * (MAX - 1) + b"\xc0",  # nesting bomb, as deep as the limit allows
            b"\xc7\xff\x05" + b"e" * 255,  # extension type
            b"\x81\x81\x01\x02\x03",  # unhashable map key (a map; an array key is read as a tuple)
        ],
        ids=["array", "str", "map", "nesting", "ext", "key"],
    )
    def test_hostile_body_is_codec_error_with_bounded_memory(self, body: bytes) -> None:
        """A frame within the limit whose body claims huge lengths raises CodecError, costing about its own size."""
        reader, fd = pipe_reader(struct.pack(">I", len(body)) + body)
        tracemalloc.start()
        try:
            with pytest.raises(CodecError, match="malformed"):
                reader.read()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            os.close(fd)
        assert peak < 1024 * 1024, peak

    def test_missing_body_ends_in_eof_when_the_writer_closes(self) -> None:
        """A header promising a body that never comes ends in EOFError when the writer goes away."""
        r, w = os.pipe()
        reader = codec.FrameReader(functools.partial(os.read, r), max_size=MAX)
        os.write(w, struct.pack(">I", MAX) + b"partial")
        closer = threading.Timer(0.2, os.close, (w,))
        closer.start()
        try:
            with pytest.raises(EOFError, match=f"after {4 + len(b'partial')} of {4 + MAX} bytes"):
                reader.read()
        finally:
            closer.join()
            os.close(r)
