"""Fault injection: hostile plugins, really installed, driven through a real Host at every isolation level.

Every case installs a hostile plugin and a well-behaved one side by side at
the same level, provokes the fault through ``host.hook``, and then checks
the same four things: the caller got the documented exception type, the
good plugin (and the hostile one, where it can recover) still answers, the
hostile plugin's status says what happened, and after ``host.close()`` no
child process, file descriptor or SDK thread is left behind.
"""

from __future__ import annotations

import builtins
import contextlib
import gc
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pluginsdk
from pluginsdk import Host, Policy
from pluginsdk._errors import (
    CodecError,
    PluginCrashed,
    PluginError,
    PluginHookError,
    PluginLoadError,
    PluginResourceError,
    PluginTimeout,
)
from pluginsdk._wasm.gate import BUDGET_FLOOR
from pluginsdk.backends.base import Limits
from pluginsdk.backends.wasm import WasmBackend

from .plugin_factory import install_plugin
from .procs import alive, children, wait_until
from .textkit import SPEC

pytestmark = pytest.mark.faults

_WASM_REASON = WasmBackend.unavailable_reason()
WASM = pytest.param(
    "wasm",
    marks=pytest.mark.skipif(_WASM_REASON is not None, reason=f"wasm backend unavailable: {_WASM_REASON}"),
)
ISOLATED = ["process", WASM]
NEEDS_TESTCAPI = pytest.mark.skipif(
    importlib.util.find_spec("_testcapi") is None, reason="this Python has no _testcapi to abort with"
)
EVERY_LEVEL = ["inprocess", "process", WASM]

TIMEOUT = 1.5
MEMORY_MB = 256
#: Small limits keep every fault quick: hangs end after TIMEOUT, big replies past 1 MiB are refused.
LIMITS = Limits(timeout=TIMEOUT, memory_mb=MEMORY_MB, max_message_mb=1.0)

GOOD = """
from pluginsdk import hookimpl


@hookimpl
def transform(text):
    return "good:" + text


@hookimpl
def detect_language(text):
    return "en"
"""

# ``transform(text)`` does what ``text`` says: "COMMAND" or "COMMAND:ARGUMENT".
# PRELUDE is replaced by module-level code for the import-time faults.
HOSTILE = r"""
import os
import sys
import time

from pluginsdk import hookimpl

HERE = os.path.dirname(os.path.abspath(__file__))
KEPT = []

PRELUDE


def _spawn(pidfile, then):
    import subprocess

    children = [subprocess.Popen(["sleep", "600"]) for _ in range(2)]
    with open(pidfile, "w") as f:
        f.write(" ".join(str(c.pid) for c in children))
    if then == "exit":
        os._exit(0)
    return "spawned"


def _fork(pidfile, then):
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        pids.append(pid)
    with open(pidfile, "w") as f:
        f.write(" ".join(map(str, pids)))
    if then == "exit":
        os._exit(0)
    return "forked"


def _leak(count):
    for _ in range(count):
        KEPT.append(open(__file__, "rb"))
    try:
        return str(len(os.listdir("/proc/self/fd")))
    except OSError:
        return str(len(KEPT))


def _leak_all():
    try:
        while True:
            KEPT.append(open(__file__, "rb"))
    except OSError as exc:
        return "%d %s" % (len(KEPT), type(exc).__name__)


def _print(megabytes):
    line = "o" * 1023 + "\n"
    for _ in range(megabytes):
        sys.stdout.write(line * 1024)
        sys.stderr.write(line.replace("o", "e") * 1024)
    print("END-OF-STDOUT")
    print("END-OF-STDERR", file=sys.stderr)
    return "printed"


def _act(command, arg):
    if command == "ok":
        return (arg or command).upper()
    if command == "raise":
        raise ValueError("hostile " + arg)
    if command == "unencodable":
        return object()
    if command == "huge":
        return "x" * (int(arg) << 20)
    if command == "print":
        return _print(int(arg))
    if command == "exit":
        os._exit(7)
    if command == "sigkill":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    if command == "segv":
        import ctypes

        ctypes.string_at(0)
    if command == "abort":
        import _testcapi

        _testcapi.fatal_error(b"deliberate abort")
    if command == "spin":
        while True:
            pass
    if command == "sleep":
        time.sleep(float(arg))
    if command == "bomb":
        hog = []
        while True:
            hog.append(bytearray(16 << 20))
    if command == "spawn":
        return _spawn(*arg.split(",", 1))
    if command == "fork":
        return _fork(*arg.split(",", 1))
    if command == "leak":
        return _leak(int(arg))
    if command == "leak-all":
        return _leak_all()
    if command == "read":
        with open(arg, "rb") as f:
            return repr(f.read(40))
    if command == "write":
        with open(arg, "a") as f:
            f.write("# written by a sandboxed plugin\n")
        return "written"
    if command == "listdir":
        return repr(os.listdir(arg))
    if command == "env":
        return " ".join(sorted(os.environ))
    if command == "socket":
        import socket

        socket.create_connection(("127.0.0.1", int(arg)), timeout=1).close()
        return "connected"
    if command == "subprocess":
        import subprocess

        return subprocess.run(["/bin/echo", "escaped"], capture_output=True, check=False).stdout.decode()
    if command == "import":
        __import__(arg)
        return "imported " + arg
    raise LookupError("unknown command " + command)


@hookimpl
def transform(text):
    command, _, arg = text.partition(":")
    return _act(command, arg)
"""


