"""The ``process`` backend, with real worker processes running real installed plugins."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from pluginsdk._errors import (
    CodecError,
    PluginCrashed,
    PluginError,
    PluginHookError,
    PluginLoadError,
    PluginResourceError,
    PluginTimeout,
)
from pluginsdk.backends.base import DEFAULT_LIMITS, Limits, PluginTarget
from pluginsdk.backends.process import ProcessBackend
from pluginsdk.spec import HookSpec, hookspec

from . import procs
from .plugin_factory import install_plugin
from .procs import alive, children
from .textkit import SPEC as TEXTKIT

# This module's waits keep the longer bound they always had.
wait_until = functools.partial(procs.wait_until, timeout=15.0)


@attrs.frozen
class Stats:
    words: int
    chars: int


class ProcHooks:
    @hookspec
    def transform(self, text: str) -> str:  # type: ignore[empty-body]
        """Transform text."""

    @hookspec
    def add(self, a: int, b: int) -> int:  # type: ignore[empty-body]
        """Add."""

    @hookspec
    def tokens(self, text: str) -> Iterator[str]:  # type: ignore[empty-body]
        """Stream words."""

    @hookspec
    def stats(self, text: str) -> Stats:  # type: ignore[empty-body]
        """Structured result."""

    @hookspec
    def probe(self, value: Any, extra: Any) -> Any:
        """Do what ``value`` says (see PLUGIN)."""


SPEC = HookSpec("proctest", version="1.0", hooks=ProcHooks)
ALL_HOOKS = ("transform", "add", "tokens", "stats", "probe")

PLUGIN = """
import os, sys, time, signal, resource
import attrs
from pluginsdk import hookimpl


class Boom(Exception):
    pass


@attrs.define
class Counts:
    words: int
    chars: int


@hookimpl
def transform(text):
    return text.upper()


@hookimpl
def add(a, b):
    return a + b


@hookimpl
def tokens(text):
    for word in text.split():
        if word == "FAIL":
            raise Boom("stream broke")
        yield word


@hookimpl
def stats(text):
    return Counts(len(text.split()), len(text))


def _channel_fd():
    return int(sys.argv[2])  # the worker's argv: -c READ_FD WRITE_FD MEMORY_MB


def _stream(count, size):
    chunk = b"x" * size
    for _ in range(count):
        yield chunk
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would count the host's pages.
    with open("/proc/self/status") as f:
        yield next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))  # KiB


def _rendezvous(folder, n):
    open(os.path.join(folder, str(os.getpid())), "w").close()
    end = time.monotonic() + 20
    while len(os.listdir(folder)) < n and time.monotonic() < end:
        time.sleep(0.01)
    return [os.getpid(), len(os.listdir(folder))]


def _wait_for_file(path):
    yield "first"
    end = time.monotonic() + 20
    while not os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.01)
    yield "second" if os.path.exists(path) else "host never saw the first item"


@hookimpl
def probe(value, extra):
    if value == "pid":
        return os.getpid()
    if value == "raise":
        raise Boom("it broke: " + str(extra))
    if value == "exit":
        os._exit(7)
    if value == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if value == "segv":
        import ctypes
        ctypes.string_at(0)
    if value == "hang":
        time.sleep(600)
    if value == "bomb":
        hog = []
        while True:
            hog.append(bytearray(16 * 1024 * 1024))
    if value == "big":
        return b"x" * extra
    if value == "fakeframe":
        os.write(_channel_fd(), b"\\xff\\xff\\xff\\xf0")
        time.sleep(600)
    if value == "truncated":
        os.write(_channel_fd(), (100).to_bytes(4, "big") + b"0123456789")
        os._exit(0)
    if value == "garbage":
        os.write(_channel_fd(), (3).to_bytes(4, "big") + b"\\xc1\\xc1\\xc1")
        time.sleep(600)
    if value == "print":
        print("to stdout", extra)
        sys.stderr.write("to stderr\\n")
        os.write(1, b"raw fd 1\\n")
        return "printed"
    if value == "unencodable":
        return object()
    if value == "stream":
        return _stream(*extra)
    if value == "rendezvous":
        return _rendezvous(*extra)
    if value == "wait-file":
        return _wait_for_file(extra)
    if value == "sys.path":
        return sys.path
    return [value, extra]
