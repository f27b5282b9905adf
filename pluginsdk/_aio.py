"""Async hook calls: ``await host.ahook.NAME(**kwargs)``, and ``async def`` implementations in-process.

An async call has the sync call's results, ordering (``tryfirst``/``trylast``,
``firstresult``) and errors, and never blocks the event loop.  A hook whose
implementations are all started isolated plugins' (and do not stream) takes
the *direct path*: worked out once per hook and checked at each call, it
queues the call on each plugin's lane for the caller's loop
(:mod:`pluginsdk.backends.loop_lane`), which sends the loop's queued calls
together and resolves their futures on the loop: no thread.  Anything else
(a plugin to start, in-process plugins, wrappers, streams, ``.map``) runs the
sync call on one of the host's call threads (:data:`CALL_THREADS` at most).

An in-process implementation may be ``async def``: an async call runs its
coroutine on the caller's event loop (the call thread waits for it); a sync
call of it raises, naming the plugin and the hook.  Streams come back as
async iterators (:class:`AsyncStream`); leaving one early (``break``,
cancelling the task) cancels the stream in its worker.

Cancelling a task that awaits a call withdraws the call while it is queued;
one already sent to a worker runs to its end (within its deadline) and its
result is dropped; the worker pool and every other call are unaffected.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import operator
import threading
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pluggy

from . import _dispatch, _stats
from ._errors import PluginError

if TYPE_CHECKING:
    from ._dispatch import PluginResult, SDKHookCaller
    from .host import Host, _Plugin

__all__ = ["CALL_THREADS", "AsyncHookCaller", "AsyncHookRelay", "AsyncStream", "CallThreads", "wrap_coroutine_impls"]

#: Threads a host runs async calls on, at most (started as calls need them).
CALL_THREADS = 32

_COROUTINE_ATTR = "__pluginsdk_coroutine__"  # on a wrapped ``async def`` implementation: the original
_running_loop = asyncio.get_running_loop
_local = threading.local()  # .loop: the event loop of the async call this thread is running


def _event_loop() -> asyncio.AbstractEventLoop | None:
    return getattr(_local, "loop", None)


class CallThreads:
    """The host's threads for async calls: started on first use, joined (with a deadline) at close."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    def submit(self, loop: asyncio.AbstractEventLoop, function: Callable[[], Any]) -> asyncio.Future[Any]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the host is closed")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(CALL_THREADS, thread_name_prefix=f"pluginsdk-{self._name}")
            executor = self._executor

        def run() -> Any:
            _local.loop = loop
            try:
                return function()
            finally:
                _local.loop = None

        return loop.run_in_executor(executor, run)

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking calls; wait up to ``timeout`` for the threads (their calls end as the backends close)."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is None:
            return
        executor.shutdown(wait=False, cancel_futures=True)
        threads = list(getattr(executor, "_threads", ()))  # CPython's executor keeps them here
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))


class AsyncHookRelay:
    """``host.ahook``: each hook's async caller, by name (the hooks of ``host.hook``)."""

    def __init__(self, host: Host, threads: CallThreads) -> None:
        self._host = host
        self._threads = threads

    def __getattr__(self, name: str) -> AsyncHookCaller:
        if name.startswith("_"):
            raise AttributeError(name)
        caller = AsyncHookCaller(self._host, getattr(self._host.hook, name), self._threads)
        setattr(self, name, caller)  # once per hook
        return caller

    def __dir__(self) -> list[str]:
        return [n for n in dir(self._host.hook) if not n.startswith("_")]


class _Step:
    """One isolated plugin's part in an awaited call, worked out once (see ``AsyncHookCaller._plan``)."""

    __slots__ = ("args", "backend", "coalescer", "impl", "info", "lane", "loop", "plugin", "pool")

    def __init__(self, impl: pluggy.HookImpl, plugin: _Plugin, backend: Any, coalescer: Any, info: Any) -> None:
        self.impl, self.plugin, self.backend = impl, plugin, backend
        self.coalescer, self.info, self.pool = coalescer, info, backend.pool
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop of the last call, and its lane
        self.lane: Any = None
        names = tuple(impl.argnames)
        if len(names) > 1:
            self.args: Callable[[Mapping[str, Any]], tuple[Any, ...]] = operator.itemgetter(*names)
        elif names:
            name = names[0]
            self.args = lambda kwargs: (kwargs[name],)
        else:
            self.args = lambda kwargs: ()

    def bind(self, loop: asyncio.AbstractEventLoop) -> Any:
        """The lane of ``loop`` (kept for the next call, likely on the same loop)."""
        self.lane = self.coalescer.lane(loop)
        self.loop = loop
        return self.lane


