"""Awaited calls driven on their own event loop (pluginsdk.backends.loop_lane), with real workers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pluginsdk import Host, Limits, Policy
from pluginsdk._errors import PluginHookError, PluginTimeout
from pluginsdk.backends.pooled import PooledBackend

from .plugin_factory import install_plugin
from .test_async import PLUGIN, SPEC, _expected, _manifest


@pytest.fixture
def lane_host(site: Path) -> Iterator[Callable[..., Host]]:
    """Plugins ``a`` and ``b`` at ``process``; Hosts closed after the test."""
    hosts: list[Host] = []

    def make(limits: Limits) -> Host:
        for name, order in (("a", "(tryfirst=True)"), ("b", "(trylast=True)")):
            source = PLUGIN.format(name=name, order=order)
            install_plugin(
                site, name, source, module=f"asynckit_{name}", manifest=_manifest("process"), group="asynckit.plugins"
            )
        host = Host(SPEC, path=[str(site)], policy=Policy(limits=limits), use_index=False)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.close()


def _backend(host: Host, plugin: str) -> PooledBackend:
    backend = host._plugins[plugin].backend
    assert isinstance(backend, PooledBackend)
    return backend


def _drivers(plugin: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == f"pluginsdk-{plugin}-driver"]


async def _outcome(host: Host, text: str) -> Any:
    try:
        return sorted(await host.ahook.transform(text=text))
    except PluginHookError as exc:
        return ("PluginHookError", exc.plugin, exc.exc_message)


def test_awaited_calls_cross_on_their_loop(lane_host: Callable[..., Host]) -> None:
    """32 tasks, some calls raising: each gets its own outcome, in gathers sent from the loop (no driver thread)."""
    host = lane_host(Limits(timeout=10, workers=2))
    host.hook.transform(text="warm")
    texts = [f"raise:{i}" if i % 5 == 2 else f"t{i}" for i in range(32 * 30)]

    async def main() -> dict[str, Any]:
        async def run(mine: list[str]) -> list[tuple[str, Any]]:
            return [(text, await _outcome(host, text)) for text in mine]

        done = await asyncio.gather(*(run(texts[k::32]) for k in range(32)))
        return {text: got for part in done for text, got in part}

    outcomes = asyncio.run(main())
    assert {t: _expected(t) for t in texts} == outcomes
    coalescer = _backend(host, "a")._coalescer
    assert coalescer.gathered > coalescer.gathers > 0  # calls did cross together
    assert [] == _drivers("a")  # the loop sent them itself
    assert 2 >= len(_backend(host, "a").pool.all)


def test_a_lone_awaited_caller_keeps_one_worker(lane_host: Callable[..., Host]) -> None:
    host = lane_host(Limits(timeout=10, workers=2))

    async def main() -> list[Any]:
        return [await host.ahook.transform(text=f"x{i}") for i in range(100)]

    assert [[f"a:x{i}", f"b:x{i}"] for i in range(100)] == asyncio.run(main())
    # The first call starts the plugins (on a thread, a plain call); the other 99 cross from the loop.
    assert 99 == _backend(host, "a")._coalescer.gathered
    assert 1 == len(_backend(host, "a").pool.all)  # one at a time: never a second worker
    assert [] == _drivers("a")


def test_a_hang_in_a_loop_gather_is_its_own_timeout(lane_host: Callable[..., Host]) -> None:
    """The call that overruns its deadline gets PluginTimeout; the calls sent with it are answered."""
    host = lane_host(Limits(timeout=1.0, workers=1))

    async def main() -> list[Any]:
        await host.ahook.nap(seconds=0, tag="warm")
        seconds = [0, 0, 0, 5, 0, 0]
        calls = [host.ahook.nap(seconds=s, tag=f"n{i}") for i, s in enumerate(seconds)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results[3], PluginTimeout), results
    assert [["a:n0", "b:n0"], ["a:n1", "b:n1"], ["a:n2", "b:n2"]] == [sorted(r) for r in results[:3]]
    assert [["a:n4", "b:n4"], ["a:n5", "b:n5"]] == [sorted(r) for r in results[4:]]
    # Once, or twice: a gather that dies before answering anything leaves unknown which call hung,
    # and each runs again on its own to find out (see docs/async.md).
    assert [i.kind for i in host.plugin("a").incidents] in (["timeout"], ["timeout", "timeout"])


def test_a_loop_closed_mid_call_loses_no_worker(lane_host: Callable[..., Host]) -> None:
    """A loop that ends with a call in flight: its worker is replaced, and the next loop and threads are served."""
    host = lane_host(Limits(timeout=10, workers=1))

    async def leave_one_running() -> None:
        await host.ahook.nap(seconds=0, tag="warm")
        asyncio.get_running_loop().create_task(host.ahook.nap(seconds=0.3, tag="orphan"))
        await asyncio.sleep(0.05)  # sent; asyncio.run then cancels the task and closes the loop

    asyncio.run(leave_one_running())

    async def again() -> list[Any]:
        return [await host.ahook.transform(text=f"y{i}") for i in range(5)]

    assert [[f"a:y{i}", f"b:y{i}"] for i in range(5)] == asyncio.run(again())
    assert ["a:z", "b:z"] == host.hook.transform(text="z")
    assert 1 == len(_backend(host, "a").pool.all)


def test_a_sync_call_on_the_loop_thread_is_served(lane_host: Callable[..., Host]) -> None:
    """A sync call on the loop's own thread while that loop's awaited calls hold the only worker is answered.

    The call blocks the loop, whose reader callbacks then cannot run: the lane answers its gathers with
    blocking reads and gives the worker back, where it would otherwise wait out its whole timeout and fail.
    """
    host = lane_host(Limits(timeout=5, workers=1))
    assert ["a:warm", "b:warm"] == host.hook.transform(text="warm")

    async def main() -> tuple[list[str], bool, list[Any]]:
        await host.ahook.nap(seconds=0, tag="warm")
        naps = [asyncio.ensure_future(host.ahook.nap(seconds=0.2, tag=f"n{i}")) for i in range(3)]
        await asyncio.sleep(0.05)  # the lane has sent them
        # Calls go to the plugins in turn (a, then b): a's lane holds the one worker of a now.
        held = bool(_backend(host, "a")._coalescer.lanes[asyncio.get_running_loop()].busy)
        got = host.hook.transform(text="sync")  # blocks this loop
        return got, held, [sorted(r) for r in await asyncio.gather(*naps)]

    got, held, naps = asyncio.run(main())
    assert ["a:sync", "b:sync"] == got
    assert held  # the lane did hold the worker when the sync call came
    assert [[f"a:n{i}", f"b:n{i}"] for i in range(3)] == naps
    assert [] == [i.kind for i in host.plugin("a").incidents]
    assert 1 == len(_backend(host, "a").pool.all)