"""


@pytest.fixture
def make(site: Path) -> Iterator[Callable[..., ProcessBackend]]:
    """Build a started-on-demand ProcessBackend for a plugin installed in ``site``."""
    made: list[ProcessBackend] = []
    counter = iter(range(1000))

    def factory(
        source: str = PLUGIN,
        *,
        hooks: tuple[str, ...] = ALL_HOOKS,
        attr: str | None = None,
        options: dict[str, Any] | None = None,
        **limits: Any,
    ) -> ProcessBackend:
        name = f"p{next(counter)}"
        module = f"proctest_{name}"
        pkg = install_plugin(
            site,
            name,
            textwrap.dedent(source),
            module=module,
            dist=f"proctest-{name}",
            group="proctest.plugins",
            isolation="process",
            hooks=hooks,
            entry_value=f"{module}:{attr}" if attr else None,
        )
        target = PluginTarget(
            name=name,
            dist=f"proctest-{name}",
            module=module,
            attr=attr,
            package_dir=str(pkg),
            path_entry=str(site),
            hooks={h: SPEC.hook_defs[h].argnames for h in hooks},
            limits=Limits(**limits).merged(DEFAULT_LIMITS),
            spec=SPEC,
            options=options or {},
        )
        backend = ProcessBackend(target, log=logging.getLogger("pluginsdk.test"))
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        backend.close()


@contextlib.contextmanager
def short_start_timeout(seconds: float) -> Iterator[None]:
    """Shorten the floor on handshake deadlines (10 s) for a test."""
    from pluginsdk.backends import pool

    saved = pool.MIN_START_TIMEOUT
    pool.MIN_START_TIMEOUT = seconds
    try:
        yield
    finally:
        pool.MIN_START_TIMEOUT = saved


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


class TestCalls:
    def test_call_returns_the_plugins_result(self, make: Callable[..., ProcessBackend]) -> None:
        """A hook call runs in a worker and returns its value."""
        backend = make()
        assert "HELLO" == backend.call("transform", ("hello",))
        assert 7 == backend.call("add", (3, 4))

    def test_worker_is_another_process_and_persists(self, make: Callable[..., ProcessBackend]) -> None:
        """Calls run in one persistent worker, not in the host."""
        backend = make()
        pids = {backend.call("probe", ("pid", None)) for _ in range(5)}
        assert 1 == len(pids)
        assert os.getpid() not in pids

    def test_plain_values_round_trip(self, make: Callable[..., ProcessBackend]) -> None:
        """Plain data of every msgpack type crosses unchanged (tuples become lists)."""
        backend = make()
        value = {"s": "é", "b": b"\x00\xff", "i": -(2**63), "f": 1.5, "n": None, "l": [1, (2, 3)], 5: True}
        assert ["x", value | {"l": [1, [2, 3]]}] == backend.call("probe", ("x", value))

    def test_attrs_result_is_structured_by_annotation(self, make: Callable[..., ProcessBackend]) -> None:
        """An attrs instance returned by the plugin arrives as the spec's return type."""
        backend = make()
        assert Stats(words=2, chars=9) == backend.call("stats", ("hello you",))

    def test_none_result_of_a_typed_hook(self, make: Callable[..., ProcessBackend]) -> None:
        """A plugin returning None from a hook annotated with a class gives None, not an error."""
        source = """
            from pluginsdk import hookimpl

            @hookimpl
            def stats(text):
                return None
        """
        backend = make(source, hooks=("stats",))
        assert (None, [None, None]) == (backend.call("stats", ("x",)), backend.call_batch("stats", [("a",), ("b",)]))

    def test_attrs_argument_is_unstructured(self, make: Callable[..., ProcessBackend]) -> None:
        """An attrs argument crosses as a dict."""
        backend = make()
        assert ["x", {"words": 1, "chars": 2}] == backend.call("probe", ("x", Stats(1, 2)))

    def test_arguments_structured_by_the_implementations_annotations(self, make: Callable[..., ProcessBackend]) -> None:
        """An argument annotated with a class in the implementation arrives as an instance of it."""
        source = """
            import attrs
            from pluginsdk import hookimpl

            @attrs.frozen
            class Pair:
                words: int
                chars: int

            @hookimpl
            def probe(value, extra: Pair):
                return [type(extra).__name__, extra.words + extra.chars, value]
        """
        backend = make(source, hooks=("probe",))
        assert ["Pair", 3, {"words": 0, "chars": 0}] == backend.call("probe", (Stats(0, 0), Stats(1, 2)))
        assert [["Pair", 5, 1]] == backend.call_batch("probe", [(1, Stats(2, 3))])
        with pytest.raises(CodecError) as info:
            backend.call("probe", (1, {"words": "many"}))
        assert ("probe", "extra") == (info.value.hook, info.value.argument)
        assert ("['words']", True) == (info.value.path, "expected int as annotated" in info.value.message)

    def test_entry_point_object(self, make: Callable[..., ProcessBackend]) -> None:
        """With ``pkg.mod:obj`` the object's attributes are the implementations."""
        source = """
            from pluginsdk import hookimpl

            class Impl:
                def __init__(self, suffix):
                    self.suffix = suffix

                @hookimpl
                def transform(self, text):
                    return text + self.suffix

            plugin = Impl("!")
        """
        backend = make(source, hooks=("transform",), attr="plugin")
        assert "hi!" == backend.call("transform", ("hi",))

    def test_implementation_options_are_reported(self, make: Callable[..., ProcessBackend]) -> None:
        """tryfirst/trylast of each implementation are known after start, for the host's ordering."""
        source = """
            from pluginsdk import hookimpl

            @hookimpl(tryfirst=True)
            def add(a, b):
                return a + b
        """
        backend = make(source, hooks=("add",))
        backend.start()
        assert {"add": {"tryfirst": True, "trylast": False}} == backend.impl_options

    def test_implementation_may_take_fewer_arguments(self, make: Callable[..., ProcessBackend]) -> None:
        """An implementation gets only the spec arguments it names."""
        source = """
            from pluginsdk import hookimpl

            @hookimpl
            def probe(extra):
                return extra * 2
        """
        backend = make(source, hooks=("probe",))
        assert 42 == backend.call("probe", ("ignored", 21))

    def test_worker_sees_the_hosts_path(self, make: Callable[..., ProcessBackend], site: Path) -> None:
        """The plugin's path entry and the host's sys.path reach the worker."""
        backend = make()
        path = backend.call("probe", ("sys.path", None))
        assert str(site) == path[0]
        assert set(p for p in sys.path if p) <= set(path)