class AsyncHookCaller:
    """One hook's async calls: the sync caller's methods, awaitable (see the module docstring)."""

    __slots__ = ("_caller", "_host", "_plan", "_planned", "_threads", "name")

    def __init__(self, host: Host, caller: SDKHookCaller, threads: CallThreads) -> None:
        self._host = host
        self._caller = caller
        self._threads = threads
        self.name = caller.name
        # A hook whose implementations are all isolated plugins' that have started, none streaming:
        # (the implementations, each one's step), checked still to hold at each call.
        self._plan: tuple[list[pluggy.HookImpl], list[_Step]] | None = None
        # What the plan was worked out for: the host's generation and the implementations then. Worked
        # out again after a call off the direct path only when either has changed since.
        self._planned: tuple[int, list[pluggy.HookImpl]] = (-1, [])

    def __repr__(self) -> str:
        return f"<AsyncHookCaller {self.name!r}>"

    def _on_thread(self, function: Callable[[], Any]) -> Awaitable[Any]:
        return self._threads.submit(asyncio.get_running_loop(), function)

    async def __call__(self, **kwargs: Any) -> Any:
        caller = self._caller
        plan = self._plan
        # Still good while no plugin has started or failed since, and the implementations are the same.
        if plan is not None and self._planned[0] == self._host._generation and plan[0] == caller._hookimpls:
            # The direct path: straight to each plugin's lane, no thread (see .backends.loop_lane).
            if caller._defaults or kwargs.keys() != caller._argset:
                kwargs = caller._checked(kwargs)
            name, firstresult, results = self.name, caller._firstresult, []
            loop = _running_loop()
            for step in plan[1]:
                plugin, future, pool = step.plugin, loop.create_future(), step.pool
                rec = plugin.stats
                start = _stats.clock() if rec is not None and rec.request(name) & _stats.LATENCY else 0
                try:
                    if pool.closed or pool.failed is not None:
                        pool.check_usable()
                    lane = step.lane if step.loop is loop else step.bind(loop)
                    lane.submit(future, name, step.args(kwargs), step.info)
                    result = await future
                except PluginError as exc:
                    if rec is not None:
                        rec.failed(name, start, exc)
                    self._host._check_backend(plugin, step.backend)
                    raise
                if start and rec is not None:
                    rec.ok(name, start)
                if result is not None:
                    if firstresult:
                        return result
                    results.append(result)
            return None if firstresult else results
        try:
            return await self._call(caller, kwargs)
        finally:
            host = self._host
            if self._planned[0] != host._generation or self._planned[1] != caller._hookimpls:
                self._planned = (host._generation, caller._hookimpls.copy())
                self._plan = _plan(host, caller)

    async def _call(self, caller: SDKHookCaller, kwargs: dict[str, Any]) -> Any:
        if type(caller) is not _dispatch.SDKHookCaller or caller._call_history is not None:
            # A hook's first call loads its in-process plugins (imports: on a thread);
            # a historic hook raises as its sync call does.
            result = await self._on_thread(lambda: caller(**kwargs))
            return [_async_stream(r) for r in result] if type(result) is list else _async_stream(result)
        kwargs = caller._checked(kwargs)
        impls = caller._hookimpls.copy()  # plugins may register others while being called
        # pluggy keeps wrappers at the list's end: they run as they do in sync calls.
        if impls and (impls[-1].wrapper or impls[-1].hookwrapper):
            result = await self._on_thread(lambda: caller(**kwargs))
            return [_async_stream(r) for r in result] if type(result) is list else _async_stream(result)
        firstresult, results = caller._firstresult, []
        host = self._host
        plugins = host._plugins
        for impl in reversed(impls):  # pluggy calls the list back to front
            args = [kwargs[a] for a in impl.argnames]
            plugin = plugins.get(impl.plugin_name)
            if plugin is not None and impl.plugin is plugin.placeholder:  # isolated (or not loaded): a worker answers
                result = await _submit(host, plugin, self.name, tuple(args))
            else:
                try:
                    coroutine_function = getattr(impl.function, _COROUTINE_ATTR, None)
                    if coroutine_function is not None:
                        result = await coroutine_function(*args)
                    else:
                        result = impl.function(*args)
                except PluginError:
                    raise
                except Exception as exc:  # the plugin's own code raised
                    raise _dispatch.hook_error(impl.plugin_name, self.name, exc) from exc
            if result is not None:
                results.append(_async_stream(result))
                if firstresult:
                    return result
        return None if firstresult else results

    async def map(self, items: Sequence[Mapping[str, Any]]) -> list[Any]:
        caller = self._caller
        return await self._on_thread(lambda: caller.map(items))  # type: ignore[no-any-return]

    async def by_plugin(self, **kwargs: Any) -> dict[str, Any]:
        caller = self._caller
        result = await self._on_thread(lambda: caller.by_plugin(**kwargs))
        return {name: _async_stream(r) for name, r in result.items()}

    async def results(self, **kwargs: Any) -> list[PluginResult]:
        caller = self._caller
        results = await self._on_thread(lambda: caller.results(**kwargs))
        return [r._replace(value=_async_stream(r.value)) if r.ok else r for r in results]

    async def map_results(self, items: Sequence[Mapping[str, Any]]) -> list[PluginResult]:
        caller = self._caller
        return await self._on_thread(lambda: caller.map_results(items))  # type: ignore[no-any-return]


