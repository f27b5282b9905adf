"""The boundary codec (msgpack frames + cattrs) and the guest loop that speaks it."""

from __future__ import annotations

import datetime
import enum
import marshal
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import attrs
import pytest

from pluginsdk import _values, codec
from pluginsdk._errors import CodecError, PluginResourceError
from pluginsdk.guest import impls as guest_impls
from pluginsdk.guest import loop as guest_loop
from pluginsdk.guest import protocol as G

ROOT = Path(__file__).resolve().parent.parent


@attrs.frozen
class Point:
    x: int
    y: int


@attrs.frozen
class Shape:
    name: str
    points: list[Point]


class Color(enum.Enum):
    RED = "red"


def reader_over(data: bytes, step: int = 1 << 30) -> tuple[codec.FrameReader, list[int]]:
    """A FrameReader over ``data`` returning at most ``step`` bytes a read; also the sizes returned."""
    pos = 0
    got: list[int] = []

    def read(n: int) -> bytes:
        nonlocal pos
        chunk = data[pos : pos + min(n, step)]
        pos += len(chunk)
        got.append(len(chunk))
        return chunk

    return codec.FrameReader(read, max_size=1 << 20), got


class TestValues:
    def test_plain_values_round_trip(self) -> None:
        """Plain data crosses unchanged, including bytes, int keys and 64-bit ints."""
        value = {"s": "ü", "b": b"\x00", "i": 2**64 - 1, "j": -(2**63), "f": 0.25, "n": None, 3: [True, False]}
        assert value == codec.decode(codec.encode(value))

    def test_tuples_become_lists(self) -> None:
        """Tuples cross as arrays and come back as lists."""
        assert [1, [2, 3]] == codec.decode(codec.encode((1, (2, 3))))

    def test_non_plain_values_are_unstructured(self) -> None:
        """attrs instances, enums and sets go through the private cattrs converter."""
        value = [Shape("tri", [Point(0, 1)]), Color.RED, {5}]
        assert [{"name": "tri", "points": [{"x": 0, "y": 1}]}, "red", [5]] == codec.decode(codec.encode(value))

    def test_unencodable_value_raises(self) -> None:
        """An object with no plain form cannot be encoded."""
        with pytest.raises(TypeError, match="object"):
            codec.encode([object()])

    def test_int_too_large_raises(self) -> None:
        """Integers beyond 64 bits cannot cross."""
        with pytest.raises(OverflowError):
            codec.encode(2**64)

    def test_encode_args_names_the_culprit(self) -> None:
        """encode_args reports the first argument that cannot be encoded."""
        with pytest.raises(CodecError) as info:
            codec.encode_args((1, object()), ("a", "b"), "hook")
        assert ("hook", "b") == (info.value.hook, info.value.argument)

    def test_private_converter(self) -> None:
        """Hooks registered on the global cattrs converter do not change the codec."""
        import cattrs

        @attrs.frozen
        class Local:
            x: int

        cattrs.global_converter.register_unstructure_hook(Local, lambda p: "hijacked")
        assert {"x": 1} == codec.decode(codec.encode(Local(1)))


class TestDecodeSafety:
    @pytest.mark.parametrize(
        "data",
        [
            b"\xc1",  # never used
            b"\x91" * 100_000 + b"\xc0",  # nesting bomb
            b"\xdd\xff\xff\xff\xff",  # array claiming 4 billion items
            b"\xdb\xff\xff\xff\xffabc",  # str claiming 4 GB
            b"\xd4\x05\x00",  # extension type
            b"\x92\x01",  # truncated
            b"\x01\x02",  # trailing data
        ],
    )
    def test_malformed_input_is_codec_error(self, data: bytes) -> None:
        """Malformed or hostile bytes raise CodecError; lengths are capped by the input size."""
        with pytest.raises(CodecError, match="malformed"):
            codec.decode(data)

    def test_nothing_executable_comes_back(self) -> None:
        """Only plain Python values are ever built from the wire."""
        value = codec.decode(codec.encode({"a": [1, 2.0, "s", b"b", None, True]}))
        assert {dict, list, int, float, str, bytes, type(None), bool} >= _types_in(value)