class TestErrors:
    def test_plugin_exception_becomes_hook_error(self, make: Callable[..., ProcessBackend]) -> None:
        """An exception in the plugin arrives as PluginHookError with type, message and traceback."""
        backend = make()
        with pytest.raises(PluginHookError) as info:
            backend.call("probe", ("raise", 5))
        err = info.value
        assert (backend.target.name, "probe") == (err.plugin, err.hook)
        assert (f"{backend.target.module}.Boom", "it broke: 5") == (err.exc_type, err.exc_message)
        assert 'raise Boom("it broke: " + str(extra))' in err.traceback
        assert "guest/loop.py" not in err.traceback
        assert 7 == backend.call("add", (3, 4))

    def test_unencodable_argument_names_the_argument(self, make: Callable[..., ProcessBackend]) -> None:
        """An argument that cannot cross raises CodecError naming hook and argument."""
        backend = make()
        with pytest.raises(CodecError) as info:
            backend.call("probe", ("x", object()))
        assert ("probe", "extra") == (info.value.hook, info.value.argument)

    def test_unencodable_result_names_the_return_value(self, make: Callable[..., ProcessBackend]) -> None:
        """A result that cannot cross raises CodecError for the return value; the worker lives on."""
        backend = make()
        pid = backend.call("probe", ("pid", None))
        with pytest.raises(CodecError) as info:
            backend.call("probe", ("unencodable", None))
        assert ("probe", "return value") == (info.value.hook, info.value.argument)
        assert pid == backend.call("probe", ("pid", None))

    def test_result_not_matching_annotation(self, make: Callable[..., ProcessBackend]) -> None:
        """A result that cannot be read as the annotated type raises CodecError."""
        source = """
            from pluginsdk import hookimpl

            @hookimpl
            def stats(text):
                return {"words": "many"}
        """
        backend = make(source, hooks=("stats",))
        with pytest.raises(CodecError) as info:
            backend.call("stats", ("x",))
        assert ("stats", "return value") == (info.value.hook, info.value.argument)

    def test_undeclared_hook_call(self, make: Callable[..., ProcessBackend]) -> None:
        """Calling a hook the plugin does not declare is refused."""
        source = """
            from pluginsdk import hookimpl

            @hookimpl
            def add(a, b):
                return a + b
        """
        backend = make(source, hooks=("add",))
        with pytest.raises(PluginError, match="does not implement hook 'probe'"):
            backend.call("probe", (1, 2))


class TestLoading:
    def test_import_error_is_load_error(self, make: Callable[..., ProcessBackend]) -> None:
        """A plugin whose import raises fails to start with the traceback; later calls say why."""
        backend = make("raise RuntimeError('no config')\n", hooks=("add",))
        with pytest.raises(PluginLoadError) as info:
            backend.start()
        assert "RuntimeError: no config" in info.value.message
        assert "raise RuntimeError('no config')" in info.value.traceback
        assert backend.failed_reason is not None and "no config" in backend.failed_reason
        with pytest.raises(PluginLoadError):
            backend.call("add", (1, 2))

    def test_undeclared_implementation_is_refused(self, make: Callable[..., ProcessBackend]) -> None:
        """An implementation of a hook the manifest does not declare fails the load."""
        with pytest.raises(PluginLoadError, match="implements 'transform', which it does not declare"):
            make(hooks=("add", "tokens", "stats", "probe")).start()

    def test_extra_arguments_are_refused(self, make: Callable[..., ProcessBackend]) -> None:
        """An implementation taking arguments the spec lacks fails the load."""
        source = """
            from pluginsdk import hookimpl

            @hookimpl
            def add(a, b, c):
                return a
        """
        with pytest.raises(PluginLoadError, match=r"'add' takes \['c'\]"):
            make(source, hooks=("add",)).start()

    def test_crash_on_every_start_sets_failed_reason(self, make: Callable[..., ProcessBackend]) -> None:
        """A worker that dies while importing is retried a bounded number of times, then given up."""
        backend = make("import os\nos._exit(4)\n", hooks=("add",))
        with pytest.raises(PluginLoadError) as info:
            backend.call("add", (1, 2))
        assert "exit code 4" in info.value.message
        assert backend.failed_reason is not None and "3 times" in backend.failed_reason
        with pytest.raises(PluginLoadError):
            backend.call("add", (1, 2))
        assert set() == children()

    def test_hanging_import_times_out(self, make: Callable[..., ProcessBackend]) -> None:
        """A plugin whose import never finishes fails to start instead of hanging the host."""
        backend = make("import time\ntime.sleep(600)\n", hooks=("add",), timeout=0.3)
        with short_start_timeout(0.5), pytest.raises(PluginLoadError, match="did not start in time"):
            backend.start()
        assert set() == children()

    def test_prewarm_starts_every_worker(self, make: Callable[..., ProcessBackend]) -> None:
        """With ``prewarm`` the whole pool is up after start()."""
        before = children()
        backend = make(workers=2, options={"prewarm": True})
        backend.start()
        assert 2 == len(children() - before)

    def test_start_is_lazy_and_idempotent(self, make: Callable[..., ProcessBackend]) -> None:
        """Without prewarm, start() brings up one worker; starting twice does nothing more."""
        before = children()
        backend = make(workers=3)
        assert set() == children() - before
        backend.start()
        backend.start()
        assert 1 == len(children() - before)


