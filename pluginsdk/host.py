"""The host: discovers a spec's plugins, applies policy, runs hooks."""

from __future__ import annotations

import _thread
import _weakref
import atexit
import contextlib
import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pluggy

from . import _dispatch, _placeholders, _stats
from ._errors import (
    BackendUnavailable,
    IncompatiblePlugin,
    PluginError,
    PluginLoadError,
    UnknownPlugin,
    exception_text,
    format_traceback,
    type_name,
)
from ._markers import PROJECT
from ._placement import environment_problem, plugin_target
from ._plugins import Placeholder as _Placeholder
from ._plugins import PluginInfo, PluginRecord
from ._resolve import backend_class, isolation_unavailable
from .backends.base import ISOLATION_LEVELS, Backend, PluginTarget
from .config import DISABLED, LOADED, UNAVAILABLE
from .discovery import AVAILABLE, FAILED, INCOMPATIBLE, Candidate, discover
from .policy import Policy

if TYPE_CHECKING:
    import logging
    from pathlib import Path

    from ._stats import HookStats, MetricsMode
    from .spec import H, HookSpec
else:
    H = TypeVar("H")  # checkers see spec.H: a bare Host is Host[Any]

__all__ = ["Host", "PluginInfo"]

_Plugin = PluginRecord  # the name the host (and pluginsdk._aio) know the record by

_WRAP, _LATENCY, _INSIDE = _stats.WRAP, _stats.LATENCY, _stats.INSIDE
_clock = _stats.clock

# Hosts still open, closed at exit.  Weak references from the builtin
# ``_weakref`` (``weakref`` and ``threading`` cost start-up time for nothing here).
_live_hosts: dict[int, _weakref.ReferenceType[Host]] = {}


def _remember(host: Host) -> None:
    key = id(host)

    def forget(_: object) -> None:
        _live_hosts.pop(key, None)

    _live_hosts[key] = _weakref.ref(host, forget)


@atexit.register
def _close_live_hosts() -> None:
    for ref in list(_live_hosts.values()):
        host = ref()
        if host is not None:
            host.close()


