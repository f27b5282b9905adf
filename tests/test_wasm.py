"""The ``wasm`` backend: real wasmtime, the real CPython WASI interpreter, real installed plugins.

The session shares one cache directory (``conftest._private_cache``), so the
interpreter is compiled once; only the corruption test compiles it again.
"""

from __future__ import annotations

import gc
import logging
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from pluginsdk import codec
from pluginsdk._errors import (
    PluginCrashed,
    PluginHookError,
    PluginLoadError,
    PluginResourceError,
    PluginTimeout,
)
from pluginsdk._wasm.gate import BUDGET_FLOOR, HOST_FILES_SHARE, OpenFiles, instantiate, rewrite
from pluginsdk.backends.base import DEFAULT_LIMITS, Limits, PluginTarget
from pluginsdk.backends.wasm import WasmBackend
from pluginsdk.guest.fastcodec import make_fast_pack, make_fast_unpack
from pluginsdk.spec import HookSpec, hookspec

from .plugin_factory import install_plugin
from .procs import wait_until

_REASON = WasmBackend.unavailable_reason()
pytestmark = [pytest.mark.wasm, pytest.mark.skipif(_REASON is not None, reason=f"wasm backend unavailable: {_REASON}")]


class WasmHooks:
    @hookspec
    def transform(self, text: str) -> str:  # type: ignore[empty-body]
        """Transform text."""

    @hookspec
    def tokens(self, text: str) -> Iterator[str]:  # type: ignore[empty-body]
        """Stream words."""

    @hookspec
    def probe(self, value: Any, extra: Any) -> Any:  # type: ignore[empty-body]
        """Do what ``value`` says (see PLUGIN)."""


SPEC = HookSpec("wasmkit", version="1.0", hooks=WasmHooks)
HOOKS = {"transform": ("text",), "tokens": ("text",), "probe": ("value", "extra")}

PLUGIN = """
import os, sys, time
from pluginsdk import hookimpl

HERE = os.path.dirname(__file__)

class Oops(ValueError):
    pass

def _try(fn):
    try:
        return "allowed: %r" % (fn(),)
    except BaseException as exc:
        return "refused: " + type(exc).__name__

ACTIONS = {
    "passwd": lambda extra: _try(lambda: open("/etc/passwd").read(20)),
    "escape": lambda extra: _try(lambda: open(os.path.join(HERE, "..", "..", "etc", "passwd")).read(20)),
    "escape_rel": lambda extra: _try(lambda: os.listdir("../../..")),
    "root": lambda extra: _try(lambda: os.listdir("/")),
    "write_plugin": lambda extra: _try(lambda: open(os.path.join(HERE, "new.txt"), "w").write("x")),
    "env": lambda extra: os.environ.get(extra),
    "socket": lambda extra: _try(lambda: __import__("socket").create_connection(("127.0.0.1", 9), timeout=1)),
    "subprocess": lambda extra: _try(lambda: __import__("subprocess").run(["/bin/echo", "hi"])),
    "fork": lambda extra: _try(lambda: os.fork()),
    "loop": lambda extra: [None for _ in iter(int, 1)],
    "sleep": lambda extra: time.sleep(extra),
    "bomb": lambda extra: len(b"x" * (extra << 20)),
    "big": lambda extra: "x" * (extra << 20),
    "grow": lambda extra: [bytearray(1 << 20) for _ in range(extra)],
    "abort": lambda extra: __import__("_testcapi").fatal_error(b"deliberate abort"),
    "raise": lambda extra: (_ for _ in ()).throw(Oops("bad " + str(extra))),
    "echo": lambda extra: extra,
    "modules": lambda extra: sorted(sys.modules),
    "print": lambda extra: print("said", extra) or "printed",
    "nap": lambda extra: _nap(*extra),
    "hold": lambda extra: len([KEPT.append(open(__file__, "rb")) for _ in range(extra)]),
    "drop": lambda extra: [f.close() for f in KEPT].clear() or KEPT.clear() or 0,
    "listing": lambda extra: len(os.listdir(HERE)),
}
KEPT = []

def _nap(how, seconds):
    start = time.monotonic()
    if how == "select":
        __import__("select").select([], [], [], seconds)
    else:
        time.sleep(seconds)
    return time.monotonic() - start

@hookimpl
def transform(text):
    return text.upper() + "!"

@hookimpl
def tokens(text):
    for word in text.split():
        yield word

@hookimpl
def probe(value, extra):
    return ACTIONS[value](extra)
"""