class TestCrashes:
    @pytest.mark.parametrize(
        ("how", "detail"),
        [("exit", "exit code 7"), ("sigkill", "SIGKILL"), ("segv", "SIGSEGV")],
    )
    def test_crash_mid_call(self, make: Callable[..., ProcessBackend], how: str, detail: str) -> None:
        """A worker dying mid-call raises PluginCrashed; it is replaced and the next call works."""
        backend = make()
        pid = backend.call("probe", ("pid", None))
        with pytest.raises(PluginCrashed) as info:
            backend.call("probe", (how, None))
        assert detail in info.value.detail
        assert (backend.target.name, True) == (info.value.plugin, "'probe'" in info.value.message)
        new_pid = backend.call("probe", ("pid", None))
        assert pid != new_pid
        assert not alive(pid)

    def test_other_workers_unaffected(self, make: Callable[..., ProcessBackend], tmp_path: Path) -> None:
        """A crash in one worker leaves a call running in another untouched."""
        backend = make(workers=2, options={"prewarm": True})
        backend.start()
        folder = tmp_path / "meet"
        folder.mkdir()
        result: list[Any] = []
        # The slow call waits for a second process to join the rendezvous: the crashing call's
        # replacement never does, so the host joins it with a file of its own.
        slow = threading.Thread(target=lambda: result.append(backend.call("probe", ("rendezvous", [str(folder), 2]))))
        slow.start()
        assert wait_until(lambda: len(os.listdir(folder)) == 1)
        with pytest.raises(PluginCrashed):
            backend.call("probe", ("exit", None))
        (folder / "host").touch()
        slow.join()
        assert 2 == result[0][1]
        assert 5 == backend.call("add", (2, 3))

    def test_batch_right_after_a_crash_replaced_a_worker(self, make: Callable[..., ProcessBackend]) -> None:
        """A batch that takes a replacement worker finishes its handshake, not read READY as a reply.

        Regression: the replacement joined the idle list before its handshake
        and a batch's extra workers skipped it, raising "hook 'probe': None: None".
        """
        backend = make(workers=2, options={"prewarm": True})
        backend.start()
        for how in ("exit", "sigkill"):
            with pytest.raises(PluginCrashed):
                backend.call("probe", (how, None))
            pids = backend.call_batch("probe", [("pid", i) for i in range(6)])
            assert 2 == len(set(pids))
        assert [i + 1 for i in range(8)] == backend.call_batch("add", [(i, 1) for i in range(8)])

class TestLimits:
    def test_hang_times_out_and_worker_is_replaced(self, make: Callable[..., ProcessBackend]) -> None:
        """A call past its deadline raises PluginTimeout; the worker is killed and replaced."""
        backend = make(timeout=1.0)
        pid = backend.call("probe", ("pid", None))
        with pytest.raises(PluginTimeout) as info:
            backend.call("probe", ("hang", None))
        assert 1.0 == info.value.timeout
        assert wait_until(lambda: not alive(pid))
        assert 3 == backend.call("add", (1, 2))

    def test_memory_bomb(self, make: Callable[..., ProcessBackend]) -> None:
        """A plugin exceeding its memory cap fails the call, not the host; the next call works."""
        backend = make(memory_mb=300)
        with pytest.raises((PluginResourceError, PluginCrashed)) as info:
            backend.call("probe", ("bomb", None))
        assert "MemoryError" in str(info.value) or isinstance(info.value, PluginCrashed)
        assert 3 == backend.call("add", (1, 2))

    def test_oversized_result_is_refused_by_the_worker(self, make: Callable[..., ProcessBackend]) -> None:
        """A result over max_message_mb raises PluginResourceError; the worker lives on."""
        backend = make(max_message_mb=1)
        pid = backend.call("probe", ("pid", None))
        with pytest.raises(PluginResourceError, match="exceeds"):
            backend.call("probe", ("big", 2_000_000))
        assert pid == backend.call("probe", ("pid", None))

    def test_oversized_frame_header_is_refused_by_the_host(self, make: Callable[..., ProcessBackend]) -> None:
        """A frame announcing more than the limit is refused before its body is read; worker replaced."""
        backend = make(max_message_mb=1)
        pid = backend.call("probe", ("pid", None))
        before = rss_kib()
        with pytest.raises(PluginResourceError, match="exceeds"):
            backend.call("probe", ("fakeframe", None))
        assert rss_kib() - before < 50_000
        assert wait_until(lambda: not alive(pid))
        assert pid != backend.call("probe", ("pid", None))

    def test_truncated_frame_is_a_crash(self, make: Callable[..., ProcessBackend]) -> None:
        """A worker that dies mid-frame raises PluginCrashed rather than hanging."""
        backend = make()
        with pytest.raises(PluginCrashed):
            backend.call("probe", ("truncated", None))
        assert 3 == backend.call("add", (1, 2))

    def test_malformed_frame_is_a_codec_error(self, make: Callable[..., ProcessBackend]) -> None:
        """Bytes that are not msgpack raise CodecError; the worker is replaced."""
        backend = make()
        with pytest.raises(CodecError, match="malformed"):
            backend.call("probe", ("garbage", None))
        assert 3 == backend.call("add", (1, 2))

    def test_oversized_argument_is_refused_before_sending(self, make: Callable[..., ProcessBackend]) -> None:
        """Arguments over the limit raise PluginResourceError without disturbing the worker."""
        backend = make(max_message_mb=1)
        pid = backend.call("probe", ("pid", None))
        with pytest.raises(PluginResourceError, match="arguments"):
            backend.call("transform", ("x" * 2_000_000,))
        assert pid == backend.call("probe", ("pid", None))


