"""Hardening, round 2: what a hostile or buggy plugin must not get away with at the isolated levels.

Each case installs a rogue plugin beside a good one (``test_faults.hosting``:
real installed distributions, a real Host), provokes the fault, then checks
that the caller got a typed error naming the plugin and hook within the
timeout plus a small grace, that the next call works, that the good plugin
is untouched, that an incident was recorded where one applies, and (after
``close()``) that no process, descriptor or thread is left behind.

The rogue plugin writes to its reply channel itself: in the sandbox that is
its standard output, in a worker process the descriptor in ``sys.argv[2]``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pluginsdk import Host, Policy
from pluginsdk._errors import (
    CodecError,
    PluginCrashed,
    PluginError,
    PluginHookError,
    PluginProtocolError,
    PluginResourceError,
    PluginTimeout,
)
from pluginsdk.backends.base import Limits

from .plugin_factory import install_plugin
from .procs import alive, wait_until
from .test_faults import ISOLATED, TIMEOUT, hosting, kill_quietly, read_pids, snapshot, warm_wasm
from .textkit import SPEC

__all__ = ["hosting"]  # the fixture, shared with test_faults

pytestmark = pytest.mark.faults

#: What "within the timeout" allows on top: the watchdog's tick, a replacement's start, a busy machine.
GRACE = 3.0

ROGUE = r'''
import os
import sys
import threading
import time

from pluginsdk import codec, hookimpl


def _channel():
    return 1 if sys.platform == "wasi" else int(sys.argv[2])


def _rid():
    """The id of the request being served: the guest loop's own local (a plugin can read its frames)."""
    frame = sys._getframe(1)
    while frame is not None:
        rid = frame.f_locals.get("rid")
        if type(rid) is int:
            return rid
        frame = frame.f_back
    return 0


def _write(msg):
    os.write(_channel(), codec.encode_frame(msg))


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")