def hostile_source(prelude: str = "") -> str:
    return HOSTILE.replace("PRELUDE", prelude)


# -- what the host process holds ---------------------------------------------


def fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def sdk_threads() -> set[str]:
    return {f"{t.name}#{t.ident}" for t in threading.enumerate() if t.name.startswith("pluginsdk")}


Snapshot = tuple[set[int], set[str], set[str]]


def snapshot() -> Snapshot:
    gc.collect()  # sandbox stores release their file handles when collected
    return children(), fds(), sdk_threads()


def new_since(before: Snapshot) -> Snapshot:
    """Child processes, descriptors and SDK threads that exist now but did not before."""
    now = snapshot()
    return now[0] - before[0], now[1] - before[1], now[2] - before[2]


def read_pids(path: Path) -> list[int]:
    assert wait_until(path.exists)
    return [int(p) for p in path.read_text().split()]


def kill_quietly(pids: list[int]) -> None:
    """Test cleanup: never leave a stray process on the machine, whatever the SDK did."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


_wasm_warmed = False


def warm_wasm(site: Path) -> None:
    """Run one sandbox once: the runtime's first use opens a few descriptors that stay for good."""
    global _wasm_warmed
    if _wasm_warmed:
        return
    warm, threads = site.parent / "warm", sdk_threads()
    install_plugin(warm, "warm", GOOD, isolation="wasm", hooks=("transform", "detect_language"))
    with Host(SPEC, path=[str(warm)]) as host:
        assert ["good:x"] == host.hook.transform(text="x")
    wait_until(lambda: sdk_threads() <= threads)  # its watchdog ends within a tick
    _wasm_warmed = True


@pytest.fixture
def hosting(site: Path) -> Callable[..., contextlib.AbstractContextManager[Host]]:
    """Install ``hostile`` and ``good`` at ``level``; yield a Host; after close, check nothing is left."""

    @contextlib.contextmanager
    def make(
        level: str,
        source: str = HOSTILE,
        *,
        limits: Limits = LIMITS,
        hostile_limits: Limits | None = None,
        strict: bool = False,
        files: dict[str, str] | None = None,
        check: bool = True,
        settle: float = 10.0,
    ) -> Iterator[Host]:
        if level == "wasm":
            warm_wasm(site)
        before = snapshot()
        install_plugin(site, "hostile", source.replace("PRELUDE", ""), isolation=level, files=files)
        install_plugin(site, "good", GOOD, isolation=level, hooks=("transform", "detect_language"))
        policy = Policy(limits=limits, plugin_limits={"hostile": hostile_limits} if hostile_limits else None)
        host = Host(SPEC, policy=policy, path=[str(site)], strict=strict)
        try:
            yield host
        except BaseException:
            host.close()
            raise
        host.close()
        if check:
            assert_nothing_left(before, settle)

    return make