class TestConcurrency:
    def test_threads_run_in_parallel_across_workers(self, make: Callable[..., ProcessBackend], tmp_path: Path) -> None:
        """Two host threads' calls run at once in two workers (each waits to see the other)."""
        backend = make(workers=2)
        folder = tmp_path / "meet"
        folder.mkdir()
        results: list[Any] = []
        calls = [
            threading.Thread(target=lambda: results.append(backend.call("probe", ("rendezvous", [str(folder), 2]))))
            for _ in range(2)
        ]
        for t in calls:
            t.start()
        for t in calls:
            t.join()
        assert [2, 2] == [r[1] for r in results]
        assert 2 == len({r[0] for r in results})

    def test_many_threads_share_a_small_pool(self, make: Callable[..., ProcessBackend]) -> None:
        """More threads than workers queue for them and all get their own answers."""
        backend = make(workers=2)
        results: dict[int, list[int]] = {}

        def work(n: int) -> None:
            results[n] = [backend.call("add", (n, i)) for i in range(50)]

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {n: [n + i for i in range(50)] for n in range(6)} == results

    def test_batch_results_in_order(self, make: Callable[..., ProcessBackend]) -> None:
        """call_batch returns one result per item, in order."""
        backend = make()
        assert [i + 1 for i in range(1000)] == backend.call_batch("add", [(i, 1) for i in range(1000)])
        assert [] == backend.call_batch("add", [])

    def test_batch_spreads_over_the_pool(self, make: Callable[..., ProcessBackend]) -> None:
        """A batch is split into contiguous shares, one per worker."""
        backend = make(workers=2, options={"prewarm": True})
        pids = backend.call_batch("probe", [("pid", i) for i in range(10)])
        assert 2 == len(set(pids))
        assert [pids[0]] * 5 + [pids[5]] * 5 == pids

    def test_batch_starts_workers_it_can_use(self, make: Callable[..., ProcessBackend]) -> None:
        """A batch on a pool not yet full starts more workers and uses them."""
        backend = make(workers=2)
        backend.start()
        pids = backend.call_batch("probe", [("pid", i) for i in range(4)])
        assert 2 == len(set(pids))
        assert [["x", 1], ["x", 2]] == backend.call_batch("probe", [("x", 1), ("x", 2)])

    def test_batch_error_names_the_item(self, make: Callable[..., ProcessBackend]) -> None:
        """An exception in a batch raises PluginHookError carrying the item's index."""
        backend = make(workers=2, options={"prewarm": True})
        items = [("x", i) for i in range(10)]
        items[7] = ("raise", 7)
        with pytest.raises(PluginHookError) as info:
            backend.call_batch("probe", items)
        assert (7, "it broke: 7") == (getattr(info.value, "index"), info.value.exc_message)  # noqa: B009
        assert [["x", 1]] == backend.call_batch("probe", [("x", 1)])

    def test_batch_structures_results(self, make: Callable[..., ProcessBackend]) -> None:
        """Batch results are structured by the spec's annotation like single calls."""
        backend = make()
        assert [Stats(1, 1), Stats(2, 3)] == backend.call_batch("stats", [("a",), ("b c",)])