def _types_in(value: Any) -> set[type]:
    found = {type(value)}
    if isinstance(value, dict):
        for k, v in value.items():
            found |= _types_in(k) | _types_in(v)
    elif isinstance(value, list):
        for v in value:
            found |= _types_in(v)
    return found


class TestFrames:
    def test_frames_in_one_buffer(self) -> None:
        """Several frames arriving in one read are split correctly."""
        reader, _ = reader_over(codec.encode_frame("a") + codec.encode_frame([1, 2]) + codec.encode_frame(None))
        assert ["a", [1, 2], None] == [reader.read(), reader.read(), reader.read()]

    def test_frames_arriving_byte_by_byte(self) -> None:
        """A frame split across many short reads is reassembled."""
        reader, _ = reader_over(codec.encode_frame({"k": "v" * 100}) * 2, step=1)
        assert [{"k": "v" * 100}] * 2 == [reader.read(), reader.read()]

    def test_oversized_header_is_refused_before_the_body(self) -> None:
        """A header announcing more than max_size raises without reading (or allocating) the body."""
        reader, got = reader_over(b"\x7f\xff\xff\xff" + b"x" * (4 << 20), step=4)
        with pytest.raises(PluginResourceError, match="exceeds"):
            reader.read()
        assert 4 == sum(got)

    def test_truncated_frame_raises_eof(self) -> None:
        """A channel closing mid-frame raises EOFError rather than waiting."""
        reader, _ = reader_over(codec.encode_frame("abcdef")[:-2])
        with pytest.raises(EOFError, match="after"):
            reader.read()

    def test_clean_eof(self) -> None:
        """A channel closing between frames raises EOFError."""
        reader, _ = reader_over(b"")
        with pytest.raises(EOFError, match="channel closed"):
            reader.read()

    def test_custom_decoder(self) -> None:
        """A guest may read its trusted host's frames with another decoder (marshal in the sandbox)."""
        body = marshal.dumps([1, ("a", b"b")])
        frames = [codec.HEADER.pack(len(body)) + body]
        reader = codec.FrameReader(lambda n: frames.pop() if frames else b"", decode=marshal.loads)
        assert [1, ("a", b"b")] == reader.read()

    def test_installed_packer_is_per_thread(self) -> None:
        """install_packer changes how this thread encodes, and no other thread."""
        calls: list[Any] = []
        seen: dict[str, bytes] = {}
        pack = codec.make_packer()

        def counting(obj: Any) -> bytes:
            calls.append(obj)
            return pack(obj)

        def other() -> None:
            seen["other"] = codec.encode("y")

        def mine() -> None:
            codec.install_packer(counting)
            seen["mine"] = codec.encode("x")
            thread = threading.Thread(target=other)
            thread.start()
            thread.join()

        thread = threading.Thread(target=mine)
        thread.start()
        thread.join()
        assert (["x"], codec.encode("x"), codec.encode("y")) == (calls, seen["mine"], seen["other"])

    def test_encode_frame_limit(self) -> None:
        """Encoding a message over the limit raises PluginResourceError."""
        with pytest.raises(PluginResourceError, match="exceeds the 10-byte limit"):
            codec.encode_frame("x" * 20, max_size=10)