def make_target(site: Path, name: str = "sbx", limits: Limits = DEFAULT_LIMITS, **options: Any) -> PluginTarget:
    module = f"wasmkit_{name}"
    pkg = install_plugin(
        site, name, PLUGIN, module=module, group="wasmkit.plugins", isolation="wasm", hooks=tuple(HOOKS)
    )
    return PluginTarget(
        name=name,
        dist=f"wasmkit-{name}",
        module=module,
        attr=None,
        package_dir=str(pkg),
        path_entry=str(site),
        hooks=HOOKS,
        limits=limits.merged(DEFAULT_LIMITS),
        spec=SPEC,
        options=dict(options),
    )


@pytest.fixture
def backend(site: Path) -> Iterator[WasmBackend]:
    b = WasmBackend(make_target(site, limits=Limits(timeout=2.0, memory_mb=96)), log=logging.getLogger("test"))
    yield b
    b.close()


class TestCalls:
    def test_results_equal_in_process(self, backend: WasmBackend, site: Path) -> None:
        """Single calls, batches and values of every plain type come back as in-process calls return them."""
        import importlib

        here = importlib.import_module("wasmkit_sbx")
        words = ["hello", "wörld", "", "x" * 300]
        assert [backend.call("transform", (w,)) for w in words] == [here.transform(w) for w in words]
        assert backend.call_batch("transform", [(w,) for w in words]) == [here.transform(w) for w in words]
        value = {"a": [1, -2, 2**40, 1.5, None, True], "b": b"\x00\xff", 3: "int key", "t": (1, 2)}
        assert backend.call("probe", ("echo", value)) == msgpack.unpackb(msgpack.packb(value), strict_map_key=False)

    def test_generator_result_streams(self, backend: WasmBackend) -> None:
        result = backend.call("tokens", ("a bb ccc " * 500,))
        assert not isinstance(result, list)
        assert list(result) == ["a", "bb", "ccc"] * 500

    def test_plugin_exception_carries_remote_details(self, backend: WasmBackend) -> None:
        with pytest.raises(PluginHookError) as info:
            backend.call("probe", ("raise", 7))
        err = info.value
        assert (err.plugin, err.hook, err.exc_message) == ("sbx", "probe", "bad 7")
        assert err.exc_type.endswith("Oops")
        assert "wasmkit_sbx/__init__.py" in err.traceback
        assert backend.call("transform", ("ok",)) == "OK!"

    def test_plugin_print_is_logged_not_mixed_into_replies(
        self, backend: WasmBackend, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO, logger="pluginsdk.plugin.sbx"):
            assert backend.call("probe", ("print", "something")) == "printed"
            assert backend.call("transform", ("a",)) == "A!"
            deadline = time.monotonic() + 10  # output is pumped by a thread of its own
            while not any("said something" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the plugin's print() never reached the log"
                time.sleep(0.01)
        (record,) = [r for r in caplog.records if "said something" in r.getMessage()]
        assert (record.levelno, getattr(record, "plugin_stream", None)) == (logging.INFO, "stdout")

    def test_guest_start_imports_only_what_the_loop_needs(self, backend: WasmBackend) -> None:
        """Imports are most of an instance's start: the guest loop imports no third-party package,
        nor typing, inspect, traceback... (pluggy stays mounted for plugins that import it)."""
        modules = set(backend.call("probe", ("modules", None)))
        assert {"pluginsdk.guest.loop", "pluginsdk.codec"} <= modules
        heavy = {"pluggy", "msgpack", "cattrs", "attrs", "typing", "inspect", "traceback", "importlib.util", "re"}
        assert not heavy & modules
        with pytest.raises(PluginHookError):  # formatting a traceback imports traceback, on demand
            backend.call("probe", ("raise", 1))
        assert backend.call("probe", ("echo", 1)) == 1

    def test_describe_names_interpreter_and_runtime(self, backend: WasmBackend) -> None:
        backend.start()
        text = backend.describe()
        assert text.startswith("wasm (python-3.12.0.wasm, wasmtime ")


class TestSandbox:
    @pytest.mark.parametrize(
        "action", ["passwd", "escape", "escape_rel", "root", "write_plugin", "socket", "subprocess", "fork"]
    )
    def test_refused(self, backend: WasmBackend, action: str) -> None:
        outcome = backend.call("probe", (action, None))
        assert outcome.startswith("refused: "), outcome

    def test_host_environment_is_invisible(self, backend: WasmBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PLUGINSDK_TEST_SECRET", "hunter2")
        assert backend.call("probe", ("env", "PLUGINSDK_TEST_SECRET")) is None
        assert backend.call("probe", ("env", "HOME")) is None

    def test_c_extension_is_refused_at_load(self, site: Path) -> None:
        target = make_target(site, "native")
        Path(target.package_dir, "_speedups.cpython-312-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
        b = WasmBackend(target, log=logging.getLogger("test"))
        with pytest.raises(PluginLoadError, match=r"C extensions.*_speedups"):
            b.start()
        b.close()

    def test_import_error_is_a_load_error(self, site: Path) -> None:
        target = make_target(site, "broken")
        Path(target.package_dir, "__init__.py").write_text("import does_not_exist_anywhere\n")
        b = WasmBackend(target, log=logging.getLogger("test"))
        with pytest.raises(PluginLoadError, match="does_not_exist_anywhere") as info:
            b.start()
        assert info.value.plugin == "broken"
        b.close()


class TestLimits:
    def test_memory_bomb_is_a_resource_error_and_next_call_works(self, backend: WasmBackend) -> None:
        with pytest.raises(PluginResourceError, match="MemoryError") as info:
            backend.call("probe", ("bomb", 512))
        assert info.value.plugin == "sbx"
        with pytest.raises(PluginResourceError):
            backend.call("probe", ("grow", 512))
        assert backend.call("transform", ("after",)) == "AFTER!"

    def test_message_size_limit_both_ways(self, site: Path) -> None:
        b = WasmBackend(make_target(site, "msg", Limits(max_message_mb=1)), log=logging.getLogger("test"))
        try:
            with pytest.raises(PluginResourceError, match=r"reply|exceeds") as info:
                b.call("probe", ("big", 2))
            assert info.value.plugin == "msg"
            with pytest.raises(PluginResourceError, match="arguments"):
                b.call("probe", ("echo", "y" * (2 << 20)))
            assert b.call("probe", ("big", 0)) == ""
        finally:
            b.close()

    def test_infinite_loop_times_out_and_next_call_works(self, backend: WasmBackend) -> None:
        with pytest.raises(PluginTimeout) as info:
            backend.call("probe", ("loop", None))
        assert (info.value.plugin, info.value.timeout) == ("sbx", 2.0)
        assert backend.call("transform", ("after",)) == "AFTER!"

    def test_trap_is_a_crash_and_next_call_works(self, backend: WasmBackend) -> None:
        """A guest that aborts (a WebAssembly trap) is reported as a crash, with how it died."""
        with pytest.raises(PluginCrashed) as info:
            backend.call("probe", ("abort", None))
        assert info.value.plugin == "sbx"
        assert "trap" in info.value.detail and "unreachable" in info.value.detail
        assert backend.call("transform", ("after",)) == "AFTER!"

    def test_sleep_past_the_deadline_is_stopped(self, backend: WasmBackend) -> None:
        """A sleeping guest is stopped at the deadline: the caller is answered and the old instance ends."""
        backend.start()
        (asleep,) = backend.pool.all
        started = time.monotonic()
        with pytest.raises(PluginTimeout):
            backend.call("probe", ("sleep", 600))
        assert time.monotonic() - started < 30  # the sleep (600 s) was not waited for
        assert wait_until(lambda: not asleep.alive)  # its thread, memory and descriptors are gone
        assert "stopped at its deadline" == asleep.death_detail()
        assert backend.call("transform", ("after",)) == "AFTER!"

    @pytest.mark.parametrize("how", ["time.sleep", "select"])
    def test_sleeps_last_as_long_as_asked(self, backend: WasmBackend, how: str) -> None:
        """The gate sleeps for the guest: as long as asked, measured by the guest's own clock."""
        assert 0.3 <= backend.call("probe", ("nap", [how, 0.3])) < 10

    def test_one_instance_timing_out_does_not_disturb_another(self, site: Path) -> None:
        slow = WasmBackend(make_target(site, "slow", Limits(timeout=1.5)), log=logging.getLogger("test"))
        fast = WasmBackend(make_target(site, "fast"), log=logging.getLogger("test"))
        try:
            slow.start()
            fast.start()
            errors: list[BaseException] = []

            def loop() -> None:
                try:
                    slow.call("probe", ("loop", None))
                except BaseException as exc:
                    errors.append(exc)

            t = threading.Thread(target=loop)
            t.start()
            answers = []
            while t.is_alive():
                answers.append(fast.call("transform", ("x",)))
            t.join()
            assert answers and set(answers) == {"X!"}
            assert [type(e) for e in errors] == [PluginTimeout]
            assert slow.call("transform", ("y",)) == "Y!"
        finally:
            slow.close()
            fast.close()

    def test_pool_instance_timing_out_leaves_its_sibling_working(self, site: Path) -> None:
        """Also a regression test: the batch after the timeout takes the replacement instance,
        whose READY must be read as its handshake, not as a share's reply."""
        b = WasmBackend(
            make_target(site, "pool", Limits(timeout=1.5, workers=2), prewarm=True), log=logging.getLogger("test")
        )
        try:
            b.start()
            with pytest.raises(PluginTimeout):
                b.call_batch("probe", [("echo", 1), ("loop", None)])
            assert b.call_batch("transform", [("a",), ("b",)]) == ["A!", "B!"]
        finally:
            b.close()


class TestOpenFiles:
    def test_closed_files_are_uncounted(self, site: Path) -> None:
        """Files the guest closes (and directories it lists) no longer count against its cap."""
        b = WasmBackend(make_target(site, "files", Limits(open_files=25)), log=logging.getLogger("test"))
        try:
            for _ in range(3):
                assert 20 == b.call("probe", ("hold", 20))
                assert b.call("probe", ("listing", None)) > 0
                assert 0 == b.call("probe", ("drop", None))
            (instance,) = b.pool.all
            assert (0, 0) == (instance.files.refused, b.incident_count)
            assert 0 < OpenFiles.total() <= 25
        finally:
            b.close()
        assert 0 == OpenFiles.total()

    def test_open_past_the_cap_is_emfile_and_the_instance_is_replaced(self, site: Path) -> None:
        """The open past ``open_files`` fails in the guest with EMFILE; the instance is replaced after the call."""
        b = WasmBackend(make_target(site, "capped", Limits(open_files=10)), log=logging.getLogger("test"))
        try:
            assert 10 == b.call("probe", ("hold", 10))
            (first,) = b.pool.all
            with pytest.raises(PluginHookError) as info:
                b.call("probe", ("hold", 1))
            assert ("OSError", "capped") == (info.value.exc_type, info.value.plugin)
            assert "No file descriptors available" in info.value.exc_message
            assert first not in b.pool.all
            assert ("resource", 1) == (b.incidents[-1].kind, b.incident_count)
            assert "its cap of 10" in b.incidents[-1].detail
            assert 5 == b.call("probe", ("hold", 5))  # a fresh instance, holding nothing before
        finally:
            b.close()
        assert 0 == OpenFiles.total()

    def test_all_guests_together_keep_within_the_hosts_budget(self, site: Path) -> None:
        """Instances without a cap of their own are refused once all guests hold half the host's limit."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))  # a small table, as on many hosts
        b = WasmBackend(make_target(site, "greedy", Limits(open_files=10**6)), log=logging.getLogger("test"))
        try:
            assert int(512 * HOST_FILES_SHARE) == OpenFiles.host_budget()
            with pytest.raises(PluginHookError, match="No file descriptors available"):
                b.call("probe", ("hold", 512))
            assert OpenFiles.total() <= OpenFiles.host_budget()
            assert "the host's budget" in b.incidents[-1].detail
        finally:
            b.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert 0 == OpenFiles.total()


    def test_a_plugin_holding_the_budget_does_not_stop_the_others(self, site: Path) -> None:
        """When one plugin holds the whole budget, another still loads and holds up to the floor."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
        hog = WasmBackend(make_target(site, "hog", Limits(open_files=10**6)), log=logging.getLogger("test"))
        other = WasmBackend(make_target(site, "other"), log=logging.getLogger("test"))
        try:
            whole = OpenFiles.host_budget() - OpenFiles.total() + BUDGET_FLOOR  # the floor is free
            assert whole == hog.call("probe", ("hold", whole))
            assert "X!" == other.call("transform", ("x",))  # its imports open files past the budget
            assert BUDGET_FLOOR == other.call("probe", ("hold", BUDGET_FLOOR))
            with pytest.raises(PluginHookError, match="No file descriptors available"):
                other.call("probe", ("hold", 1))
            assert "the host's budget" in other.incidents[-1].detail
            assert (0, 1) == (hog.incident_count, other.incident_count)
        finally:
            hog.close()
            other.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert 0 == OpenFiles.total()


    def test_idle_instances_hold_none_of_the_budget(self, site: Path) -> None:
        """Instances that only imported their code leave the whole budget to one that needs it."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
        idle = [WasmBackend(make_target(site, f"idle{i}"), log=logging.getLogger("test")) for i in range(3)]
        busy = WasmBackend(make_target(site, "busy", Limits(open_files=10**6)), log=logging.getLogger("test"))
        try:
            assert ["X!"] * 3 == [b.call("transform", ("x",)) for b in idle]
            assert 0 == OpenFiles.total()
            budget = OpenFiles.host_budget()
            assert budget == busy.call("probe", ("hold", budget))
            assert 0 == busy.incident_count
        finally:
            for b in [*idle, busy]:
                b.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert 0 == OpenFiles.total()

    def test_a_cap_past_32_bits_is_no_cap(self) -> None:
        """An ``open_files`` too large for the gate's 32-bit counter means no cap, never a wrapped-around one."""
        assert [2**31 - 1, 2**31 - 1, 5] == [OpenFiles(n).limit for n in (2**32, 0, 5)]


class TestGate:
    """The rewrite that routes the interpreter's descriptor calls through the gate."""

    MODULE = """
    (module
      (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_open"
        (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_close" (func (param i32) (result i32)))
      (memory (export "memory") 2 10)
      (func (export "_start")))
    """

    def test_rewrite_renames_the_gated_imports_only(self) -> None:
        """path_open and fd_close come from the gate; every import keeps its place and type, the memory stays."""
        import wasmtime

        engine = wasmtime.Engine()
        before = wasmtime.Module(engine, self.MODULE)
        after = wasmtime.Module(engine, rewrite(wasmtime.wat2wasm(self.MODULE)))

        def signature(item: Any) -> tuple[list[str], list[str]]:
            return [str(t) for t in item.type.params], [str(t) for t in item.type.results]

        assert [
            ("wasi_snapshot_preview1", "fd_write"),
            ("pluginsdk_files", "path_open"),
            ("pluginsdk_files", "fd_close"),
        ] == [(i.module, i.name) for i in after.imports]
        assert [signature(i) for i in before.imports] == [signature(i) for i in after.imports]
        assert ["memory", "_start"] == [e.name for e in after.exports]

    PROGRAM = """
    (module
      (import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_renumber" (func $renumber (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "f")
      (func (export "open") (result i32)
        (call $open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 0)
          (i64.const 2) (i64.const 2) (i32.const 0) (i32.const 0)))  ;; rights: fd_read
      (func (export "fd") (result i32) (i32.load (i32.const 0)))
      (func (export "close") (param i32) (result i32) (call $close (local.get 0)))
      (func (export "renumber") (param i32 i32) (result i32) (call $renumber (local.get 0) (local.get 1))))
    """

    def test_the_gate_counts_opens_closes_and_renumbering(self, tmp_path: Path) -> None:
        """Past the cap an open is EMFILE (33); a close or renumbering onto another file frees a slot."""
        import wasmtime

        from pluginsdk._wasm.cache import engine_config

        (tmp_path / "f").write_text("x")
        engine = wasmtime.Engine(engine_config())
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        store = wasmtime.Store(engine)
        store.set_epoch_deadline(1)  # the engine interrupts by epoch; it never moves here
        wasi = wasmtime.WasiConfig()
        wasi.preopen_dir(str(tmp_path), "/d", False)  # descriptor 3
        store.set_wasi(wasi)
        files = OpenFiles(3)
        program = wasmtime.Module(engine, rewrite(bytes(wasmtime.wat2wasm(self.PROGRAM))))
        calls = instantiate(engine, linker, store, program, files).exports(store)

        def open_file() -> tuple[int, int]:
            return calls["open"](store), calls["fd"](store)

        first, second, third = (open_file() for _ in range(3))
        assert [0, 0, 0] == [first[0], second[0], third[0]]
        assert (33, 3, "cap") == (calls["open"](store), files.held, files.refused_by)
        assert 0 == calls["renumber"](store, first[1], first[1])  # a no-op: nothing was closed
        assert 33 == calls["open"](store)
        assert 0 == calls["renumber"](store, first[1], second[1])  # closes the second
        assert 0 == open_file()[0]
        assert 33 == calls["open"](store)
        assert 0 == calls["close"](store, third[1])
        assert (0, 33) == (calls["open"](store), calls["open"](store))
        assert (4, 3) == (files.refused, files.held)
        store.close()
        files.release_all()
        assert 0 == OpenFiles.total()

    @pytest.mark.parametrize(
        ("source", "fragment"),
        [
            (b"not wasm", "not a WebAssembly module"),
            ('(module (import "wasi_snapshot_preview1" "fd_close" (func)))', "import path_open and fd_close"),
            ("(module (memory 1))", "import path_open and fd_close"),
            (b"\0asm\x02\0\0\0", "not a WebAssembly module"),
        ],
    )
    def test_rewrite_refuses_what_it_cannot_gate(self, source: str | bytes, fragment: str) -> None:
        """A module it cannot gate is refused with a reason, never compiled ungated."""
        import wasmtime

        data = source if isinstance(source, bytes) else wasmtime.wat2wasm(source)
        with pytest.raises(ValueError, match=fragment):
            rewrite(bytes(data))


class TestCache:
    def test_cache_is_reused_and_survives_corruption(self, site: Path) -> None:
        from pluginsdk._wasm import cache

        b = WasmBackend(make_target(site, "c1"), log=logging.getLogger("test"))
        b.start()
        module = b._sandbox.module_file
        b.close()
        before = module.stat().st_mtime_ns
        b = WasmBackend(make_target(site, "c2"), log=logging.getLogger("test"))
        assert b.call("transform", ("a",)) == "A!"
        b.close()
        assert module.stat().st_mtime_ns == before, "a cached module must not be recompiled"

        def corrupt(data: bytes) -> None:
            # Replaced, not rewritten in place: truncating a file that live
            # modules have mmapped would crash this very process (SIGBUS).
            tmp = module.with_name("corrupt.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, module)

        data = bytearray(module.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 4096] = os.urandom(4096)
        corrupt(bytes(data))  # same size, new mtime: hashed and found corrupt
        b = WasmBackend(make_target(site, "c3"), log=logging.getLogger("test"))
        assert b.call("transform", ("b",)) == "B!"
        b.close()
        assert module.stat().st_mtime_ns != before
        assert cache._module_ok(module)

    def test_own_interpreter_from_the_environment(
        self, site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """PLUGINSDK_WASM_PYTHON picks the interpreter (hashed, not pinned); a bad one is a clear load error."""
        from pluginsdk._errors import BackendUnavailable
        from pluginsdk._wasm.interpreter import locate

        own = tmp_path / "my-python.wasm"
        own.write_bytes(Path(locate().path).read_bytes())  # same content: the compiled module is shared
        monkeypatch.setenv("PLUGINSDK_WASM_PYTHON", str(own))
        b = WasmBackend(make_target(site, "own"), log=logging.getLogger("test"))
        assert b.call("transform", ("a",)) == "A!"
        assert b.describe().startswith("wasm (my-python.wasm, ")
        b.close()

        bad = tmp_path / "bad.wasm"
        bad.write_bytes(b"\0asm not really")
        monkeypatch.setenv("PLUGINSDK_WASM_PYTHON", str(bad))
        b = WasmBackend(make_target(site, "bad"), log=logging.getLogger("test"))
        with pytest.raises(BackendUnavailable, match=r"bad\.wasm") as info:
            b.start()
        assert info.value.plugin == "bad"
        b.close()

    def test_warm_cache_returns_the_compiled_module(self) -> None:
        from pluginsdk._wasm import warm_cache

        path = warm_cache()
        assert path.is_file() and path.suffix == ".cwasm"
        assert path.stat().st_size > 1_000_000


class TestPrune:
    @staticmethod
    def old_entries(root: Path, days: float) -> list[Path]:
        """A compiled module, staged libraries, bytecode and a leftover temporary file, last used ``days`` ago."""
        entries = [root / "python-0ld-wt1.0-x.cwasm", root / "lib-0ld", root / "pyc-0ld-0ld", root / ".lib-x.1.2.tmp"]
        entries[0].write_bytes(b"compiled")
        entries[0].with_suffix(".json").write_text("{}")
        for folder in entries[1:]:
            folder.mkdir()
            (folder / ".complete").write_text("")
        when = time.time() - days * 86400
        for path in (*entries, entries[0].with_suffix(".json"), *(e / ".complete" for e in entries[1:])):
            os.utime(path, (when, when))
        return entries

    def test_entries_unused_for_long_are_removed_and_the_live_ones_kept(self, site: Path) -> None:
        """Setting up a sandbox removes entries unused for 30 days, never its own, and stamps its own as used."""
        from pluginsdk._wasm import cache, setup
        from pluginsdk._wasm.interpreter import wasm_cache_dir

        root = wasm_cache_dir()
        stale, recent = self.old_entries(root, 31), root / "lib-recent"
        recent.mkdir()
        (recent / ".complete").write_text("")
        setup._sandboxes.clear()  # as in a new process
        sandbox = setup.prepare()
        assert [False] * 4 == [p.exists() for p in stale]
        assert not stale[0].with_suffix(".json").exists()
        assert (True, True) == (recent.exists(), sandbox.lib_dir.exists())
        marker = sandbox.lib_dir / ".complete"
        os.utime(marker, (0, 0))  # its own entry, stamped long ago: kept all the same
        assert [] == cache.prune(keep=[sandbox])
        setup.prepare()  # a use refreshes the stamp
        assert time.time() - marker.stat().st_mtime < 3600
        shutil.rmtree(recent)

    def test_each_instance_start_stamps_its_entries(self, site: Path) -> None:
        """A long-running host keeps its entries: every new instance refreshes their stamps, not only set-up."""
        b = WasmBackend(make_target(site, "stamp", Limits(recycle_after=1)), log=logging.getLogger("test"))
        try:
            assert "A!" == b.call("transform", ("a",))
            marker = b._sandbox.lib_dir / ".complete"
            os.utime(marker, (0, 0))
            assert "B!" == b.call("transform", ("b",))  # recycled: a new instance, no new set-up
            assert time.time() - marker.stat().st_mtime < 3600
        finally:
            b.close()

    def test_cli_prune_reports_what_it_removed(self, tmp_path: Path) -> None:
        """``pluginsdk wasm prune --days N`` removes what is older and says so; it needs no interpreter."""
        (tmp_path / "wasm").mkdir()
        old = self.old_entries(tmp_path / "wasm", 10)
        env = {**os.environ, "PLUGINSDK_CACHE_DIR": str(tmp_path)}
        cmd = [sys.executable, "-m", "pluginsdk", "wasm", "prune"]
        kept = subprocess.run([*cmd, "--days", "30"], capture_output=True, text=True, env=env, check=True)
        assert "0 cache entries removed" == kept.stdout.strip()
        gone = subprocess.run([*cmd, "--days", "7"], capture_output=True, text=True, env=env, check=True)
        assert [f"removed {p}" for p in sorted(old)] + ["4 cache entries removed"] == gone.stdout.splitlines()
        bad = subprocess.run([*cmd, "--days", "-1"], capture_output=True, text=True, env=env, check=False)
        assert (2, "pluginsdk: --days must not be negative") == (bad.returncode, bad.stderr.strip())


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_no_leak_over_repeated_start_close(site: Path) -> None:
    """RSS stays flat over 100 start/call/close cycles (~0.25 s each: an interpreter start).

    Measured: RSS settles after the first few cycles and then does not move
    (52 MiB at cycle 20 and at cycle 120); the bound leaves room for noise.
    """
    target = make_target(site, "leak")

    def cycle() -> None:
        b = WasmBackend(target, log=logging.getLogger("test"))
        assert b.call("transform", ("a",)) == "A!"
        b.close()

    for _ in range(5):
        cycle()
    gc.collect()
    base = _rss_kb()
    for _ in range(100):
        cycle()
    gc.collect()
    grown_mb = (_rss_kb() - base) / 1024
    assert grown_mb < 25, f"RSS grew {grown_mb:.1f} MiB over 100 cycles"


def test_nothing_printed_at_interpreter_exit(site: Path) -> None:
    """A host that exits with instances busy (in a loop, in a long sleep) exits at once, silently."""
    make_target(site, "exit")
    script = textwrap.dedent(
        f"""
        import logging, sys, threading
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from tests.test_wasm import make_target
        from pluginsdk.backends.base import Limits
        from pluginsdk.backends.wasm import WasmBackend
        from pathlib import Path
        t = make_target(Path({str(site)!r}), "exit", Limits(timeout=60, workers=3))
        b = WasmBackend(t, log=logging.getLogger("x"))
        assert b.call("transform", ("a",)) == "A!"
        def stuck(action, extra):
            try:
                b.call("probe", (action, extra))
            except Exception:
                pass  # interrupted at exit: what the host does with that is its own business
        threading.Thread(target=stuck, args=("loop", None), daemon=True).start()
        threading.Thread(target=stuck, args=("sleep", 60), daemon=True).start()
        import time; time.sleep(0.5)
        print("done")
        """
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, "done", "")
    assert time.monotonic() - started < 45  # the sleeping guest (60 s) did not hold the exit


PACK_CASES: list[Any] = [
    None,
    True,
    False,
    0,
    127,
    128,
    255,
    256,
    65535,
    65536,
    2**32 - 1,
    2**32,
    2**64 - 1,
    -1,
    -32,
    -33,
    -128,
    -129,
    -32768,
    -32769,
    -(2**31),
    -(2**31) - 1,
    -(2**63),
    1.5,
    -0.0,
    "",
    "a" * 31,
    "a" * 32,
    "é" * 20,
    "x" * 255,
    "x" * 256,
    "x" * 70000,
    b"",
    b"\x00" * 300,
    b"y" * 70000,
    [],
    list(range(15)),
    list(range(16)),
    list(range(70000)),
    (1, "a"),
    {},
    {i: str(i) for i in range(15)},
    {str(i): i for i in range(16)},
    [{"k": [1, {"n": None}]}, ("t",)],
    [11, [f"ITEM{i}" for i in range(1000)]],
]


@pytest.mark.parametrize("value", PACK_CASES)
def test_guest_fast_packer_matches_msgpack(value: Any) -> None:
    """The guest's specialised encoder produces msgpack's exact bytes."""
    packer = msgpack.Packer(use_bin_type=True, datetime=False, autoreset=True)
    assert make_fast_pack(packer.pack)(value) == packer.pack(value)


@pytest.mark.parametrize("value", PACK_CASES)
def test_guest_fast_unpacker_matches_the_codec(value: Any) -> None:
    """The guest's specialised decoder gives what ``codec.decode`` gives, for every msgpack type."""
    data = msgpack.packb(value, use_bin_type=True)
    assert make_fast_unpack(codec.decode)(data) == codec.decode(data)
    single = msgpack.packb(value, use_bin_type=True, use_single_float=True)
    assert make_fast_unpack(codec.decode)(single) == codec.decode(single)


def test_guest_fast_unpacker_reads_the_hosts_marshal_frames() -> None:
    """Large host frames come as marshal behind a byte msgpack never uses (see Instance.send)."""
    import marshal

    from pluginsdk.guest.fastcodec import MARSHAL_MARK

    batch = [2, "transform", [[f"item {i}"] for i in range(100)]]
    assert make_fast_unpack(codec.decode)(MARSHAL_MARK + marshal.dumps(batch)) == batch


@pytest.mark.parametrize(
    "data",
    [b"\xd4\x01\x00", b"\x92\x01", b"\x91\x01\x02", b"\xa2\xff\xfe", b"\x81\x91\x01\x02", b"\xc1", b""],
)
def test_guest_fast_unpacker_leaves_the_unusual_to_the_codec(data: bytes) -> None:
    """Ext types, truncated or trailing bytes, bad UTF-8, unhashable keys: the codec's own answer."""

    def outcome(decode: Any) -> Any:
        try:
            return decode(data)
        except Exception as exc:
            return type(exc)

    assert outcome(make_fast_unpack(codec.decode)) == outcome(codec.decode)


def test_guest_fast_packer_hands_unusual_values_to_msgpack() -> None:
    import enum

    class Color(enum.IntEnum):
        RED = 1

    packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    for value in (Color.RED, 2**70 if False else 2**63, "\ud800x"):
        try:
            expected: Any = packer.pack(value)
        except Exception as exc:
            expected = type(exc)
        try:
            got: Any = make_fast_pack(packer.pack)(value)
        except Exception as exc:
            got = type(exc)
        assert got == expected


class TestHost:
    """Through :class:`pluginsdk.Host`: discovery, manifest and policy pick the wasm backend."""

    UPPER = """
    from pluginsdk import hookimpl

    @hookimpl
    def transform(text):
        return text.upper()
    """

    def test_same_plugin_code_at_every_level(self, site: Path) -> None:
        from pluginsdk import Host

        from .textkit import SPEC as TEXTKIT

        for level in ("inprocess", "process", "wasm"):
            install_plugin(site, f"up-{level}", self.UPPER, isolation=level)
        with Host(TEXTKIT, path=[str(site)]) as host:
            assert ["HI", "HI", "HI"] == host.hook.transform(text="hi")
            runtime = host.plugin("up-wasm").runtime
            assert runtime.startswith("wasm (python-3.12.0.wasm, wasmtime 50."), runtime

    def test_declared_packages_are_mounted_and_nothing_else(self, site: Path) -> None:
        """``[wasm] packages`` makes a pure-Python dependency importable; undeclared ones stay invisible."""
        from pluginsdk import Host, PluginHookError

        from .plugin_factory import add_requires, install_library
        from .textkit import SPEC as TEXTKIT

        install_library(site, "wasmdep-helper", "wasmdep_helper", "def shout(s):\n    return s.upper() + '!!'\n")
        install_library(site, "wasmdep-hidden", "wasmdep_hidden", "")
        manifest = """
        [plugin]
        requires = "textkit>=1.0,<2"
        isolation = "wasm"
        hooks = ["transform"]

        [wasm]
        packages = ["wasmdep_helper"]
        """
        source = """
        from pluginsdk import hookimpl

        @hookimpl
        def transform(text):
            if text == "hidden":
                import wasmdep_hidden
            import wasmdep_helper
            return wasmdep_helper.shout(text)
        """
        install_plugin(site, "dep", source, manifest=manifest)
        add_requires(site, "textkit-dep", "1.0", ["wasmdep-helper"])  # wasmdep-hidden: installed, not required
        with Host(TEXTKIT, path=[str(site)]) as host:
            assert ["HEY!!"] == host.hook.transform(text="hey")
            with pytest.raises(PluginHookError, match="ModuleNotFoundError"):
                host.hook.transform(text="hidden")