def assert_nothing_left(before: Snapshot, settle: float = 10.0) -> None:
    """No child process, descriptor or SDK thread the host did not have before (given ``settle`` s to end)."""
    nothing: Snapshot = (set(), set(), set())
    wait_until(lambda: new_since(before) == nothing, settle)
    assert nothing == new_since(before)


def others_answer(host: Host, *, hostile: bool = True) -> None:
    """The good plugin answers both hooks; the hostile one too, unless it is out of the game."""
    expected = ["OK", "good:ok"] if hostile else ["good:ok"]
    assert expected == sorted(host.hook.transform(text="ok"))
    assert "en" == host.hook.detect_language(text="ok")


def status(host: Host) -> tuple[str, str]:
    info = host.plugin("hostile")
    return info.status, info.reason


def assert_incident(host: Host, kind: str, error: PluginError, says: str) -> None:
    """The hostile plugin is still loaded, with one incident: ``kind`` in ``transform``, detail ``error``'s message."""
    info = host.plugin("hostile")
    assert ("loaded", "", 1) == (info.status, info.reason, info.incident_count)
    (incident,) = info.incidents
    assert (kind, "transform", error.message) == (incident.kind, incident.hook, incident.detail)
    assert says in incident.detail


def assert_no_incident(host: Host) -> None:
    """The hostile plugin is still loaded and nothing was recovered from: its worker was never at fault."""
    info = host.plugin("hostile")
    assert ("loaded", "", 0, ()) == (info.status, info.reason, info.incident_count, info.incidents)


# -- the cases -----------------------------------------------------------------