class TestStructuring:
    def test_attrs_from_dict(self) -> None:
        """A dict structures into the annotated attrs class, recursively."""
        wire = {"name": "t", "points": [{"x": 1, "y": 2}]}
        assert Shape("t", [Point(1, 2)]) == codec.from_wire(wire, Shape, hook="h")

    def test_none_always_passes(self) -> None:
        """None means "no result" to pluggy, whatever the annotation."""
        assert codec.from_wire(None, Point, hook="h") is None

    def test_structuring_failure_names_hook_and_argument(self) -> None:
        """A value that does not fit the annotation raises CodecError."""
        with pytest.raises(CodecError) as info:
            codec.from_wire({"x": "nope"}, Point, hook="h")
        assert ("h", "return value") == (info.value.hook, info.value.argument)

    @pytest.mark.parametrize(
        ("tp", "expected"),
        [
            (str, False),
            (Any, False),
            (list[int], False),
            (dict[str, float | None], False),
            (Point, True),
            (list[Point], True),
            (Point | None, True),
            (tuple[int, int], True),
            (set[str], True),
            (Color, True),
        ],
    )
    def test_needs_structuring(self, tp: Any, expected: bool) -> None:
        """Only annotations naming a class the wire cannot carry as such need cattrs."""
        assert expected == codec.needs_structuring(tp)

    @pytest.mark.parametrize("tp", [Any, object])
    def test_any_needs_no_converter(self, tp: Any) -> None:
        """Unannotated results pass as they are."""
        assert codec.converter(tp, hook="h") is None

    def test_plain_annotations_are_checked_cheaply(self) -> None:
        """Plain and optional-plain annotations pass matching values through unchanged."""
        convert = codec.converter(Optional[str], hook="h")  # noqa: UP045 -- the typing.Union spelling
        assert convert is not None
        assert ("a", None) == (convert("a"), convert(None))
        assert frozenset({str, type(None)}) == codec.plain_types(str | None)
        assert codec.plain_types(list[int]) is None

    @pytest.mark.parametrize(
        ("annotation", "item"),
        [(Iterator[int], int), (Iterator[Point], Point), (list[int], Any), (str, Any)],
    )
    def test_item_type(self, annotation: Any, item: Any) -> None:
        """Iterator annotations give their item type; others give Any."""
        assert item == codec.item_type(annotation)


class TestPurePython:
    def test_pure_python_msgpack_speaks_the_same_format(self) -> None:
        """Without the C extension (as on WASI) the codec produces and reads the same bytes."""
        value = {"a": [1, 2.5, "é", b"\x00", None], 7: True}
        code = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(ROOT)!r})
            from pluginsdk import codec
            data = codec.encode({value!r})
            assert codec.decode(data) == {value!r}
            print(codec.implementation(), data.hex())
        """)
        env = {**os.environ, "MSGPACK_PUREPYTHON": "1"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        impl, hexdata = out.stdout.split()
        assert ("pure-python", codec.encode(value).hex()) == (impl, hexdata)

    def test_import_is_cheap(self) -> None:
        """The guest side imports no third-party package, nor typing, inspect, traceback...

        (every import is start-up time in the sandbox); msgpack and cattrs load on first use.
        """
        heavy = ("msgpack", "cattrs", "attrs", "pluggy", "typing", "inspect", "traceback", "importlib.util",
                 "threading", "collections", "re", "enum", "functools")
        code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import pluginsdk.codec, pluginsdk.guest.loop; " \
               f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
        out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
        assert "[]" == out.stdout.strip()

    def test_guest_reads_signatures_as_inspect_does(self) -> None:
        """The guest's code-object reading of an implementation's arguments matches inspect's."""
        import functools
        import inspect

        def plain(a, b, c=1, *args, d, **kw): ...  # type: ignore[no-untyped-def]
        def posonly(a, /, b): ...  # type: ignore[no-untyped-def]

        class Impl:
            def method(self, x, y=2): ...  # type: ignore[no-untyped-def]
            @classmethod
            def cm(cls, x): ...  # type: ignore[no-untyped-def]
            @staticmethod
            def sm(x, y): ...  # type: ignore[no-untyped-def]
            def __call__(self, z): ...  # type: ignore[no-untyped-def]

        @functools.wraps(posonly)
        def wrapped(*args: Any, **kwargs: Any) -> None: ...

        for func in (plain, posonly, Impl().method, Impl.cm, Impl.sm, Impl(), wrapped, functools.partial(plain, 1)):
            params = inspect.signature(func).parameters.values()
            expected = tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                             and p.default is p.empty)
            assert expected == guest_impls._argnames(func), func