class Host(Generic[H]):
    """Runs the plugins of one spec.

    Discovery happens here and reads metadata only; no plugin is imported
    until one of its hooks is called.  Use as a context manager, or call
    :meth:`close`.

    Args:
        spec: The hook specification this host provides.
        policy: Rules for plugins; defaults to allowing every plugin at the
            level its manifest asks for.
        config: A TOML file whose ``[policy]`` table is the policy (used
            when ``policy`` is not given).
        strict: Raise on a broken plugin instead of marking it failed.
        path: Directories to search for plugins (default ``sys.path``).
        prewarm: Start worker pools and sandboxes now, not on first call.
        coalesce: Let concurrent calls to an isolated plugin whose workers are
            all busy cross together (see :mod:`pluginsdk.backends.coalesce`);
            ``False``: each call waits for a worker of its own.
        force_isolation: Run every plugin at exactly this level, whatever
            manifests and policy say: for tests of a plugin at every level.
        use_index: Use (and refresh) the on-disk discovery index.
        check_values: Call in-process plugins as isolated ones are called: arguments
            and results cross the codec, so they come back, or fail, as at ``process``
            and ``wasm`` (see the value contract, docs/values.md).  For tests.
        metrics: Which plugins :meth:`stats` measures: ``"isolated"`` (the
            default: ``process`` and ``wasm`` plugins, whose calls already
            cost a round trip to another process), ``"all"`` (in-process
            plugins too, which costs a wrapper on every call) or ``"off"``.
        otel: Also report each measured call to OpenTelemetry (a span, and
            the ``pluginsdk.plugin.*`` metrics) through ``opentelemetry-api``,
            which must be installed (the ``otel`` extra).
    """

    def __init__(
        self,
        spec: HookSpec[H],
        *,
        policy: Policy | None = None,
        config: str | Path | None = None,
        strict: bool = False,
        path: Sequence[str] | None = None,
        prewarm: bool = False,
        coalesce: bool = True,
        force_isolation: str | None = None,
        use_index: bool = True,
        check_values: bool = False,
        metrics: MetricsMode = "isolated",
        otel: bool = False,
    ) -> None:
        self._metrics = _stats.check_mode(metrics)
        self._recorder_class = _stats.Recorder
        if otel:
            from ._otel import recorder_class

            self._recorder_class = recorder_class(spec.name, metrics=self._metrics)
        if force_isolation is not None and force_isolation not in ISOLATION_LEVELS:
            raise ValueError(f"force_isolation must be one of {', '.join(ISOLATION_LEVELS)}")
        if policy is None:
            policy = Policy.from_toml(config) if config is not None else Policy()
        self.spec = spec
        self.policy = policy
        self.strict = strict
        self._force = force_isolation
        self._path = None if path is None else [str(p) for p in path]
        self._prewarm = prewarm
        self._coalesce = coalesce
        self._ahook: Any = None  # host.ahook, made on first use
        self._check_values = check_values
        self._closed = False
        # Counts changes to which plugins answer and where (a start, a failure): async callers' plans are
        # worked out again when it moves.
        self._generation = 0
        self._dispatch_lock = _thread.allocate_lock()
        self._plugins: dict[str, _Plugin] = {}
        # Plugins to load before a hook's first call, by hook: in-process ones not imported yet,
        # and isolated ones whose ordering options matter (see _order_isolated).
        self._pending: dict[str, list[_Plugin]] = {}
        for cand in discover(spec, path=self._path, use_index=use_index, dists=policy.dists):
            self._admit(cand)
        self._order_isolated()

        self._pm = pluggy.PluginManager(PROJECT)
        lazy = _dispatch.lazy_caller_class(self._load_pending)
        for name in spec.hook_defs:
            cls = lazy if self._pending.get(name) else _dispatch.SDKHookCaller
            setattr(self._pm.hook, name, cls(name, self._pm._hookexec))
        self._pm.add_hookspecs(spec.namespace())
        for plugin in self._plugins.values():
            if plugin.status == AVAILABLE:
                self._register_placeholder(plugin)
        _remember(self)
        if prewarm:
            for plugin in self._plugins.values():
                if plugin.status == AVAILABLE and plugin.isolation != "inprocess":
                    self._ensure_started(plugin)

    # -- public API ---------------------------------------------------------

    @property
    def hook(self) -> H:
        """Call hooks here: ``host.hook.NAME(**kwargs)``, ``.map([...])``, ``.by_plugin(...)``, ``.results(...)``.

        A call must pass exactly the spec's arguments, or it raises
        :class:`~pluginsdk.HookCallError` before any plugin runs.  Type
        checkers know each hook's arguments and result from the spec's hooks class.
        """
        return self._pm.hook  # type: ignore[return-value]  # typed as the hooks class: docs/typed-calls.md

    @property
    def ahook(self) -> type[H]:
        """Await hooks here: ``await host.ahook.NAME(**kwargs)``, ``.map``, ``.by_plugin``, ``.results``...

        Same results, ordering and errors as :attr:`hook`; the event loop is
        never blocked (see :mod:`pluginsdk._aio`).  Type checkers see the
        hooks class, whose hooks read through the class are async callers
        (docs/typed-calls.md).
        """
        relay = self._ahook
        if relay is None:
            from ._aio import AsyncHookRelay, CallThreads

            with self._dispatch_lock:
                if self._ahook is None:
                    self._threads = CallThreads("host")
                    self._ahook = AsyncHookRelay(self, self._threads)
                relay = self._ahook
        return relay  # type: ignore[no-any-return]  # typed as the hooks class: docs/typed-calls.md

    def plugins(self) -> list[PluginInfo]:
        """Every plugin found, whatever its status, sorted by name."""
        return [p.info() for p in self._plugins.values()]

    def plugin(self, name: str) -> PluginInfo:
        """The plugin called ``name``, whatever its status.

        Raises :class:`~pluginsdk.UnknownPlugin` (a ``KeyError``) if the host
        found no plugin of that name; its message lists those it has.
        """
        return self._get(name).info()

    def stats(self, plugin: str | None = None) -> list[HookStats]:
        """Calls, errors, timeouts, crashes and latency of every measured plugin (or of ``plugin``), per hook.

        Sorted by plugin, then hook; only hooks called so far appear.  Which
        plugins are measured is ``Host(metrics=...)``'s choice: by default
        those in worker processes and the sandbox.  See :class:`~pluginsdk.HookStats`.
        """
        chosen = [self._get(plugin)] if plugin is not None else sorted(self._plugins.values(), key=_plugin_name)
        return [row for p in chosen if p.stats is not None for row in p.stats.snapshot()]

    def load(self, name: str) -> PluginInfo:
        """Load plugin ``name`` now rather than on its first call.

        Raises, naming the plugin and the reason, when it cannot be loaded:
        :class:`~pluginsdk.IncompatiblePlugin`, :class:`~pluginsdk.BackendUnavailable`,
        or :class:`~pluginsdk.PluginLoadError` (failed, or disabled by policy);
        :class:`~pluginsdk.UnknownPlugin` if there is no such plugin.
        """
        plugin = self._get(name)
        if plugin.status == AVAILABLE:
            self._ensure_started(plugin)
        if plugin.status not in (AVAILABLE, LOADED):
            errors: dict[str, type[PluginError]] = {INCOMPATIBLE: IncompatiblePlugin, UNAVAILABLE: BackendUnavailable}
            error = errors.get(plugin.status, PluginLoadError)
            raise error(f"cannot load ({plugin.status}): {plugin.reason}", plugin=name)
        return plugin.info()

    def close(self) -> None:
        """Stop every worker and sandbox this host started.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._generation += 1
        for plugin in self._plugins.values():
            backend, plugin.backend = plugin.backend, None
            if backend is not None:
                try:
                    backend.close()
                except Exception as exc:  # one plugin's teardown must not stop the others'
                    self._log().warning("closing plugin %r failed: %s", plugin.candidate.name, exc)
        if self._ahook is not None:
            self._threads.close()  # after the backends: their calls have ended
        _live_hosts.pop(id(self), None)

    def __enter__(self) -> Host[H]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Host {self.spec.name} {self.spec.version}: {len(self._plugins)} plugins>"

    # -- admission ----------------------------------------------------------

    def _admit(self, cand: Candidate) -> None:
        name = cand.name
        if cand.status != AVAILABLE:
            self._plugins[name] = _Plugin(cand, cand.isolation, cand.status, cand.reason)
            if cand.status == FAILED and self.strict:
                raise PluginLoadError(cand.reason, plugin=name)
            return
        refusal = self.policy.refusal(name, cand.dist)
        assert cand.isolation is not None
        isolation = self._force or self.policy.isolation_for(name, cand.isolation)
        if refusal is not None:
            self._plugins[name] = _Plugin(cand, isolation, DISABLED, refusal)
            return
        if cand.environment is not None:
            problem = environment_problem(self.policy, cand, isolation)
            if problem is not None:
                self._plugins[name] = _Plugin(cand, isolation, *problem)
                if self.strict:
                    raise (BackendUnavailable if problem[0] == UNAVAILABLE else PluginLoadError)(
                        problem[1], plugin=name
                    )
                return
        if isolation != "inprocess":
            executor = self.policy.executor_for(name, isolation)
            why = isolation_unavailable(isolation, wasm_interpreter=self.policy.wasm_interpreter, executor=executor)
            if why is not None:
                self._plugins[name] = _Plugin(cand, isolation, UNAVAILABLE, why)
                if self.strict:
                    raise BackendUnavailable(why, plugin=name)
                return
        plugin = self._plugins[name] = _Plugin(cand, isolation, AVAILABLE, "")
        if isolation == "inprocess":
            for hook in cand.hooks:
                self._pending.setdefault(hook, []).append(plugin)

    def _order_isolated(self) -> None:
        """Start a hook's isolated plugins before its first call when it has others to be ordered with.

        Their ``tryfirst``/``trylast`` are in their code, which only their
        workers read: dispatching before those are known would call the
        implementations in the wrong order, once.
        """
        isolated: dict[str, list[_Plugin]] = {}
        count: dict[str, int] = {}
        for plugin in self._plugins.values():
            if plugin.status == AVAILABLE:
                for hook in plugin.candidate.hooks:
                    count[hook] = count.get(hook, 0) + 1
                    if plugin.isolation != "inprocess":
                        isolated.setdefault(hook, []).append(plugin)
        for hook, plugins in isolated.items():
            if count[hook] > 1:
                self._pending.setdefault(hook, []).extend(plugins)

    def _load_pending(self, hook: str) -> None:
        # Load, then forget: a thread arriving meanwhile finds the list still
        # there and waits on each plugin's lock, rather than dispatching early.
        for plugin in list(self._pending.get(hook, ())):
            self._ensure_started(plugin)
        self._pending.pop(hook, None)

    def _register_placeholder(self, plugin: _Plugin) -> None:
        cand = plugin.candidate
        placeholder = plugin.placeholder = _Placeholder(cand.name)
        remote = plugin.isolation != "inprocess"
        functions = {}
        for hook in cand.hooks:

            def call(args: tuple[Any, ...], hook: str = hook) -> Any:
                return self._call(plugin, hook, args)

            def batch(items: list[tuple[Any, ...]], hook: str = hook) -> list[Any]:
                return self._call_batch(plugin, hook, items)

            argnames = self.spec.hook_defs[hook].argnames
            functions[hook] = _placeholders.make_impl_function(hook, argnames, call, batch if remote else None)
        _placeholders.register_placeholder(self._pm, cand.name, placeholder, functions)

    # -- loading and calling ------------------------------------------------

    def _target(self, plugin: _Plugin) -> PluginTarget:
        assert plugin.isolation is not None
        return plugin_target(
            plugin.candidate,
            plugin.isolation,
            spec=self.spec,
            policy=self.policy,
            path=self._path,
            prewarm=self._prewarm,
            coalesce=self._coalesce,
            check_values=self._check_values,
            log=self._log(plugin.candidate.name),
        )

    def _ensure_started(self, plugin: _Plugin) -> Backend | None:
        """The plugin's started backend, or ``None`` if it failed to start."""
        backend = plugin.backend
        if backend is not None:
            return backend
        with plugin.lock:
            if plugin.backend is not None:
                return plugin.backend
            if plugin.status != AVAILABLE or self._closed:
                if self._closed:
                    raise PluginError("the host is closed", plugin=plugin.candidate.name)
                return None
            assert plugin.isolation is not None
            backend = None
            try:
                cls = backend_class(plugin.isolation, self.policy.executor_for(plugin.candidate.name, plugin.isolation))
                backend = cls(self._target(plugin), log=self._log(plugin.candidate.name))
                if plugin.stats is None and _stats.measures(self._metrics, plugin.isolation):
                    plugin.stats = self._recorder_class(plugin.candidate.name, plugin.isolation, self.spec.hook_defs)
                backend.stats = plugin.stats  # where an isolated plugin's own reported times go
                backend.start()
                if self._closed:  # closed while this plugin was starting: nothing may outlive close()
                    raise PluginError("the host was closed while the plugin started", plugin=plugin.candidate.name)
                with self._dispatch_lock:  # pluggy's implementation lists are edited in place
                    if plugin.isolation == "inprocess":
                        from .backends.inprocess import InProcessBackend

                        assert isinstance(backend, InProcessBackend) and backend.impls is not None
                        impls = backend.impls
                        if any(inspect.iscoroutinefunction(i.function) for i in impls.values()):
                            from ._aio import wrap_coroutine_impls

                            impls = wrap_coroutine_impls(plugin.candidate.name, impls)
                        if plugin.stats is not None:
                            impls = _stats.timed_impls(plugin.stats, impls)
                        _placeholders.replace_impls(
                            self._pm, plugin.candidate.name, plugin.placeholder, backend.plugin_object, impls
                        )
                    else:
                        _placeholders.apply_ordering(self._pm, plugin.placeholder, backend.impl_options)
            except Exception as exc:
                if backend is not None:  # a backend that failed to start may still hold threads or workers
                    with contextlib.suppress(Exception):
                        backend.close()
                if isinstance(exc, PluginError):
                    error = exc
                else:  # a bug in a backend is still one plugin's failure
                    error = PluginLoadError(
                        f"{type_name(type(exc))}: {exception_text(exc)}",
                        plugin=plugin.candidate.name,
                        traceback=format_traceback(exc),
                    )
                self._fail(plugin, error)
                if self.strict or self._closed:
                    if error is exc:
                        raise
                    raise error from exc
                return None
            plugin.status = LOADED
            plugin.backend = backend
            self._generation += 1
            return backend

    def _fail(self, plugin: _Plugin, exc: PluginError) -> None:
        plugin.status = FAILED
        plugin.reason = exc.message
        tb = getattr(exc, "traceback", "")
        if tb:
            plugin.reason += "\n" + tb
        if self._pm.get_plugin(plugin.candidate.name) is not None:
            self._pm.unregister(name=plugin.candidate.name)
        backend, plugin.backend = plugin.backend, None
        self._generation += 1
        if backend is not None:
            backend.close()
        self._log().warning("plugin %r failed: %s", plugin.candidate.name, exc.message)

    def _call(self, plugin: _Plugin, hook: str, args: tuple[Any, ...]) -> Any:
        backend = self._ensure_started(plugin)
        if backend is None:
            return None  # failed to load: skipped, as if unregistered
        rec = plugin.stats
        # Recorder.request(), inlined: count the request (lock-free); a few in SAMPLE_EVERY are timed.
        timed = rec is not None and next(rec.calls[hook], _WRAP)
        if timed and rec is not None:
            return self._call_timed(plugin, backend, rec, hook, args, timed)
        try:
            return backend.call(hook, args)
        except Exception as exc:
            error = self._failed(plugin, backend, rec, hook, 0, exc)
            if error is exc:
                raise
            raise error from exc

    def _call_timed(
        self, plugin: _Plugin, backend: Backend, rec: _stats.Recorder, hook: str, args: tuple[Any, ...], timed: int
    ) -> Any:
        """A request in the sample: the host's clock (``LATENCY``), or the plugin's own (``INSIDE``), or both."""
        if timed == _WRAP:  # the hook's pass through the schedule is over (1 request in CYCLE): maybe untimed
            timed = rec.wrapped(hook)
        start = _clock() if timed & _LATENCY else 0
        try:
            result = backend.call(hook, args, bool(timed & _INSIDE))
        except Exception as exc:
            error = self._failed(plugin, backend, rec, hook, start, exc)
            if error is exc:
                raise
            raise error from exc
        if start:
            rec.ok(hook, start)
        return result

    def _failed(
        self,
        plugin: _Plugin,
        backend: Backend,
        rec: _stats.Recorder | None,
        hook: str,
        start: int,
        exc: Exception,
        items: int = 1,
    ) -> PluginError:
        """The error a failed request raises (recorded); ``start``: when a timed request started, else 0."""
        if rec is not None:
            rec.failed(hook, start, exc, items)
        if not isinstance(exc, PluginError):  # only in-process plugin code raises other exceptions
            return _dispatch.hook_error(plugin.candidate.name, hook, exc)
        if exc.plugin is None:  # a result the host could not read (the codec knows no plugin)
            exc.plugin = plugin.candidate.name
        self._check_backend(plugin, backend)
        return exc

    def _call_batch(self, plugin: _Plugin, hook: str, items: list[tuple[Any, ...]]) -> list[Any]:
        backend = self._ensure_started(plugin)
        if backend is None:
            return [None] * len(items)
        rec = plugin.stats
        timed = rec.request(hook) if rec is not None else 0  # a batch is one request, sampled as calls are
        if rec is not None and len(items) != 1:
            rec.items(hook, len(items) - 1)
        start = _clock() if timed & _LATENCY else 0
        try:
            result = backend.call_batch(hook, items, timed=bool(timed & _INSIDE))
        except PluginError as exc:
            self._failed(plugin, backend, rec, hook, start, exc, len(items))
            raise
        if start and rec is not None:
            rec.ok(hook, start, len(items))
        return result

    def _check_backend(self, plugin: _Plugin, backend: Backend) -> None:
        reason = backend.failed_reason
        if reason is not None and plugin.status == LOADED:
            with plugin.lock:
                self._fail(plugin, PluginLoadError(reason, plugin=plugin.candidate.name))

    # -- helpers ------------------------------------------------------------

    def _get(self, name: str) -> _Plugin:
        try:
            return self._plugins[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise UnknownPlugin(name, known=list(self._plugins)) from None

    def _log(self, plugin: str | None = None) -> logging.Logger:
        import logging

        return logging.getLogger("pluginsdk" if plugin is None else f"pluginsdk.plugin.{plugin}")


def _plugin_name(plugin: _Plugin) -> str:
    return plugin.candidate.name