class TestHookFaults:
    @pytest.mark.parametrize("level", EVERY_LEVEL)
    def test_raise_is_a_hook_error(self, hosting: Any, level: str) -> None:
        """An exception in the hook reaches the caller as PluginHookError naming plugin, hook and type."""
        with hosting(level) as host:
            with pytest.raises(PluginHookError) as info:
                host.hook.transform(text="raise:on purpose")
            error = info.value
            assert ("hostile", "transform", "ValueError") == (error.plugin, error.hook, error.exc_type)
            assert "hostile on purpose" == error.exc_message
            others_answer(host)
            assert_no_incident(host)

    @pytest.mark.parametrize("level", ISOLATED)
    def test_unencodable_result_is_a_codec_error(self, hosting: Any, level: str) -> None:
        """A result that cannot cross the boundary is a CodecError about the return value, and no incident."""
        with hosting(level) as host:
            with pytest.raises(CodecError) as info:
                host.hook.transform(text="unencodable")
            assert ("hostile", "transform") == (info.value.plugin, info.value.hook)
            assert "return value" in (info.value.argument or "")
            others_answer(host)
            assert_no_incident(host)

    @pytest.mark.parametrize("level", ISOLATED)
    def test_huge_result_is_a_resource_error(self, hosting: Any, level: str) -> None:
        """A reply past the message limit is refused as PluginResourceError, and the plugin recovers."""
        with hosting(level) as host:
            with pytest.raises(PluginResourceError) as info:
                host.hook.transform(text="huge:4")
            assert "hostile" == info.value.plugin
            others_answer(host)
            assert_incident(host, "resource", info.value, "exceeds")

    @pytest.mark.parametrize("level", ISOLATED)
    def test_megabytes_of_output_go_to_the_log(
        self, hosting: Any, level: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Megabytes printed to stdout and stderr are logged line by line and never corrupt the channel."""
        caplog.set_level("INFO", logger="pluginsdk.plugin.hostile")
        with hosting(level, hostile_limits=Limits(timeout=60.0)) as host:
            assert ["good:print:2", "printed"] == sorted(host.hook.transform(text="print:2"))

            def logged() -> bool:
                expected = {"[hostile] END-OF-STDOUT", "[hostile] END-OF-STDERR"}
                return {r.getMessage() for r in caplog.records} >= expected

            assert wait_until(logged)
            others_answer(host)
            assert_no_incident(host)


class TestCrashes:
    @pytest.mark.parametrize(
        ("level", "how", "detail"),
        [
            ("process", "exit", "exit code 7"),
            ("process", "sigkill", "SIGKILL"),
            ("process", "segv", "SIGSEGV"),
            pytest.param("process", "abort", "SIGABRT", marks=NEEDS_TESTCAPI),
            pytest.param("wasm", "exit", "exit code 7", marks=WASM.marks),
            pytest.param("wasm", "abort", "trap", marks=WASM.marks),
        ],
    )
    def test_crash_mid_call_is_reported_and_the_worker_replaced(
        self, hosting: Any, level: str, how: str, detail: str
    ) -> None:
        """A worker dying mid-call raises PluginCrashed saying how; a fresh worker serves the next call."""
        with hosting(level) as host:
            with pytest.raises(PluginCrashed) as info:
                host.hook.transform(text=how)
            assert "hostile" == info.value.plugin
            assert detail in info.value.detail
            others_answer(host)
            assert_incident(host, "crashed", info.value, detail)

    @pytest.mark.parametrize("level", ISOLATED)
    def test_crash_in_a_batch(self, hosting: Any, level: str) -> None:
        """A crash during ``map`` is PluginCrashed as well, and the next batch is answered."""
        with hosting(level) as host:
            with pytest.raises(PluginCrashed) as info:
                host.hook.transform.map([{"text": "ok:a"}, {"text": "exit"}])
            assert [["A", "good:ok:a"], ["B", "good:ok:b"]] == [
                sorted(r) for r in host.hook.transform.map([{"text": "ok:a"}, {"text": "ok:b"}])
            ]
            assert_incident(host, "crashed", info.value, "exit code 7")

    @pytest.mark.parametrize("level", EVERY_LEVEL)
    def test_exception_at_import_fails_the_plugin(self, hosting: Any, level: str) -> None:
        """A module body that raises marks the plugin failed with the error; the others never notice."""
        with hosting(level, hostile_source('raise RuntimeError("broken at import")')) as host:
            others_answer(host, hostile=False)
            state, reason = status(host)
            assert "failed" == state
            assert "RuntimeError" in reason and "broken at import" in reason

    @pytest.mark.parametrize("level", ISOLATED)
    def test_exception_at_import_raises_in_strict_mode(self, hosting: Any, level: str) -> None:
        """A strict host raises PluginLoadError, and once closed runs nothing, though the caller keeps the error."""
        source = hostile_source('raise RuntimeError("broken at import")')
        with hosting(level, source, strict=True, settle=5.0) as host:
            with pytest.raises(PluginLoadError) as info:
                host.hook.transform(text="ok")
            assert "hostile" == info.value.plugin
            assert "failed" == status(host)[0]
            assert "en" == host.hook.detect_language(text="ok")
            # Leaving the block closes the host and checks nothing runs, while ``info`` is still held.

    @pytest.mark.parametrize(
        ("level", "detail"), [("process", "exit code 3"), pytest.param("wasm", "exit code 3", marks=WASM.marks)]
    )
    def test_crash_on_every_start_gives_up(self, hosting: Any, level: str, detail: str) -> None:
        """A worker that dies while importing, every time, is given up on: failed, saying how it died."""
        with hosting(level, hostile_source("os._exit(3)")) as host:
            others_answer(host, hostile=False)
            state, reason = status(host)
            assert "failed" == state
            assert "times in a row" in reason and detail in reason
            others_answer(host, hostile=False)

    def test_crash_on_first_starts_only_recovers(self, hosting: Any) -> None:
        """A worker that dies on its first two starts, then loads, is retried, ends up loaded, and says so."""
        prelude = textwrap.dedent("""
            _tries = len([n for n in os.listdir(HERE) if n.startswith("try-")])
            if _tries < 2:
                open(os.path.join(HERE, "try-%d" % _tries), "w").close()
                os._exit(4)
        """)
        with hosting("process", hostile_source(prelude)) as host:
            others_answer(host)
            info = host.plugin("hostile")
            assert ("loaded", "", 2) == (info.status, info.reason, info.incident_count)
            assert [("crashed", None, "worker failed to start: exit code 4")] * 2 == [
                (i.kind, i.hook, i.detail) for i in info.incidents
            ]


class TestRunaways:
    @pytest.mark.parametrize("level", ISOLATED)
    @pytest.mark.parametrize("command", ["spin", "sleep:4"])
    def test_hang_times_out_and_the_worker_is_replaced(self, hosting: Any, level: str, command: str) -> None:
        """A busy loop or a blocking sleep is cut off at the deadline with PluginTimeout."""
        with hosting(level) as host:
            with pytest.raises(PluginTimeout) as info:
                host.hook.transform(text=command)
            assert ("hostile", TIMEOUT) == (info.value.plugin, info.value.timeout)
            others_answer(host)
            assert_incident(host, "timeout", info.value, f"timed out after {TIMEOUT:g}s")

    @pytest.mark.parametrize("level", ISOLATED)
    def test_allocating_until_it_dies_is_a_resource_error(self, hosting: Any, level: str) -> None:
        """A plugin allocating without end hits its memory cap: PluginResourceError, then a fresh worker."""
        with hosting(level, hostile_limits=Limits(timeout=60.0)) as host:  # paging 256 MiB in may be slow here
            with pytest.raises(PluginResourceError) as info:
                host.hook.transform(text="bomb")
            assert "hostile" == info.value.plugin
            assert "MemoryError" in info.value.message
            others_answer(host)
            assert_incident(host, "resource", info.value, "MemoryError")


class TestChildren:
    # Forked (not exec'd) children hold the channel open, so no EOF comes: the watchdog sees the worker gone.
    @pytest.mark.parametrize("how", ["spawn", "fork"])
    def test_children_of_a_crashed_worker_are_killed(self, hosting: Any, tmp_path: Path, how: str) -> None:
        """A worker that starts children and exits mid-call is a crash, and takes its children with it."""
        pidfile, pids, before = tmp_path / "pids", [], snapshot()
        try:
            with hosting("process", check=False) as host:
                with pytest.raises(PluginCrashed) as info:
                    host.hook.transform(text=f"{how}:{pidfile},exit")
                assert "exit code 0" in info.value.detail
                pids = read_pids(pidfile)
                others_answer(host)
                assert_incident(host, "crashed", info.value, "exit code 0")
                wait_until(lambda: not any(map(alive, pids)), timeout=5)
                assert [] == [p for p in pids if alive(p)]
            assert_nothing_left(before)
        finally:
            kill_quietly(pids)

    @pytest.mark.parametrize("how", ["spawn", "fork"])
    def test_children_of_a_closed_worker_are_killed(self, hosting: Any, tmp_path: Path, how: str) -> None:
        """Children a worker started and left running are gone once the host closes."""
        pidfile, pids, before = tmp_path / "pids", [], snapshot()
        try:
            with hosting("process", check=False) as host:
                assert {f"good:{how}:{pidfile},stay", f"{how}ed"} == set(
                    host.hook.transform(text=f"{how}:{pidfile},stay")
                )
                pids = read_pids(pidfile)
                assert [True, True] == [alive(p) for p in pids]
                others_answer(host)
            wait_until(lambda: not any(map(alive, pids)), timeout=5)
            assert [] == [p for p in pids if alive(p)]
            assert_nothing_left(before)
        finally:
            kill_quietly(pids)


class TestDescriptors:
    def test_leaked_descriptors_stay_in_the_worker(self, hosting: Any) -> None:
        """A process plugin that opens 100 files per call and never closes them leaves the host's descriptors alone."""
        with hosting("process", hostile_limits=Limits(open_files=1000)) as host:
            host.load("hostile")
            host.hook.transform(text="ok")
            before = fds()
            for _ in range(3):
                host.hook.transform(text="leak:100")
            assert before == fds()
            others_answer(host)
            assert_no_incident(host)

    @pytest.mark.parametrize("level", ISOLATED)
    def test_open_past_the_cap_fails_in_the_plugin(self, hosting: Any, level: str) -> None:
        """Past ``open_files`` the plugin's open() fails (EMFILE), which reaches the caller as PluginHookError."""
        with hosting(level, hostile_limits=Limits(open_files=150)) as host:
            host.hook.transform(text="leak:100")
            with pytest.raises(PluginHookError) as info:
                host.hook.transform(text="leak:100")
            assert ("hostile", "transform", "OSError") == (info.value.plugin, info.value.hook, info.value.exc_type)
            assert {"Too many open files", "No file descriptors available"} & {
                part.strip() for part in info.value.exc_message.replace("]", ":").split(":")
            }
            others_answer(host)

    def test_worker_cap_does_not_grow_with_the_hosts_descriptors(self, hosting: Any) -> None:
        """A worker's ``open_files`` counts from its own descriptors, however many the host holds."""
        extra = [os.open(os.devnull, os.O_RDONLY) for _ in range(600)]
        try:
            with hosting("process", hostile_limits=Limits(open_files=10)) as host:
                held, error = host.hook.transform.by_plugin(text="leak-all")["hostile"].split()
        finally:
            for fd in extra:
                os.close(fd)
        assert ("OSError", 10) == (error, int(held))

    @pytest.mark.skipif(_WASM_REASON is not None, reason=f"wasm backend unavailable: {_WASM_REASON}")
    def test_sandbox_holds_no_more_than_its_cap_and_hands_it_back(self, hosting: Any) -> None:
        """A sandboxed plugin holds at most ``open_files`` host descriptors; refused one, it is replaced."""
        with hosting("wasm", hostile_limits=Limits(open_files=150)) as host:
            host.hook.transform(text="ok")
            before = len(fds())
            host.hook.transform(text="leak:100")
            assert before + 100 == len(fds())  # the guest's files are host descriptors
            with pytest.raises(PluginHookError):
                host.hook.transform(text="leak:100")
            assert before + 150 >= max(len(fds()), before)
            # The replaced instance's descriptors are back (its compiled code's once it is collected).
            assert wait_until(lambda: before == len(snapshot()[1]))
            info = host.plugin("hostile")
            assert ("loaded", 1) == (info.status, info.incident_count)
            (incident,) = info.incidents
            assert ("resource", "transform") == (incident.kind, incident.hook)
            assert "its cap of 150" in incident.detail and "replaced" in incident.detail
            others_answer(host)

    @pytest.mark.parametrize("level", ISOLATED)
    def test_recycled_worker_releases_leaked_descriptors(self, hosting: Any, level: str) -> None:
        """Recycling a worker releases what its plugin leaked: the fourth call starts from scratch."""
        with hosting(level, hostile_limits=Limits(recycle_after=3, open_files=1000)) as host:
            counts = [int(host.hook.transform.by_plugin(text="leak:100")["hostile"]) for _ in range(4)]
            if level == "process":  # the worker counts its descriptors; the guest counts what it keeps
                assert [100, 100] == [counts[1] - counts[0], counts[2] - counts[1]]
                assert counts[0] == counts[3]
            else:
                assert [100, 200, 300, 100] == counts
            others_answer(host)
            assert_no_incident(host)  # recycling is routine

    @pytest.mark.skipif(_WASM_REASON is not None, reason=f"wasm backend unavailable: {_WASM_REASON}")
    def test_sandbox_cannot_exhaust_the_hosts_descriptors(self, site: Path) -> None:
        """A sandboxed plugin opening files until refused leaves the host half its descriptor table."""
        # In a child interpreter with a small descriptor table: this test process must never run out.
        install_plugin(site, "hostile", hostile_source(), isolation="wasm")
        script = textwrap.dedent(f"""
            import os, resource, sys
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            sys.path[:0] = [{str(site)!r}, {str(Path(__file__).parent.parent)!r}]
            from pluginsdk import Host, Limits, Policy
            from tests.textkit import SPEC
            policy = Policy(plugin_limits={{"hostile": Limits(open_files=10**6)}})
            with Host(SPEC, policy=policy, path=[{str(site)!r}]) as host:
                print(host.hook.transform(text="leak-all")[0])
                print("host holds", len(os.listdir("/proc/self/fd")))
                try:
                    open(sys.executable, "rb").close()
                    print("host can open files")
                except OSError as exc:
                    print("host cannot open files:", exc)
        """)
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
        )
        lines = result.stdout.splitlines()
        assert "host can open files" in lines, result.stdout + result.stderr
        held, error = lines[0].split()
        assert "OSError" == error
        assert 0 < int(held) <= 128 + BUDGET_FLOOR  # half of the 256 the host has, and the free floor


