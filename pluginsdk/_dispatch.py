"""Glue between the host and pluggy's dispatch.

This module and :mod:`pluginsdk._placeholders` are the two that reach into
pluggy internals (``HookCaller``'s implementation list,
``PluginManager._inner_hookexec`` and ``_name2plugin``), so the SDK can swap
a lazy placeholder for the real implementation *in place*: after the first
call, calls go straight through pluggy with nothing of the SDK in between,
and call order does not depend on which plugin happened to load first.
pluggy is pinned to a major version for this, and the test suite covers
every path here.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, NamedTuple

import pluggy

from ._errors import HookCallError, PluginError, PluginHookError, exception_text, format_traceback, type_name
from ._placeholders import BATCH_ATTR as _BATCH_ATTR

if TYPE_CHECKING:
    from concurrent.futures import Executor

_Args = tuple[Any, ...]


def attribute(exc: BaseException, hook_name: str, methods: Sequence[pluggy.HookImpl]) -> PluginHookError | None:
    """A ``PluginHookError`` naming the implementation ``exc`` came from, if any."""
    codes = {}
    for impl in methods:
        code = getattr(impl.function, "__code__", None)
        if code is not None:
            codes[code] = impl.plugin_name
    plugin = None
    tb = exc.__traceback__
    while tb is not None:
        plugin = codes.get(tb.tb_frame.f_code, plugin)
        tb = tb.tb_next
    return None if plugin is None else hook_error(plugin, hook_name, exc)


def hook_error(plugin: str, hook: str, exc: BaseException, *, index: int | None = None) -> PluginHookError:
    """The ``PluginHookError`` for ``exc``, raised in ``plugin``'s implementation of ``hook``.

    Never raises itself: plugin exceptions whose ``str()`` fails, or whose
    class has odd names, are described as such (issue 11, case 11).
    """
    return PluginHookError(
        plugin=plugin,
        hook=hook,
        exc_type=type_name(type(exc)),
        exc_message=exception_text(exc),
        traceback=format_traceback(exc),
        index=index,
    )


class PluginResult(NamedTuple):
    """One plugin's outcome of a hook call, from :meth:`SDKHookCaller.results`.

    Attributes:
        plugin: The plugin's name.
        value: What its implementation returned (for
            :meth:`~SDKHookCaller.map_results`, a list: one value per item);
            ``None`` if it failed.
        error: The :class:`~pluginsdk.PluginError` it failed with (a
            :class:`~pluginsdk.PluginHookError` if its code raised, or
            :class:`~pluginsdk.PluginCrashed`, :class:`~pluginsdk.PluginTimeout`...),
            or ``None`` if it succeeded.
        seconds: Wall time of its call, boundary crossing included (and, on a
            hook's first call, loading the plugin).
    """

    plugin: str
    value: Any
    error: PluginError | None
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether the plugin answered without failing."""
        return self.error is None


class SDKHookCaller(pluggy.HookCaller):
    """pluggy's hook caller, plus plugin attribution of errors, batches and per-plugin calls.

    ``__call__`` does what pluggy's does, with the options it reads on every
    call computed once, and one ``try`` around dispatch: exceptions raised by
    plugin code reach callers as ``PluginHookError`` without an extra frame
    on the normal path (the implementation that raised is found afterwards,
    from the traceback).  Arguments must be exactly the spec's, at every
    isolation level: one set comparison, in place of pluggy's own check,
    sends any other call to :meth:`_check_arguments`, which raises
    :class:`~pluginsdk.HookCallError`.
    """

    __slots__ = ("_argset", "_defaults", "_firstresult")

    def __init__(self, name: str, hook_execute: Any) -> None:
        self._defaults: dict[str, object] = {}
        self._firstresult = False
        self._argset: frozenset[str] = frozenset()
        super().__init__(name, hook_execute)

    def set_specification(self, specmodule_or_class: Any, spec_opts: Any) -> None:
        super().set_specification(specmodule_or_class, spec_opts)
        assert self.spec is not None
        self._defaults = dict(getattr(self.spec, "kwargdefaults", None) or {})
        self._firstresult = bool(self.spec.opts.get("firstresult"))
        self._argset = frozenset((*self.spec.argnames, *self.spec.kwargnames))

    def _check_arguments(self, kwargs: Mapping[str, object], index: int | None = None) -> None:
        """Raise :class:`~pluginsdk.HookCallError`: ``kwargs`` are not the spec's arguments.

        Every argument is required once the spec's defaults are merged in
        (pluggy 1.7 and later read them), as an isolated plugin is always
        handed all of them.
        """
        spec = self.spec
        if spec is None:
            return
        argnames = (*spec.argnames, *spec.kwargnames)
        raise HookCallError(
            hook=self.name,
            argnames=argnames,
            missing=[a for a in argnames if a not in kwargs],
            unexpected=[k for k in kwargs if k not in self._argset],
            index=index,
        )

    def __call__(self, **kwargs: object) -> Any:
        assert self._call_history is None, "Cannot directly call a historic hook - use call_historic instead."
        if self._defaults:
            kwargs = {**self._defaults, **kwargs}
        if kwargs.keys() != self._argset:
            self._check_arguments(kwargs)
        impls = self._hookimpls.copy()  # plugins may register others while being called
        try:
            return self._hookexec(self.name, impls, kwargs, self._firstresult)
        except PluginError:
            raise
        except Exception as exc:
            error = attribute(exc, self.name, impls)
            if error is None:
                raise
            raise error from exc

    def call_historic(
        self,
        result_callback: Callable[[Any], None] | None = None,
        kwargs: Mapping[str, object] | None = None,
    ) -> None:
        kwargs = {**self._defaults, **kwargs} if kwargs else dict(self._defaults)
        if kwargs.keys() != self._argset:
            self._check_arguments(kwargs)
        try:
            super().call_historic(result_callback, kwargs)
        except PluginError:
            raise
        except Exception as exc:
            error = attribute(exc, self.name, self._hookimpls)
            if error is None:
                raise
            raise error from exc

    def _impls_in_call_order(self) -> list[pluggy.HookImpl]:
        impls = self.get_hookimpls()
        if any(i.wrapper or i.hookwrapper for i in impls):
            raise PluginError(f"hook {self.name!r} has wrapper implementations; call it directly, not in a batch")
        return impls[::-1]  # pluggy calls the list back to front

    def _run(self, impl: pluggy.HookImpl, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except PluginError:
            raise
        except Exception as exc:
            error = attribute(exc, self.name, [impl])
            if error is None:
                raise
            raise error from exc

    def _checked(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` with the spec's defaults, once checked against the spec."""
        if self._defaults:
            kwargs = {**self._defaults, **kwargs}
        if kwargs.keys() != self._argset:
            self._check_arguments(kwargs)
        return kwargs

    def _checked_items(self, items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """A batch's items with the spec's defaults, each checked against the spec."""
        checked: list[Mapping[str, Any]] = (
            [{**self._defaults, **item} for item in items] if self._defaults else list(items)
        )
        # The happy path at C speed: every item has as many arguments as the spec (comparing key
        # sets cost a tenth of a µs an item; this, a few ns).  A wrong name among them is caught
        # where the arguments are read (a KeyError in _arg_tuples: see _items_args).
        if checked and set(map(len, checked)) != {len(self._argset)}:
            self._check_items(checked)
        return checked

    def _check_items(self, items: Sequence[Mapping[str, Any]]) -> None:
        """Raise :class:`HookCallError` for the first item whose arguments are not the spec's."""
        argset = self._argset
        for index, item in enumerate(items):
            if item.keys() != argset:
                self._check_arguments(item, index)

    def _items_args(
        self, items: Sequence[Mapping[str, Any]], indices: list[int], names: tuple[str, ...]
    ) -> list[_Args]:
        try:
            return _arg_tuples(items, indices, names)
        except KeyError:  # an item with the right number of arguments, not the right names
            self._check_items(items)
            raise

    def map(self, items: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Call the hook once per mapping of arguments; results in order.

        Each result is what calling the hook with that item would return
        (a list, or one value for ``firstresult`` hooks).  Plugins in worker
        processes or sandboxes receive all items in one crossing.
        """
        items = self._checked_items(items)
        firstresult = self._firstresult
        results: list[Any] = [None] * len(items) if firstresult else [[] for _ in items]
        pending = list(range(len(items)))
        for impl in self._impls_in_call_order():
            if not pending:
                break
            args = self._items_args(items, pending, impl.argnames)
            batch = getattr(impl.function, _BATCH_ATTR, None)
            if batch is not None:
                out = self._run(impl, batch, args)
            else:
                out = self._run(impl, _each, impl.function, args)
            for index, value in zip(pending, out):
                if value is None:
                    continue
                if firstresult:
                    results[index] = value
                else:
                    results[index].append(value)
            if firstresult:
                pending = [i for i in pending if results[i] is None]
        return results

    def by_plugin(self, **kwargs: Any) -> dict[str, Any]:
        """Call the hook; return each plugin's non-``None`` result by plugin name.

        Every plugin is called, ``firstresult`` hooks included; the first
        failure is raised.  :meth:`results` reports failures instead.
        """
        out: dict[str, Any] = {}
        kwargs = self._checked(kwargs)
        for impl in self._impls_in_call_order():
            value = self._run(impl, impl.function, *tuple(kwargs[a] for a in impl.argnames))
            if value is not None:
                out[impl.plugin_name] = value
        return out

    def results(self, executor: Executor | None = None, /, **kwargs: Any) -> list[PluginResult]:
        """Call every plugin's implementation once; each one's value, error and time.

        One :class:`PluginResult` per implementation, in call order (as
        pluggy's ``get_hookimpls()`` reversed, ``tryfirst`` first).  A plugin that
        fails does not stop the others and is not raised: its result carries
        the error.  Every plugin is called, ``firstresult`` hooks included,
        and every value is kept, ``None`` too.  A plugin the host could not
        load is left out, as from a plain call (an isolated one answers
        ``None`` on the call that tried to start it); :meth:`~pluginsdk.Host.plugins`
        says why.

        With an ``executor`` (a :class:`concurrent.futures.Executor`), each
        plugin's call is submitted to it, so plugins run at once: plugins in
        worker processes or the sandbox mostly wait on another process.  The
        results are still in call order, and ``seconds`` excludes the time a
        call waited for the executor.  It is positional-only, so no hook
        argument's name can clash with it.

        Raises:
            HookCallError: The arguments are not the spec's (before any plugin runs).
            PluginError: The hook has wrapper implementations.
        """
        kwargs = self._checked(kwargs)
        calls = [(impl, tuple(kwargs[a] for a in impl.argnames)) for impl in self._impls_in_call_order()]
        return _gather(executor, self._result, calls)

    def map_results(self, items: Sequence[Mapping[str, Any]], executor: Executor | None = None) -> list[PluginResult]:
        """:meth:`results` for a batch: each plugin gets every item, in one crossing if it is isolated.

        One :class:`PluginResult` per implementation, in call order, whose
        ``value`` is a list with one value per item (``None`` included).
        A plugin failing on one item fails for the whole batch: its ``error``
        says which item (``index``), and ``seconds`` is its time for the batch.
        ``executor`` is as for :meth:`results`.
        """
        items = self._checked_items(items)
        indices = list(range(len(items)))
        calls = [(impl, self._items_args(items, indices, impl.argnames)) for impl in self._impls_in_call_order()]
        return _gather(executor, self._batch_result, calls)

    def _result(self, impl: pluggy.HookImpl, args: _Args) -> PluginResult:
        start = perf_counter()
        try:
            value, error = impl.function(*args), None
        except PluginError as exc:
            value, error = None, exc
        except Exception as exc:
            value, error = None, _caught(impl.plugin_name, self.name, exc)
        return PluginResult(impl.plugin_name, value, error, perf_counter() - start)

    def _batch_result(self, impl: pluggy.HookImpl, args: list[_Args]) -> PluginResult:
        batch = getattr(impl.function, _BATCH_ATTR, None)
        values: list[Any] = []
        start = perf_counter()
        try:
            if batch is not None:
                values = batch(args)
            else:
                for a in args:
                    values.append(impl.function(*a))
            error = None
        except PluginError as exc:
            error = exc
        except Exception as exc:  # in-process: the item that raised is the next one
            error = _caught(impl.plugin_name, self.name, exc, index=len(values))
        return PluginResult(impl.plugin_name, None if error else values, error, perf_counter() - start)


def _gather(
    executor: Executor | None, run: Callable[[pluggy.HookImpl, Any], PluginResult], calls: list[tuple[Any, Any]]
) -> list[PluginResult]:
    """``run`` on each ``(impl, args)``, in order; at once through ``executor`` if there is one."""
    if executor is None:
        return [run(impl, args) for impl, args in calls]
    futures = [executor.submit(run, impl, args) for impl, args in calls]
    return [f.result() for f in futures]


def _caught(plugin: str, hook: str, exc: BaseException, index: int | None = None) -> PluginHookError:
    """The ``PluginHookError`` for an exception from ``plugin``'s code, chained to it as if raised from it."""
    error = hook_error(plugin, hook, exc, index=index)
    error.__cause__ = exc
    return error


def _arg_tuples(items: Sequence[Mapping[str, Any]], indices: list[int], names: tuple[str, ...]) -> list[_Args]:
    """Each selected item's arguments as a tuple in ``names`` order (the per-item cost of ``map``)."""
    if not names:
        return [() for _ in indices]
    every = len(indices) == len(items)  # the first implementation: no index needed
    if len(names) == 1:
        (name,) = names
        return [(item[name],) for item in items] if every else [(items[i][name],) for i in indices]
    get = operator.itemgetter(*names)  # returns a tuple for two or more names
    return list(map(get, items)) if every else [get(items[i]) for i in indices]


def _each(function: Callable[..., Any], items: list[_Args]) -> list[Any]:
    return [function(*a) for a in items]


def lazy_caller_class(load_pending: Callable[[str], None]) -> type[SDKHookCaller]:
    """A hook caller class that loads the hook's pending plugins on first use.

    A hook's first call imports every in-process plugin declaring it *before*
    dispatching, so ordering options in their code (``tryfirst``) count from
    the first call on.  The caller then turns itself into a plain
    :class:`SDKHookCaller`: later calls pay nothing for laziness.
    """

    def activate(caller: SDKHookCaller) -> None:
        # A function, not a method: a bound method taken before the switch
        # (``pool.submit(hook.results, ...)``) may run after it, when the
        # instance no longer has the lazy class's attributes.
        load_pending(caller.name)
        caller.__class__ = SDKHookCaller

    class LazyHookCaller(SDKHookCaller):
        __slots__ = ()

        def __call__(self, **kwargs: object) -> Any:
            activate(self)
            return SDKHookCaller.__call__(self, **kwargs)

        def call_historic(
            self,
            result_callback: Callable[[Any], None] | None = None,
            kwargs: Mapping[str, object] | None = None,
        ) -> None:
            activate(self)
            SDKHookCaller.call_historic(self, result_callback, kwargs)

        def map(self, items: Sequence[Mapping[str, Any]]) -> list[Any]:
            activate(self)
            return SDKHookCaller.map(self, items)

        def by_plugin(self, **kwargs: Any) -> dict[str, Any]:
            activate(self)
            return SDKHookCaller.by_plugin(self, **kwargs)

        def results(self, executor: Executor | None = None, /, **kwargs: Any) -> list[PluginResult]:
            activate(self)
            return SDKHookCaller.results(self, executor, **kwargs)

        def map_results(
            self, items: Sequence[Mapping[str, Any]], executor: Executor | None = None
        ) -> list[PluginResult]:
            activate(self)
            return SDKHookCaller.map_results(self, items, executor)

    return LazyHookCaller