class GuestChannel:
    """The host's end of a guest loop running in a thread over two pipes."""

    reply: Any = None  # the answer to HELLO

    def __init__(self, trusted: bool = False) -> None:
        """``trusted``: the host sends marshal frames and the guest decodes them with marshal."""
        self.trusted = trusted
        to_guest_r, self.to_guest_w = os.pipe()
        self.from_guest_r, from_guest_w = os.pipe()
        self.reader = codec.FrameReader(lambda n: os.read(self.from_guest_r, n))
        self.fds = [to_guest_r, from_guest_w]
        self.thread = threading.Thread(
            target=guest_loop.serve,
            args=(lambda n: os.read(to_guest_r, n), lambda b: os.write(from_guest_w, b)),
            kwargs={"decode": marshal.loads} if trusted else {},
            daemon=True,
        )
        self.thread.start()

    def ask(self, *msg: Any) -> Any:
        if self.trusted:
            body = marshal.dumps(list(msg))
            os.write(self.to_guest_w, codec.HEADER.pack(len(body)) + body)
        else:
            os.write(self.to_guest_w, codec.encode_frame(list(msg)))
        reply = self.reader.read()
        if type(reply) is list and reply[:1] in ([G.OK], [G.END]):
            if len(msg) == 5:  # a timed request: the guest's own time, checked, then dropped
                assert 4 == len(reply) and type(reply[3]) is int and 0 <= reply[3] < 10**10, reply
                reply = reply[:3]
            else:  # nobody asked: no clock was read
                assert 3 == len(reply), reply
        return reply

    def close(self) -> None:
        os.close(self.to_guest_w)
        self.thread.join(5)
        for fd in [self.from_guest_r, *self.fds]:
            os.close(fd)


@pytest.fixture
def guest(site: Path) -> Iterator[Callable[..., GuestChannel]]:
    """Start the guest loop (in a thread: it is generic over read/write) on a module in ``site``."""
    channels: list[GuestChannel] = []

    def start(
        source: str, hooks: dict[str, list[str]], *, max_message: int = 1 << 20, trusted: bool = False
    ) -> GuestChannel:
        name = f"guest_mod_{len(channels)}"
        (site / f"{name}.py").write_text(textwrap.dedent(source))
        channel = GuestChannel(trusted)
        channels.append(channel)
        streams = [h for h in hooks if h == "count"]  # the spec declares it an iterator
        hello = G.hello(module=name, attr=None, hooks=hooks, path=[str(site)], max_message=max_message, streams=streams)
        channel.reply = channel.ask(G.HELLO, hello)
        return channel

    yield start
    for channel in channels:
        channel.close()


HOOKS = {"add": ["a", "b"], "big": ["n"], "count": ["n"]}
GUEST_PLUGIN = """
from pluginsdk import hookimpl

@hookimpl(tryfirst=True)
def add(a, b):
    return a + b

@hookimpl
def big(n):
    return "x" * n

@hookimpl
def count(n):
    for i in range(n):
        if i == 13 and n == 14:
            raise KeyError("thirteen")
        yield i
"""


