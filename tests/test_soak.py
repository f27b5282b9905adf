"""Load and soak: host threads calling every backend at once, for a bounded time.

The default run lasts ``PLUGINSDK_SOAK_SECONDS`` (5 s) so it fits the normal
suite; the long run is::

    PLUGINSDK_SOAK_SECONDS=60 pytest tests/test_soak.py

Bounds, measured between the end of a warm-up round (every backend started,
every message size seen once) and the end of the soak: host RSS grows by less
than ``RSS_BOUND`` and the number of open descriptors does not change; after
the host closes, descriptors are back to what they were before it started
(a first host, started and closed before, leaves what the process keeps for
good: wasmtime's event descriptors).
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pluginsdk import HookSpec, Host, hookspec
from pluginsdk.backends.wasm import WasmBackend

from .plugin_factory import install_plugin

SECONDS = float(os.environ.get("PLUGINSDK_SOAK_SECONDS", "5"))
THREADS = 4
RSS_BOUND = 30 * 1024 * 1024  # bytes of host RSS growth allowed over the soak
WARMUP_ROUNDS = 40  # calls per thread before the baseline is taken
_WASM_REASON = WasmBackend.unavailable_reason()


class SoakHooks:
    @hookspec
    def tag(self, value: Any) -> Any:
        """Return ``[plugin name, value]``."""


SPEC = HookSpec("soakkit", version="1.0", hooks=SoakHooks)

PLUGIN = """
from pluginsdk import hookimpl

@hookimpl
def tag(value):
    return ["{name}", value]
"""

MANIFEST = """
[plugin]
requires = "soakkit>=1.0,<2"
isolation = "{isolation}"
hooks = ["tag"]

[limits]
workers = 2
"""


def rss() -> int:
    """This process's resident set size in bytes (``VmRSS`` of ``/proc/self/status``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_fds() -> list[str]:
    """What each of this process's open descriptors points at, sorted."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the directory's own descriptor, closed meanwhile
            pass
    return sorted(found)


def payload(thread: int, n: int) -> dict[str, Any]:
    """The unique value call ``n`` of ``thread`` sends; sizes vary from a few bytes to ~2 KiB."""
    return {"thread": thread, "n": n, "pad": bytes([thread]) * ((n * 37) % 2000)}


class Load:
    """Host threads making unique calls and checking each reply is their own.

    Bookkeeping is a few counters, not a record per call, so the test's own
    memory stays flat however long it runs.
    """

    def __init__(self, host: Host, names: list[str]) -> None:
        self.host = host
        self.names = sorted(names)
        self.answered = [0] * THREADS  # requests whose every result matched
        self.results = [0] * THREADS  # results received, all plugins together
        self.mismatches: list[str] = []
        self.errors: list[BaseException] = []
        self.requested = [0] * THREADS  # requests made (each thread's next n)

    def _check(self, thread: int, sent: dict[str, Any], results: list[Any]) -> None:
        """One result per plugin, each carrying exactly this request's unique payload."""
        self.results[thread] += len(results)
        if self.names == sorted(name for name, _ in results) and all(sent == value for _, value in results):
            self.answered[thread] += 1
        elif len(self.mismatches) < 5:
            self.mismatches.append(f"thread {thread} sent n={sent['n']}, got {results!r:.200}")

    def _thread(self, thread: int, until: Callable[[int], bool]) -> None:
        try:
            calls = 0
            while not until(calls) and not self.errors:
                n = self.requested[thread]
                if calls % 5 == 4:  # every fifth call a batch of three: one crossing per isolated plugin
                    values = [payload(thread, n + i) for i in range(3)]
                    self.requested[thread] = n + 3
                    batch = self.host.hook.tag.map([{"value": v} for v in values])
                    assert len(values) == len(batch)
                    for value, results in zip(values, batch):
                        self._check(thread, value, results)
                else:
                    value = payload(thread, n)
                    self.requested[thread] = n + 1
                    self._check(thread, value, self.host.hook.tag(value=value))
                calls += 1
        except BaseException as exc:
            self.errors.append(exc)

    def run(self, until: Callable[[int], bool]) -> list[int]:
        """Run every thread until ``until(calls made by that thread)`` is true; RSS sampled each second."""
        threads = [threading.Thread(target=self._thread, args=(i, until)) for i in range(THREADS)]
        for t in threads:
            t.start()
        samples = [rss()]
        for t in threads:
            while t.is_alive():
                t.join(1.0)
                samples.append(rss())
        return samples

    def requests(self) -> int:
        return sum(self.requested)