def _plan(host: Host, caller: SDKHookCaller) -> tuple[list[pluggy.HookImpl], list[_Step]] | None:
    """The direct path's steps for ``caller``'s hook, if every implementation is an isolated plugin's,
    started, with a queue for async calls, and not streaming; else ``None``."""
    if type(caller) is not _dispatch.SDKHookCaller or caller._call_history is not None:
        return None
    impls = caller._hookimpls.copy()
    steps = []
    for impl in impls:
        if impl.wrapper or impl.hookwrapper:
            return None
        plugin = host._plugins.get(impl.plugin_name)
        if plugin is None or impl.plugin is not plugin.placeholder:
            return None
        backend = plugin.backend
        entry = getattr(backend, "async_entry", None)
        found = (
            None if backend is None or entry is None or not getattr(backend, "started", False) else entry(caller.name)
        )
        if found is None:
            return None
        steps.append(_Step(impl, plugin, backend, *found))
    steps.reverse()  # pluggy calls the list back to front
    return (impls, steps) if steps else None


async def _submit(host: Host, plugin: _Plugin, hook: str, args: tuple[Any, ...]) -> Any:
    """One isolated plugin's answer, awaited: queued for its workers' drivers (see .backends.coalesce).

    Starting the plugin, an in-process plugin not loaded yet, and a streaming
    hook (a stream holds its worker) go through the sync call, on a thread.
    """
    loop = asyncio.get_running_loop()
    threads: CallThreads = host._threads
    backend = plugin.backend
    if backend is None:
        backend = await threads.submit(loop, lambda: host._ensure_started(plugin))
        if backend is None:
            return None  # failed to load: skipped, as in a sync call
    submit = getattr(backend, "submit", None)
    if submit is None or hook in getattr(backend, "streams", ()):
        return await threads.submit(loop, lambda: host._call(plugin, hook, args))
    future = loop.create_future()
    rec = plugin.stats
    # Counted as a sync request is; a few in the sample are timed (the host's clock only: a
    # queued call cannot ask its worker for the plugin's own time).
    start = _stats.clock() if rec is not None and rec.request(hook) & _stats.LATENCY else 0
    try:
        submit(hook, args, future)
        result = await future
    except PluginError as exc:
        if rec is not None:
            rec.failed(hook, start, exc)
        host._check_backend(plugin, backend)
        raise
    if start and rec is not None:
        rec.ok(hook, start)
    return result


def _async_stream(value: Any) -> Any:
    return AsyncStream(value) if type(value) is types.GeneratorType else value


class AsyncStream:
    """A streamed result, read without blocking the event loop: ``async for item in stream``.

    Each item is pulled on a call thread.  ``aclose()`` (or leaving an
    ``async for`` early, or cancelling the task reading it) ends the stream
    in its worker; one dropped unread is ended when collected, as a sync
    stream is.
    """

    def __init__(self, iterator: Iterator[Any]) -> None:
        self._it = iterator
        self._lock = threading.Lock()  # one pull at a time; close waits for a pull in progress

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    def _next(self) -> Any:
        with self._lock:
            try:
                return next(self._it)
            except StopIteration:
                raise StopAsyncIteration from None

    def _close(self) -> None:
        with self._lock:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()

    async def __anext__(self) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, self._next)
        except asyncio.CancelledError:
            # The task reading it was cancelled: end the stream (after the pull in progress).
            loop.run_in_executor(None, self._close)
            raise

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._close)


def wrap_coroutine_impls(plugin: str, impls: Mapping[str, pluggy.HookImpl]) -> dict[str, pluggy.HookImpl]:
    """``impls``, with each ``async def`` implementation made callable by pluggy (see the module docstring)."""
    wrapped = dict(impls)
    for hook, impl in impls.items():
        if inspect.iscoroutinefunction(impl.function):
            function = _awaiting(plugin, hook, impl.function)
            wrapped[hook] = pluggy.HookImpl(impl.plugin, impl.plugin_name, function, impl.opts)
    return wrapped


def _awaiting(plugin: str, hook: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)  # pluggy reads the arguments' names through __wrapped__
    def call(*args: Any) -> Any:
        coroutine = function(*args)
        loop = _event_loop()
        if loop is None:
            coroutine.close()
            raise TypeError(
                f"plugin {plugin!r} implements hook {hook!r} with 'async def': "
                f"call it with 'await host.ahook.{hook}(...)', not host.hook.{hook}(...)"
            )
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    setattr(call, _COROUTINE_ATTR, function)  # an async call awaits it on its own loop
    return call