class TestGuestLoop:
    def test_handshake_reports_implementations(self, guest: Callable[..., GuestChannel]) -> None:
        """READY lists each implementation with its ordering options."""
        channel = guest(GUEST_PLUGIN, HOOKS)
        reply = channel.reply
        assert G.READY == reply[0]
        plain = {"tryfirst": False, "trylast": False}
        assert {"add": {"tryfirst": True, "trylast": False}, "big": plain, "count": plain} == reply[1]["impls"]

    def test_call_and_batch(self, guest: Callable[..., GuestChannel]) -> None:
        """CALL answers OK with the value; BATCH answers all values in one frame."""
        channel = guest(GUEST_PLUGIN, HOOKS)
        assert [G.OK, 1, 5] == channel.ask(G.CALL, 1, "add", [2, 3])
        assert [G.OK, 2, [1, 5, [0, 1]]] == channel.ask(G.BATCH, 2, "add", [[0, 1], [2, 3], [[0], [1]]])

    def test_timed_requests_report_the_plugins_time(self, guest: Callable[..., GuestChannel]) -> None:
        """A fifth field asks for the plugin's own time: a CALL, a BATCH, a stream's END (ask() checks it)."""
        channel = guest(GUEST_PLUGIN, HOOKS)
        assert [G.OK, 1, 5] == channel.ask(G.CALL, 1, "add", [2, 3], 1)
        assert [G.OK, 2, [1, 5]] == channel.ask(G.BATCH, 2, "add", [[0, 1], [2, 3]], 1)
        assert [G.CHUNK, 3, [0]] == channel.ask(G.CALL, 3, "count", [2], 1)
        os.write(channel.to_guest_w, codec.encode_frame([G.MORE, 3]))
        end = channel.reader.read()
        assert [G.END, 3, [1]] == end[:3] and type(end[3]) is int and 0 <= end[3] < 10**10
        assert [G.OK, 4, 5] == channel.ask(G.CALL, 4, "add", [2, 3])  # and the next one, untimed, reads no clock

    def test_trusted_host_encoding(self, guest: Callable[..., GuestChannel]) -> None:
        """With a marshal decoder the guest takes marshal frames and still answers in msgpack."""
        channel = guest(GUEST_PLUGIN, HOOKS, trusted=True)
        assert G.READY == channel.reply[0]
        assert [G.OK, 1, "ab"] == channel.ask(G.CALL, 1, "add", ("a", "b"))

    def test_stream_with_flow_control(self, guest: Callable[..., GuestChannel]) -> None:
        """A generator streams in doubling chunks, each sent only after MORE."""
        channel = guest(GUEST_PLUGIN, HOOKS)
        frames = [channel.ask(G.CALL, 7, "count", [10])]
        while frames[-1][0] == G.CHUNK:
            frames.append(channel.ask(G.MORE, 7))
        assert [[G.CHUNK, 7, [0]], [G.CHUNK, 7, [1, 2]], [G.CHUNK, 7, [3, 4, 5, 6]], [G.END, 7, [7, 8, 9]]] == frames

    def test_stream_cancel(self, guest: Callable[..., GuestChannel]) -> None:
        """CANCEL ends a stream with an empty END; the loop then serves calls again."""
        channel = guest(GUEST_PLUGIN, HOOKS)
        assert [G.CHUNK, 1, [0]] == channel.ask(G.CALL, 1, "count", [1000])
        assert [G.END, 1, []] == channel.ask(G.CANCEL, 1)
        assert [G.OK, 2, 3] == channel.ask(G.CALL, 2, "add", [1, 2])

    def test_stream_error_after_items(self, guest: Callable[..., GuestChannel]) -> None:
        """Items pulled before a generator raised are delivered, then the error."""
        channel = guest(GUEST_PLUGIN, HOOKS)
        frames = [channel.ask(G.CALL, 1, "count", [14])]
        while frames[-1][0] == G.CHUNK:
            frames.append(channel.ask(G.MORE, 1))
        assert [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] == [i for f in frames[:-1] for i in f[2]]
        assert [G.ERR, 1, "hook", "KeyError", "'thirteen'"] == frames[-1][:5]

    def test_load_error_is_reported_as_data(self, guest: Callable[..., GuestChannel]) -> None:
        """An import failure is answered with an ERR frame carrying the traceback."""
        channel = guest("import not_a_module_anywhere\n", {"add": ["a", "b"]})
        reply = channel.reply
        assert [G.ERR, 0, "load", "ModuleNotFoundError"] == reply[:4]
        assert "import not_a_module_anywhere" in reply[5]

    def test_missing_implementation_is_refused(self, guest: Callable[..., GuestChannel]) -> None:
        """A declared hook without an implementation fails the handshake."""
        channel = guest(GUEST_PLUGIN, {**HOOKS, "other": []})
        assert "declares 'other' but does not implement it" in channel.reply[4]

    def test_oversized_reply_becomes_an_error(self, guest: Callable[..., GuestChannel]) -> None:
        """A reply over max_message is replaced by a resource error; the loop goes on."""
        channel = guest(GUEST_PLUGIN, HOOKS, max_message=1000)
        assert [G.ERR, 1, "resource", "MessageTooLarge"] == channel.ask(G.CALL, 1, "big", [2000])[:4]
        assert [G.OK, 2, 3] == channel.ask(G.CALL, 2, "add", [1, 2])


# --- the value contract's details (the table at every level is tests/test_values.py) ---------


class Opaque:
    """No plain form."""


@attrs.frozen
class Stamped:
    name: str
    when: datetime.datetime