class TestStreaming:
    def test_generator_streams_items(self, make: Callable[..., ProcessBackend]) -> None:
        """A hook returning a generator gives the host an iterator over its items."""
        backend = make()
        result = backend.call("tokens", (" ".join(f"w{i}" for i in range(10_000)),))
        assert not isinstance(result, list)
        assert [f"w{i}" for i in range(10_000)] == list(result)

    def test_items_arrive_while_the_generator_runs(self, make: Callable[..., ProcessBackend], tmp_path: Path) -> None:
        """The first item reaches the host before the generator produces the next."""
        backend = make(timeout=20)
        flag = tmp_path / "flag"
        stream = backend.call("probe", ("wait-file", str(flag)))
        assert "first" == next(stream)
        flag.touch()
        assert ["second"] == list(stream)

    def test_exception_mid_stream(self, make: Callable[..., ProcessBackend]) -> None:
        """An exception in the generator is raised by the host iterator after the earlier items."""
        backend = make()
        got: list[str] = []
        with pytest.raises(PluginHookError, match="stream broke"):
            for word in backend.call("tokens", ("a b FAIL c",)):
                got.append(word)
        assert ["a", "b"] == got
        assert 3 == backend.call("add", (1, 2))

    def test_abandoned_stream_frees_the_worker(self, make: Callable[..., ProcessBackend]) -> None:
        """Closing a stream early cancels it; the same worker serves the next call."""
        backend = make()
        pid = backend.call("probe", ("pid", None))
        stream = backend.call("probe", ("stream", [100_000, 10]))
        assert b"x" * 10 == next(stream)
        stream.close()
        assert pid == backend.call("probe", ("pid", None))

    def test_stream_dropped_unread_frees_the_worker(self, make: Callable[..., ProcessBackend]) -> None:
        """A stream never iterated, once dropped, gives its worker back."""
        backend = make()
        pid = backend.call("probe", ("pid", None))
        stream = backend.call("probe", ("stream", [100_000, 10]))
        del stream
        gc.collect()
        assert pid == backend.call("probe", ("pid", None))

    def test_worker_dying_between_chunks_is_a_crash(self, make: Callable[..., ProcessBackend]) -> None:
        """A worker killed while the host hands out a chunk is PluginCrashed at the next one, not an OSError."""
        backend = make()
        pid = backend.call("probe", ("pid", None))
        stream = backend.call("probe", ("stream", [100_000, 10]))
        assert b"x" * 10 == next(stream)
        time.sleep(0.3)  # the worker has sent its next chunk and waits for MORE
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not alive(pid))
        with pytest.raises(PluginCrashed, match="SIGKILL"):
            for _ in stream:
                pass
        assert pid != backend.call("probe", ("pid", None))
        assert ("crashed", "probe") == (backend.incidents[-1].kind, backend.incidents[-1].hook)

    def test_100mb_stream_bounded_memory(self, make: Callable[..., ProcessBackend]) -> None:
        """100 MB through a generator keeps host and worker memory bounded."""
        backend = make(memory_mb=400)
        backend.call("add", (1, 2))
        gc.collect()
        # Python-level allocations, not RSS: RSS also moves with whatever earlier
        # tests left for the allocator and the collector, which made this flaky.
        tracemalloc.start()
        total = 0
        worker_peak = 0
        try:
            for item in backend.call("probe", ("stream", [400, 256 * 1024])):
                if isinstance(item, int):
                    worker_peak = item
                    continue
                total += len(item)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert 400 * 256 * 1024 == total
        assert peak < 30 * 2**20  # bytes: a few chunks in flight, not 100 MB
        assert worker_peak < 80_000  # KiB: the worker never held the whole stream


class TestLifecycle:
    def test_close_leaves_no_children_or_fds(self, make: Callable[..., ProcessBackend]) -> None:
        """close() stops every worker and closes every descriptor the backend opened."""
        fds_before, children_before = set(os.listdir("/proc/self/fd")), children()
        backend = make(workers=2, options={"prewarm": True})
        backend.start()
        backend.call_batch("add", [(1, 2)] * 10)
        assert 2 == len(children() - children_before)
        backend.close()
        backend.close()
        assert children_before == children()
        assert fds_before == set(os.listdir("/proc/self/fd"))
        with pytest.raises(PluginError, match="closed"):
            backend.call("add", (1, 2))

    def test_close_during_a_call(self, make: Callable[..., ProcessBackend]) -> None:
        """close() while another thread waits on a hung call ends that call with PluginError."""
        children_before = children()
        backend = make()
        backend.start()
        errors: list[BaseException] = []

        def hang() -> None:
            try:
                backend.call("probe", ("hang", None))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=hang)
        thread.start()
        assert wait_until(lambda: not backend.pool.idle)  # the worker is taken
        backend.close()
        thread.join()
        assert ["backend closed during hook 'probe'"] == [e.message for e in errors if isinstance(e, PluginError)]
        assert children_before == children()

    def test_interpreter_exit_kills_workers(self, site: Path, tmp_path: Path) -> None:
        """A host that exits without close() leaves no worker behind, even a busy one."""
        source = """
            import os, time
            from pluginsdk import hookimpl

            @hookimpl
            def probe(value, extra):
                if value == "hang":
                    time.sleep(600)
                return os.getpid()
        """
        install_plugin(
            site,
            "exit",
            textwrap.dedent(source),
            module="proctest_exit",
            dist="proctest-exit",
            group="proctest.plugins",
            isolation="process",
            hooks=("probe",),
        )
        script = tmp_path / "host.py"
        script.write_text(
            textwrap.dedent(f"""
            import logging, sys, threading, time
            sys.path.insert(0, {str(site)!r})
            from typing import Any
            from pluginsdk.backends.base import DEFAULT_LIMITS, PluginTarget
            from pluginsdk.backends.process import ProcessBackend
            from pluginsdk.spec import HookSpec, hookspec

            class Hooks:
                @hookspec
                def probe(self, value: Any, extra: Any) -> Any: ...

            target = PluginTarget(name="exit", dist="proctest-exit", module="proctest_exit", attr=None,
                package_dir="", path_entry={str(site)!r}, hooks={{"probe": ("value", "extra")}},
                limits=DEFAULT_LIMITS, spec=HookSpec("proctest", "1.0", Hooks))
            idle = ProcessBackend(target, log=logging.getLogger("x"))
            busy = ProcessBackend(target, log=logging.getLogger("x"))
            pids = [b.call("probe", ("pid", None)) for b in (idle, busy)]
            threading.Thread(target=busy.call, args=("probe", ("hang", None)), daemon=True).start()
            time.sleep(0.3)
            print(*pids, flush=True)
        """)
        )
        root = str(Path(__file__).resolve().parent.parent)
        out = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=root,
            env={**os.environ, "PYTHONPATH": root},
        )
        assert 0 == out.returncode, out.stderr
        pids = [int(p) for p in out.stdout.split()]
        assert 2 == len(pids)
        assert wait_until(lambda: not any(alive(p) for p in pids))

    def test_recycle_after_n_calls(self, make: Callable[..., ProcessBackend]) -> None:
        """With recycle_after=3 each worker serves three calls, then a fresh one takes over."""
        backend = make(recycle_after=3)
        pids = [backend.call("probe", ("pid", None)) for _ in range(7)]
        assert pids[0:3] == [pids[0]] * 3 and pids[3:6] == [pids[3]] * 3
        assert 3 == len(set(pids))
        assert wait_until(lambda: not alive(pids[0]))

    def test_idle_workers_shut_down(self, make: Callable[..., ProcessBackend]) -> None:
        """A worker idle past idle_timeout exits; the next call starts a new one."""
        backend = make(idle_timeout=0.2)
        pid = backend.call("probe", ("pid", None))
        assert wait_until(lambda: not alive(pid))
        assert pid != backend.call("probe", ("pid", None))

    def test_output_goes_to_logging(
        self, make: Callable[..., ProcessBackend], caplog: pytest.LogCaptureFixture
    ) -> None:
        """print(), sys.stderr and raw fd 1 writes reach the plugin's logger, not the channel."""
        backend = make()
        logger = f"pluginsdk.plugin.{backend.target.name}"
        with caplog.at_level(logging.INFO, logger=logger):
            assert "printed" == backend.call("probe", ("print", 42))
            assert wait_until(lambda: len([r for r in caplog.records if r.name == logger]) >= 3)
        got = sorted((r.levelno, r.getMessage()) for r in caplog.records if r.name == logger)
        assert [
            (logging.INFO, f"[{backend.target.name}] raw fd 1"),
            (logging.INFO, f"[{backend.target.name}] to stdout 42"),
            (logging.WARNING, f"[{backend.target.name}] to stderr"),
        ] == got

    def test_describe(self, make: Callable[..., ProcessBackend]) -> None:
        """describe() tells the level and the pool."""
        backend = make(workers=2)
        backend.start()
        assert "process (1/2 workers)" == backend.describe()