@pytest.mark.skipif(_WASM_REASON is not None, reason=f"wasm backend unavailable: {_WASM_REASON}")
class TestSandbox:
    @pytest.mark.parametrize(
        ("command", "target"),
        [
            ("read", "/etc/passwd"),
            ("read", str(Path.home() / ".bashrc")),
            ("read", pluginsdk.__file__),
            ("write", "/etc/passwd"),
            ("write", pluginsdk.__file__),
            ("write", "/lib/pluginsdk/__init__.py"),  # the SDK's copy inside the sandbox
        ],
        ids=["read-passwd", "read-home", "read-sdk", "write-passwd", "write-sdk", "write-sdk-in-sandbox"],
    )
    def test_host_files_are_out_of_reach(self, hosting: Any, command: str, target: str) -> None:
        """Reading host files, or writing the SDK's own, fails inside the plugin: a PluginHookError (OSError)."""
        sdk = Path(pluginsdk.__file__).read_bytes()
        with hosting("wasm") as host:
            with pytest.raises(PluginHookError) as info:
                host.hook.transform(text=f"{command}:{target}")
            assert issubclass(getattr(builtins, info.value.exc_type, type), OSError), info.value.exc_type
            others_answer(host)
            assert_no_incident(host)
        assert sdk == Path(pluginsdk.__file__).read_bytes()

    @pytest.mark.parametrize("target", ["/", "/etc", str(Path.home()), "../../.."])
    def test_directories_outside_its_mounts_cannot_be_listed(self, hosting: Any, target: str) -> None:
        """Listing a directory outside the plugin's mounts fails with an OSError."""
        with hosting("wasm") as host:
            with pytest.raises(PluginHookError) as info:
                host.hook.transform(text=f"listdir:{target}")
            assert issubclass(getattr(builtins, info.value.exc_type, type), OSError), info.value.exc_type
            others_answer(host)

    def test_host_environment_is_invisible(self, hosting: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """None of the host's environment variables reach the sandbox."""
        monkeypatch.setenv("PLUGINSDK_FAULTS_SECRET", "hunter2")
        with hosting("wasm") as host:
            seen = set(host.hook.transform.by_plugin(text="env")["hostile"].split())
            assert set() == seen & (set(os.environ) - {"MSGPACK_PUREPYTHON"})
            others_answer(host)

    @pytest.mark.parametrize(
        ("command", "arg"),
        [
            ("socket", "9"),
            ("subprocess", ""),
            ("fork", "/nowhere,stay"),
            ("sigkill", ""),
            ("import", "ctypes"),
            ("import", "_ssl"),
        ],
    )
    def test_capabilities_it_lacks_are_hook_errors(self, hosting: Any, command: str, arg: str) -> None:
        """Sockets, processes, signals and C extensions do not exist inside: the attempt is a PluginHookError."""
        with hosting("wasm") as host:
            with pytest.raises(PluginHookError) as info:
                host.hook.transform(text=f"{command}:{arg}")
            assert "hostile" == info.value.plugin
            others_answer(host)
            assert_no_incident(host)

    def test_shipped_c_extension_fails_the_plugin(self, hosting: Any) -> None:
        """A plugin shipping a C extension is refused at load, with the file named; the others keep working."""
        with hosting("wasm", files={"_speedups.cpython-311-x86_64-linux-gnu.so": "\x7fELF"}) as host:
            others_answer(host, hostile=False)
            state, reason = status(host)
            assert "failed" == state
            assert "C extensions" in reason and "_speedups" in reason