class TestDatesAndTimes:
    @pytest.mark.parametrize(
        "value",
        [
            datetime.datetime(2024, 5, 1, 12, 30, 1, 5),
            datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
            datetime.date(2024, 2, 29),
            datetime.time(23, 59, 59),
        ],
    )
    def test_cross_as_iso_text_and_come_back_by_annotation(self, value: Any) -> None:
        """Dates and times cross as ISO 8601 text, time zone offset included, and are rebuilt by annotation."""
        plain = codec.decode(codec.encode(value))
        assert value.isoformat() == plain
        assert value == codec.structure(plain, type(value))

    def test_inside_a_class(self) -> None:
        """A class's datetime field crosses and is rebuilt with the class."""
        value = Stamped("a", datetime.datetime(2024, 1, 1))
        assert value == codec.structure(codec.decode(codec.encode(value)), Stamped)

    def test_text_that_is_no_date_is_refused_with_its_path(self) -> None:
        """Text that is no ISO date cannot be read as one: the error says where and what it got."""
        with pytest.raises(codec.StructureError) as info:
            codec.structure([{"name": "a", "when": "2024-01-01"}, {"name": "b", "when": "soon"}], list[Stamped])
        assert "[1]['when']" == info.value.path
        assert "expected datetime as annotated, got str 'soon'" in info.value.reason


class TestTupleKeys:
    def test_tuple_keys_cross(self) -> None:
        """A dict keyed by tuples (nested too) arrives keyed by tuples; the values' lists stay lists."""
        value = {(1, (2, "a")): [1, (2,)], "k": {(3,): None}}
        assert {(1, (2, "a")): [1, [2]], "k": {(3,): None}} == codec.decode(codec.encode(value))

    def test_a_map_as_a_key_is_still_malformed(self) -> None:
        """A map key that is itself a map (no Python dict can be a key) is refused as malformed."""
        body = b"\x81\x81\x01\x02\x03"  # {{1: 2}: 3}
        with pytest.raises(CodecError, match="malformed"):
            codec.decode(body)


class TestWhereAValueFails:
    @pytest.mark.parametrize(
        ("value", "path", "culprit"),
        [
            (Opaque(), "", "test_codec.Opaque"),
            ([1, {"when": Opaque()}], "[1]['when']", "test_codec.Opaque"),
            ({"a": [1, 2**70]}, "['a'][1]", "int"),
            ({Opaque(): 1}, "[key <tests.test_codec.Opaque object", "Opaque"),
            (Stamped("a", Opaque()), ".when", "Opaque"),  # type: ignore[arg-type]
            ([{frozenset({Opaque()})}], "[0][0][0]", "Opaque"),
            ("\ud800", "", "str"),
        ],
    )
    def test_the_path_to_what_cannot_be_encoded(self, value: Any, path: str, culprit: str) -> None:
        """The part that cannot be encoded is found by its path, named by its type, and what crosses is listed."""
        found = codec.locate_unencodable(value)
        assert found is not None
        assert found[0].startswith(path), found
        assert culprit in found[1]
        assert _values.ALLOWED in found[1]

    def test_what_encodes_has_no_path(self) -> None:
        assert codec.locate_unencodable({"a": [1, (2, 3)], 4: {5}}) is None

    def test_too_deep_is_blamed_where_it_gets_too_deep(self) -> None:
        """Nesting past msgpack's limit is blamed on a list inside, not on the whole."""
        value: Any = 1
        for _ in range(1200):  # msgpack refuses 1024 levels
            value = [value]
        found = codec.locate_unencodable(value)
        assert found is not None
        assert found[0].startswith("[0][0]") and "list cannot cross" in found[1]

    @pytest.mark.parametrize(
        ("value", "tp", "path", "expected"),
        [
            ([1], dict[str, int], "", "expected dict[str, int] as annotated, got list [1]"),
            ({"a": [1, "q"]}, dict[str, list[int]], "['a'][1]", "expected int as annotated, got str 'q'"),
            ({"x": "z", "y": 1}, Point | None, "['x']", "expected int as annotated, got str 'z'"),
            ([{"x": 1}], list[Point], "[0]", "missing key 'y'"),
            ([1, "a", 3], tuple[int, ...], "[1]", "expected int as annotated"),
            ({"k": "v"}, dict[int, str], "[key 'k']", "expected int as annotated, got str 'k'"),
            ("purple", Color, "", "expected Color as annotated, got str 'purple'"),
        ],
    )
    def test_the_path_to_what_cannot_be_read(self, value: Any, tp: Any, path: str, expected: str) -> None:
        """The part that cannot be read as its annotation is found by its path; the error says what it got."""
        with pytest.raises(CodecError) as info:
            codec.from_wire(value, tp, hook="h", plugin="p")
        error = info.value
        assert ("p", "h", "return value", path) == (error.plugin, error.hook, error.argument, error.path)
        assert expected in error.message
        assert str(error).startswith(f"plugin 'p': hook 'h', return value{path}: ")

    @pytest.mark.parametrize(
        ("field", "split"),
        [
            (None, ("return value", "")),
            ("return value[2]['when']", ("return value", "[2]['when']")),
            ("doc['items'][0]", ("doc", "['items'][0]")),
            ("doc", ("doc", "")),
            ("[odd", ("[odd", "")),
        ],
    )
    def test_an_error_frame_carries_the_path_after_the_name(self, field: str | None, split: tuple[str, str]) -> None:
        assert split == _values.split_location(field)

    def test_codec_error_message_and_pickling(self) -> None:
        """The location reads as Python; every field survives pickling."""
        error = CodecError("why", plugin="p", hook="h", argument="doc", path="['items'][0]", index=3)
        assert "plugin 'p': hook 'h', argument 'doc'['items'][0] (batch item 3): why" == str(error)
        again = pickle.loads(pickle.dumps(error))
        assert (str(error), "['items'][0]", 3) == (str(again), again.path, again.index)

    def test_encode_args_names_the_argument_and_the_path(self) -> None:
        with pytest.raises(CodecError) as info:
            codec.encode_args(["fine", {"items": [Opaque()]}], ["text", "doc"], "h")
        assert ("doc", "['items'][0]") == (info.value.argument, info.value.path)