class TestIncidents:
    @pytest.mark.parametrize(
        ("value", "extra", "limits", "error", "kind", "says"),
        [
            ("exit", None, {}, PluginCrashed, "crashed", "exit code 7"),
            ("truncated", None, {}, PluginCrashed, "crashed", "exit code 0"),
            ("hang", None, {"timeout": 0.5}, PluginTimeout, "timeout", "timed out after 0.5s"),
            ("big", 2_000_000, {"max_message_mb": 1}, PluginResourceError, "resource", "exceeds"),
            ("fakeframe", None, {"max_message_mb": 1}, PluginResourceError, "resource", "exceeds"),
            ("garbage", None, {}, CodecError, "replaced", "malformed"),
        ],
        ids=["exit", "truncated-frame", "hang", "big-reply", "big-frame-header", "garbage"],
    )
    def test_recovered_fault_is_recorded(
        self,
        make: Callable[..., ProcessBackend],
        value: str,
        extra: Any,
        limits: dict[str, Any],
        error: type[PluginError],
        kind: str,
        says: str,
    ) -> None:
        """A crash, a timeout, a cap hit or a garbled reply is an incident: its kind, the hook, the caller's message."""
        backend = make(**limits)
        with pytest.raises(error) as info:
            backend.call("probe", (value, extra))
        assert 3 == backend.call("add", (1, 2))
        assert says in info.value.message
        assert [(kind, "probe", info.value.message)] == [(i.kind, i.hook, i.detail) for i in backend.incidents]
        assert 1 == backend.incident_count

    @pytest.mark.parametrize(("value", "error"), [("raise", PluginHookError), ("unencodable", CodecError)])
    def test_plugin_errors_are_not_incidents(
        self, make: Callable[..., ProcessBackend], value: str, error: type[PluginError]
    ) -> None:
        """A hook that raises, or returns what cannot cross, leaves its worker sound: no incident."""
        backend = make()
        pid = backend.call("probe", ("pid", None))
        with pytest.raises(error):
            backend.call("probe", (value, None))
        assert pid == backend.call("probe", ("pid", None))
        assert (0, ()) == (backend.incident_count, backend.incidents)

    def test_recycling_and_idle_shutdown_are_not_incidents(self, make: Callable[..., ProcessBackend]) -> None:
        """Workers replaced after recycle_after calls, or shut down idle, are normal operation."""
        recycling, idle = make(recycle_after=2), make(idle_timeout=0.2)
        pids = [recycling.call("probe", ("pid", None)) for _ in range(3)]
        assert pids[0] == pids[1] != pids[2]
        pid = idle.call("probe", ("pid", None))
        assert wait_until(lambda: not alive(pid))
        assert pid != idle.call("probe", ("pid", None))
        assert [(0, ())] * 2 == [(b.incident_count, b.incidents) for b in (recycling, idle)]

    def test_each_failed_start_is_an_incident(self, make: Callable[..., ProcessBackend]) -> None:
        """A worker dying while it loads the plugin is an incident, with no hook, each time."""
        backend = make("import os\nos._exit(4)\n", hooks=("add",))
        with pytest.raises(PluginLoadError):
            backend.call("add", (1, 2))
        assert [("crashed", None, "worker failed to start: exit code 4")] * 3 == [
            (i.kind, i.hook, i.detail) for i in backend.incidents
        ]