@pytest.mark.slow
class TestSoak:
    def test_concurrent_calls_at_every_level(self, site: Path) -> None:
        """Threads calling all three backends at once get exactly their own results, and nothing leaks."""
        levels = ["inprocess", "process"] + (["wasm"] if _WASM_REASON is None else [])
        for level in levels:
            install_plugin(
                site, f"soak-{level}", PLUGIN.format(name=level), module=f"soakkit_{level}",
                dist=f"soakkit-{level}", group="soakkit.plugins", manifest=MANIFEST.format(isolation=level),
            )  # fmt: skip
        with Host(SPEC, path=[str(site)], prewarm=True) as host:  # leaves the process-wide state
            Load(host, levels).run(lambda calls: calls >= 1)
        gc.collect()
        fds_before = open_fds()
        with Host(SPEC, path=[str(site)], prewarm=True) as host:
            load = Load(host, levels)
            load.run(lambda calls: calls >= WARMUP_ROUNDS)
            assert ([], []) == (load.errors, load.mismatches)
            gc.collect()
            rss_start, fds_start = rss(), open_fds()

            deadline = time.monotonic() + SECONDS
            samples = load.run(lambda calls: time.monotonic() >= deadline)

            gc.collect()
            rss_end, fds_end = rss(), open_fds()
            statuses = sorted((p.name, p.status) for p in host.plugins())
        gc.collect()  # closed sandbox instances are only freed by the collector (see TestRelease)
        fds_after = open_fds()

        assert [] == load.errors
        assert [] == load.mismatches
        assert load.requested == load.answered, "every request answered by every plugin with its own payload"
        assert [len(levels) * n for n in load.requested] == load.results, "no result lost or duplicated"
        assert [(f"soak-{level}", "loaded") for level in sorted(levels)] == statuses
        assert fds_start == fds_end
        assert fds_before == fds_after
        growth = rss_end - rss_start
        mib = [round(s / 2**20) for s in samples]
        print(f"soak: {load.requests()} requests, RSS {rss_start / 2**20:.1f} -> {rss_end / 2**20:.1f} MiB, {mib}")
        assert growth < RSS_BOUND, f"host RSS grew {growth / 2**20:.1f} MiB over {load.requests()} requests: {mib}"


@pytest.mark.wasm
@pytest.mark.skipif(_WASM_REASON is not None, reason=f"wasm backend unavailable: {_WASM_REASON}")
class TestRelease:
    def test_close_frees_sandboxes_without_the_garbage_collector(self, site: Path) -> None:
        """Closing a host gives back its sandbox instances' descriptors and memory at once, not at the next GC."""
        install_plugin(
            site, "soak-wasm", PLUGIN.format(name="wasm"), module="soakkit_wasm", dist="soakkit-wasm",
            group="soakkit.plugins", manifest=MANIFEST.format(isolation="wasm"),
        )  # fmt: skip

        def host_lifetime() -> None:
            with Host(SPEC, path=[str(site)], prewarm=True) as host:
                assert [["wasm", "x" * 100_000]] == host.hook.tag(value="x" * 100_000)

        host_lifetime()  # what the process keeps for good (see the module docstring)
        gc.collect()
        threads_before = set(threading.enumerate())
        fds_before, rss_before = open_fds(), rss()
        gc.disable()
        try:
            for _ in range(3):
                host_lifetime()
            for t in set(threading.enumerate()) - threads_before:  # instance threads end soon after close
                t.join(10.0)
            fds_after, rss_after = open_fds(), rss()
        finally:
            gc.enable()
            gc.collect()
        assert fds_before == fds_after
        growth = rss_after - rss_before
        assert growth < 16 * 1024 * 1024, f"RSS grew {growth / 2**20:.1f} MiB over 3 closed hosts (6 instances)"