VALUE_HOOKS = {"give": ["kind"], "take": ["doc"]}
VALUE_PLUGIN = """
import attrs
import datetime
from pluginsdk import hookimpl

class Opaque:
    pass

@attrs.frozen
class Stamped:
    name: str
    when: datetime.datetime

@hookimpl
def give(kind):
    return [1, 2, {"when": Opaque()}] if kind == "bad" else kind

@hookimpl
def take(doc: Stamped):
    return doc.name
"""


class TestGuestLoopPaths:
    def test_a_result_that_cannot_cross_names_its_path(self, guest: Callable[..., GuestChannel]) -> None:
        """The guest's error frame carries the path after "return value"; the loop goes on."""
        channel = guest(VALUE_PLUGIN, VALUE_HOOKS)
        reply = channel.ask(G.CALL, 1, "give", ["bad"])
        assert [G.ERR, 1, "codec", "CodecError"] == reply[:4]
        assert (None, "return value[2]['when']") == (reply[6], reply[7])
        assert "Opaque cannot cross" in reply[4]
        assert [G.OK, 2, "fine"] == channel.ask(G.CALL, 2, "give", ["fine"])

    def test_in_a_batch_the_item_is_named(self, guest: Callable[..., GuestChannel]) -> None:
        channel = guest(VALUE_PLUGIN, VALUE_HOOKS)
        reply = channel.ask(G.BATCH, 1, "give", [["a"], ["b"], ["bad"]])
        assert (G.ERR, 2, "return value[2]['when']") == (reply[0], reply[6], reply[7])

    def test_an_argument_that_cannot_be_read_names_its_path(self, guest: Callable[..., GuestChannel]) -> None:
        channel = guest(VALUE_PLUGIN, VALUE_HOOKS)
        reply = channel.ask(G.CALL, 1, "take", [{"name": "a", "when": "soon"}])
        assert [G.ERR, 1, "codec"] == reply[:3]
        assert "doc['when']" == reply[7]
        assert [G.OK, 2, "a"] == channel.ask(G.CALL, 2, "take", [{"name": "a", "when": "2024-01-01"}])