BIG_TEXT_PLUGIN = """
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    return "x" * int(text) if text.isdigit() else text.upper()
"""


class TestPluginInfoIncidents:
    def test_incidents_of_a_loaded_plugin(self, site: Path) -> None:
        """PluginInfo carries none before the plugin loads, then each incident and the count."""
        from pluginsdk import Host, Incident, Policy

        install_plugin(site, "upper", BIG_TEXT_PLUGIN, isolation="process")
        with Host(TEXTKIT, path=[str(site)], policy=Policy(limits=Limits(max_message_mb=0.01))) as host:
            before = host.plugin("upper")
            assert ("available", (), 0) == (before.status, before.incidents, before.incident_count)
            with pytest.raises(PluginResourceError) as info:
                host.hook.transform(text="20000")
            assert ["OK"] == host.hook.transform(text="ok")
            after = host.plugin("upper")
            assert ("loaded", 1) == (after.status, after.incident_count)
            (incident,) = after.incidents
            assert isinstance(incident, Incident)
            assert ("resource", "transform", info.value.message) == (incident.kind, incident.hook, incident.detail)

    def test_only_the_last_twenty_are_kept(self, site: Path) -> None:
        """Past 20 incidents the oldest are dropped (the rest stay oldest first); the count keeps the total."""
        from pluginsdk import Host, Policy

        install_plugin(site, "upper", BIG_TEXT_PLUGIN, isolation="process")
        messages = []
        with Host(TEXTKIT, path=[str(site)], policy=Policy(limits=Limits(max_message_mb=0.01))) as host:
            for size in range(20_000, 20_250, 10):  # 10 apart: a timed reply is a few bytes longer
                with pytest.raises(PluginResourceError) as info:
                    host.hook.transform(text=str(size))
                messages.append(info.value.message)
            got = host.plugin("upper")
        assert 25 == len(set(messages))  # each says its size: the order below is checked
        assert (25, messages[5:]) == (got.incident_count, [i.detail for i in got.incidents])


TEXT_PLUGIN = """
import os, sys
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    if text == "raise":
        raise ValueError("no raising allowed")
    if text == "pid":
        return str(os.getpid())
    print("transforming", text)
    return text.upper()
"""

INPROCESS_PLUGIN = """
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    return text[::-1]
"""


class TestHost:
    def test_host_calls_a_process_plugin(self, site: Path) -> None:
        """A plugin whose manifest says ``process`` runs in a worker behind host.hook."""
        from pluginsdk import Host

        install_plugin(site, "upper", TEXT_PLUGIN, isolation="process")
        install_plugin(site, "rev", INPROCESS_PLUGIN)
        with Host(TEXTKIT, path=[str(site)]) as host:
            assert ["HELLO", "olleh"] == sorted(host.hook.transform(text="hello"))
            assert str(os.getpid()) not in host.hook.transform(text="pid")
            assert "process" == host.plugin("upper").isolation

    def test_host_map_batches(self, site: Path) -> None:
        """map() over a process plugin returns per-item results in order."""
        from pluginsdk import Host

        install_plugin(site, "upper", TEXT_PLUGIN, isolation="process")
        with Host(TEXTKIT, path=[str(site)]) as host:
            items = [{"text": f"w{i}"} for i in range(200)]
            assert [[f"W{i}"] for i in range(200)] == host.hook.transform.map(items)

    def test_host_plugin_error(self, site: Path) -> None:
        """An exception in a process plugin reaches the host caller as PluginHookError."""
        from pluginsdk import Host

        install_plugin(site, "upper", TEXT_PLUGIN, isolation="process")
        with Host(TEXTKIT, path=[str(site)]) as host:
            with pytest.raises(PluginHookError) as info:
                host.hook.transform(text="raise")
            assert ("upper", "ValueError", "no raising allowed") == (
                info.value.plugin,
                info.value.exc_type,
                info.value.exc_message,
            )

    def test_host_close_stops_workers_and_logs_output(self, site: Path, caplog: pytest.LogCaptureFixture) -> None:
        """Plugin prints reach the plugin's logger; closing the host leaves no worker."""
        from pluginsdk import Host

        before = children()
        install_plugin(site, "upper", TEXT_PLUGIN, isolation="process")
        with caplog.at_level(logging.INFO, logger="pluginsdk.plugin.upper"), Host(TEXTKIT, path=[str(site)]) as host:
            assert ["ABC"] == host.hook.transform(text="abc")
            assert wait_until(lambda: any(r.getMessage() == "[upper] transforming abc" for r in caplog.records))
        assert before == children()