def _daemon(pidfile):
    """A classic daemon: fork, setsid, fork again; it keeps every descriptor the worker had."""
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            with open(pidfile, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(600)
        os._exit(0)
    os.waitpid(pid, 0)


@hookimpl
def transform(text):
    command, _, arg = text.partition(":")
    if command == "ok":
        return (arg or command).upper()
    if command == "notalist":
        _write(5)
        return "x"
    if command == "twice":
        _write([11, _rid(), "for " + arg])
        return "for " + arg
    if command == "late":
        rid = _rid()
        threading.Thread(target=lambda: (time.sleep(0.3), _write([11, rid, "for " + arg]))).start()
        return "for " + arg
    if command == "badmessage":
        _write([12, _rid(), "hook", "ValueError", 42, "", None, None])
        return "x"
    if command == "badindex":
        _write([12, _rid(), "hook", "ValueError", "m", "", "1", None])
        return "x"
    if command == "badkind":
        _write([12, _rid(), "sneaky", "ValueError", "m", "", None, None])
        return "x"
    if command == "text":
        line = b"the plugin says hello on its standard output\n"
        os.write(_channel(), line * (100_000 // len(line)))
        return "x"
    if command == "raw":
        os.write(_channel(), bytes.fromhex(arg))
        return "raw"
    if command == "unprintable":
        raise Unprintable()
    if command == "iter":
        return map(str.upper, arg)
    if command == "daemon":
        _daemon(arg)
        time.sleep(600)
    if command == "session":
        import subprocess

        child = subprocess.Popen(["sleep", "600"], start_new_session=True)
        with open(arg, "w") as f:
            f.write(str(child.pid))
        return "session"
    raise LookupError("unknown command " + command)
'''


def rogue_host(hosting: Callable[..., Any], level: str, **kwargs: Any) -> contextlib.AbstractContextManager[Host]:
    cm: contextlib.AbstractContextManager[Host] = hosting(level, ROGUE, **kwargs)
    return cm


def recovered(host: Host) -> None:
    """The rogue plugin answers again and the good one never stopped."""
    assert ["OK", "good:ok"] == sorted(host.hook.transform(text="ok"))


def incidents(host: Host, kind: str) -> list[str]:
    return [i.detail for i in host.plugin("hostile").incidents if i.kind == kind]


def timed(call: Callable[[], Any]) -> tuple[BaseException | None, float, Any]:
    start = time.monotonic()
    try:
        return None, time.monotonic() - start, call()
    except BaseException as exc:
        return exc, time.monotonic() - start, None


@pytest.mark.parametrize("level", ISOLATED)
class TestRepliesAreChecked:
    def test_a_reply_that_is_not_a_list_blocks_nothing(self, hosting: Callable[..., Any], level: str) -> None:
        """Case 2: one malformed frame is a protocol error for that call; the worker is replaced, nothing waits."""
        with rogue_host(hosting, level) as host:
            error, took, _ = timed(lambda: host.hook.transform(text="notalist"))
            assert isinstance(error, PluginProtocolError), error
            assert ("hostile", "transform") == (error.plugin, error.hook)
            assert "must be a non-empty list" in error.message and took < TIMEOUT + GRACE
            for _ in range(3):  # the pool has its worker back: no call waits
                error, took, _ = timed(lambda: recovered(host))
                assert error is None and took < TIMEOUT + GRACE
            assert 1 == len(incidents(host, "protocol"))

    def test_a_second_reply_never_reaches_the_next_caller(self, hosting: Callable[..., Any], level: str) -> None:
        """Case 5: a plugin that answers twice, at once or a moment later, hands nobody else its result."""
        commands = ("twice", "late") if level == "process" else ("twice",)  # the sandbox has no threads
        with rogue_host(hosting, level) as host:
            for command in commands:
                assert ["for alice-secret", "good:" + command + ":alice-secret"] == sorted(
                    host.hook.transform(text=f"{command}:alice-secret")
                )
                time.sleep(0.5)  # the late copy is in the channel by now
                try:
                    bob = host.hook.transform(text="ok:bob")
                except PluginProtocolError as exc:  # the stale reply was caught at bob's turn
                    assert ("hostile", "transform") == (exc.plugin, exc.hook)
                    assert "alice" not in exc.message
                else:  # or already when alice's call ended
                    assert ["BOB", "good:ok:bob"] == sorted(bob)
                recovered(host)
            assert len(commands) == len(incidents(host, "protocol"))

    @pytest.mark.parametrize("command", ["badmessage", "badkind"])
    def test_a_malformed_error_frame_is_a_protocol_error(
        self, hosting: Callable[..., Any], level: str, command: str
    ) -> None:
        """Case 6: an error frame with the wrong shape is not passed off as the plugin's own exception."""
        with rogue_host(hosting, level) as host:
            with pytest.raises(PluginProtocolError) as info:
                host.hook.transform(text=command)
            assert not isinstance(info.value, PluginHookError)
            recovered(host)
            assert 1 == len(incidents(host, "protocol"))

    def test_a_malformed_batch_index_is_a_protocol_error(self, hosting: Callable[..., Any], level: str) -> None:
        """Case 6: a string where a batch index belongs is a protocol error, not a bare TypeError from map()."""
        with rogue_host(hosting, level) as host:
            with pytest.raises(PluginProtocolError, match="batch item"):
                host.hook.transform.map([{"text": "ok"}, {"text": "badindex"}])
            assert [["A", "good:ok:a"], ["B", "good:ok:b"]] == [
                sorted(r) for r in host.hook.transform.map([{"text": "ok:a"}, {"text": "ok:b"}])
            ]

    def test_text_on_the_reply_channel_is_named_for_what_it_is(self, hosting: Callable[..., Any], level: str) -> None:
        """Case 12: 100 kB printed to the reply channel is reported as text written there, not a huge frame."""
        with rogue_host(hosting, level) as host:
            with pytest.raises(CodecError, match="wrote to the channel") as info:
                host.hook.transform(text="text")
            assert "the plugin says hello" in info.value.message
            assert "bytes exceeds" not in info.value.message
            recovered(host)

    def test_an_exception_whose_str_raises_is_the_plugins_error(self, hosting: Callable[..., Any], level: str) -> None:
        """Case 11 across a boundary: the worker reports it (no crash, no incident)."""
        with rogue_host(hosting, level) as host:
            with pytest.raises(PluginHookError) as info:
                host.hook.transform(text="unprintable")
            assert info.value.exc_type.endswith("Unprintable") and "str()" in info.value.exc_message
            recovered(host)
            assert () == host.plugin("hostile").incidents


@pytest.mark.parametrize("level", ISOLATED)
def test_an_iterator_from_a_plain_hook_comes_back_whole(hosting: Callable[..., Any], level: str) -> None:
    """Case 3: ``return map(...)`` from a hook whose spec names a plain type never holds the worker."""
    with rogue_host(hosting, level) as host:
        kept = host.hook.transform(text="iter:abc")  # the caller keeps the result
        # The items arrive whole (what a list becomes under a ``-> str`` spec is the value contract's business).
        assert "good:iter:abc" in kept and any(all(c in str(v) for c in "ABC") for v in kept if v != "good:iter:abc")
        error, took, _ = timed(lambda: [recovered(host) for _ in range(3)])
        assert error is None and took < TIMEOUT + GRACE


class TestEveryProcessEndsWithItsWorker:
    def test_a_daemon_holding_the_channel_does_not_defeat_the_timeout(
        self, hosting: Callable[..., Any], tmp_path: Path
    ) -> None:
        """Case 4: a setsid'd grandchild that holds the pipe is killed with its worker, on time."""
        pidfile = tmp_path / "daemon.pid"
        pids: list[int] = []
        try:
            with rogue_host(hosting, "process") as host:
                error, took, _ = timed(lambda: host.hook.transform(text=f"daemon:{pidfile}"))
                pids = read_pids(pidfile)
                assert isinstance(error, PluginTimeout) and took < TIMEOUT + GRACE, (error, took)
                assert wait_until(lambda: not alive(pids[0]), 5.0)
                recovered(host)
        finally:
            kill_quietly(pids)

    def test_a_new_session_does_not_outlive_close(self, hosting: Callable[..., Any], tmp_path: Path) -> None:
        """Case 4: a helper started with ``start_new_session=True`` ends when the host closes."""
        pidfile = tmp_path / "session.pid"
        pids: list[int] = []
        try:
            with rogue_host(hosting, "process") as host:
                assert ["good:session:" + str(pidfile), "session"] == sorted(
                    host.hook.transform(text=f"session:{pidfile}")
                )
                pids = read_pids(pidfile)
                assert alive(pids[0])
            assert wait_until(lambda: not alive(pids[0]), 5.0)
        finally:
            kill_quietly(pids)


class TestWaitsHaveDeadlines:
    def test_waiting_for_a_worker_ends_at_the_timeout(self, site: Path) -> None:
        """With the only worker taken by a stream nobody reads, the next caller waits ``timeout``, not forever."""
        from .test_process import SPEC as PROC_SPEC

        install_plugin(
            site,
            "streamer",
            "from pluginsdk import hookimpl\n\n@hookimpl\ndef tokens(text):\n    yield from text.split()\n\n"
            "@hookimpl\ndef add(a, b):\n    return a + b\n",
            group="proctest.plugins",
            manifest='[plugin]\nrequires = "proctest>=1.0"\nisolation = "process"\nhooks = ["tokens", "add"]\n',
        )
        policy = Policy(limits=Limits(timeout=1.0, workers=1))
        with Host(PROC_SPEC, policy=policy, path=[str(site)]) as host:
            (kept,) = host.hook.tokens(text="a b c")  # held, never read
            error, took, _ = timed(lambda: host.hook.add(a=1, b=2))
            # Either the caller gave up waiting, or the stream's worker was reclaimed first.
            assert (error is None or isinstance(error, PluginTimeout)) and took < 1.0 + GRACE, (error, took)
            assert [3] == host.hook.add(a=1, b=2)  # the stream's worker is reclaimed by now
            with pytest.raises(PluginTimeout, match="not read"):
                list(kept)
            assert "streamer" in [i.name for i in host.plugins()]


# -- fuzzing the reply path -------------------------------------------------------------

_FRAME_PARTS = st.one_of(
    st.integers(min_value=-3, max_value=20),
    st.text(max_size=8),
    st.none(),
    st.booleans(),
    st.lists(st.integers(max_value=5), max_size=3),
)
_FORGED = st.lists(_FRAME_PARTS, min_size=0, max_size=9)


def _forged_frame(parts: list[Any]) -> bytes:
    from pluginsdk import codec

    return codec.encode_frame(parts)


_REPLY_BYTES = st.one_of(
    st.binary(min_size=1, max_size=64),  # random bytes
    _FORGED.map(_forged_frame),  # well-formed frames that may break the protocol
    _FORGED.map(_forged_frame).map(lambda b: b[: max(1, len(b) // 2)]),  # truncated
)


FUZZ_TIMEOUT = 0.5


@pytest.mark.slow
@pytest.mark.parametrize("level", ISOLATED)
def test_fuzzed_replies_never_pass_as_results(hosting: Callable[..., Any], level: str, site: Path) -> None:
    """Whatever a plugin writes to its channel: the caller gets its own value or an SDK error, in time, and
    the plugin answers the next call correctly."""
    if level == "wasm":
        warm_wasm(site)
    with rogue_host(hosting, level, limits=Limits(timeout=FUZZ_TIMEOUT, memory_mb=256, max_message_mb=1.0)) as host:

        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(data=_REPLY_BYTES)
        def one(data: bytes) -> None:
            error, took, value = timed(lambda: host.hook.transform(text="raw:" + data.hex()))
            assert took < FUZZ_TIMEOUT + GRACE
            if error is None:  # a forged frame that happens to be a valid reply is the plugin's own answer
                assert "good:raw:" + data.hex() in value
            else:  # PluginTimeout: a truncated frame leaves the host waiting for bytes that never come
                expected = (CodecError, PluginProtocolError, PluginResourceError, PluginCrashed, PluginTimeout)
                assert isinstance(error, expected), error
                assert isinstance(error, PluginError) and error.plugin == "hostile"
            recovered(host)

        one()


def test_nothing_left_after_a_protocol_violation(hosting: Callable[..., Any]) -> None:
    """The replaced worker and its supervisor are gone; so are their descriptors and threads."""
    before = snapshot()
    with rogue_host(hosting, "process", check=False) as host:
        with pytest.raises(PluginProtocolError):
            host.hook.transform(text="notalist")
        recovered(host)
    from .test_faults import assert_nothing_left

    assert_nothing_left(before)


def test_workers_start_as_demand_grows(site: Path) -> None:
    """Case 8, the pool's side: a plugin allowed 3 workers runs 1 until calls overlap."""
    from .procs import children
    from .test_faults import GOOD

    install_plugin(site, "good", GOOD, isolation="process", hooks=("transform", "detect_language"))
    before = children()
    with Host(SPEC, policy=Policy(limits=Limits(workers=3)), path=[str(site)]) as host:
        for _ in range(5):
            assert ["good:x"] == host.hook.transform(text="x")
        assert 1 == len(children() - before)
        assert "process (1/3 workers)" == host.plugin("good").runtime
        host.hook.transform.map([{"text": str(i)} for i in range(30)])  # a batch spreads over the pool
        assert 3 == len(children() - before)
