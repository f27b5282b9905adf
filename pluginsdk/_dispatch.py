"""Glue between the host and pluggy's dispatch.

This is the one module that reaches into pluggy internals (``HookCaller``'s
implementation list, ``PluginManager._inner_hookexec`` and ``_name2plugin``),
so the SDK can swap a lazy placeholder for the real implementation *in
place*: after the first call, calls go straight through pluggy with nothing
of the SDK in between, and call order does not depend on which plugin
happened to load first.  pluggy is pinned to a major version for this, and
the test suite covers every path here.
"""

from __future__ import annotations

import keyword
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pluggy

from ._errors import PluginError, PluginHookError, exception_text, type_name
from ._markers import PROJECT, hookimpl

_Args = tuple[Any, ...]
_BATCH_ATTR = "__pluginsdk_batch__"


_factories: dict[tuple[str, ...], Callable[[Callable[[_Args], Any]], Callable[..., Any]]] = {}


def make_impl_function(
    name: str,
    argnames: Sequence[str],
    call: Callable[[_Args], Any],
    batch: Callable[[list[_Args]], list[Any]] | None = None,
) -> Callable[..., Any]:
    """A function pluggy sees as an implementation taking ``argnames``.

    pluggy reads argument names from the function's code object, so the
    function is compiled with real parameters (one factory per distinct
    argument list); it hands them to ``call`` as one tuple in spec order.
    """
    key = tuple(argnames)
    factory = _factories.get(key)
    if factory is None:
        if not all(a.isidentifier() and not keyword.iskeyword(a) for a in key):
            raise ValueError(f"bad argument names {key!r}")
        params = ", ".join(key)
        packed = params + ("," if len(key) == 1 else "")
        source = f"def factory(call):\n    def impl({params}):\n        return call(({packed}))\n    return impl\n"
        namespace: dict[str, Any] = {}
        exec(source, namespace)  # names checked above: identifiers only
        factory = _factories[key] = namespace["factory"]
    impl = factory(call)
    impl.__name__ = impl.__qualname__ = name
    if batch is not None:
        setattr(impl, _BATCH_ATTR, batch)
    return impl


def register_placeholder(
    pm: pluggy.PluginManager, name: str, placeholder: object, functions: Mapping[str, Callable[..., Any]]
) -> None:
    """Register ``placeholder``'s implementations without ``pm.register``.

    pluggy's register scans every attribute of the object and validates each
    implementation against its spec; these functions were generated from the
    spec itself, and with a hundred plugins that scan was most of start-up.
    """
    pm._name2plugin[name] = placeholder
    for hook, function in functions.items():
        opts = getattr(hookimpl(function), f"{PROJECT}_impl")
        impl = pluggy.HookImpl(placeholder, name, function, opts)
        caller = getattr(pm.hook, hook)
        lst = caller._hookimpls
        if not lst or not (lst[-1].tryfirst or lst[-1].wrapper or lst[-1].hookwrapper):
            # Where _add_hookimpl would put a plain implementation, without its scan
            # of the whole list (quadratic over a hundred plugins).
            lst.append(impl)
        else:
            caller._add_hookimpl(impl)


def apply_ordering(pm: pluggy.PluginManager, placeholder: object, options: Mapping[str, Mapping[str, bool]]) -> None:
    """Move ``placeholder``'s implementations where tryfirst/trylast (reported by its worker) put them."""
    for hook, opts in options.items():
        caller = getattr(pm.hook, hook, None)
        if caller is None:
            continue
        for i, old in enumerate(caller._hookimpls):
            if old.plugin is placeholder:
                tryfirst, trylast = bool(opts.get("tryfirst")), bool(opts.get("trylast"))
                if (tryfirst, trylast) != (old.tryfirst, old.trylast):
                    del caller._hookimpls[i]
                    new_opts = pluggy.HookimplOpts(**{**old.opts, "tryfirst": tryfirst, "trylast": trylast})  # type: ignore[typeddict-item]
                    caller._add_hookimpl(pluggy.HookImpl(placeholder, old.plugin_name, old.function, new_opts))
                break


def replace_impls(
    pm: pluggy.PluginManager,
    name: str,
    old_plugin: object,
    new_plugin: object,
    impls: Mapping[str, pluggy.HookImpl],
) -> None:
    """Put ``new_plugin``'s implementations where ``old_plugin``'s stand.

    Each new implementation takes the old one's position in its hook's list
    (so ordering is as if it had been registered from the start), unless its
    tryfirst/trylast options ask for another place.
    """
    for hook_name, new in impls.items():
        caller: pluggy.HookCaller = getattr(pm.hook, hook_name)
        lst = caller._hookimpls
        for i, old in enumerate(lst):
            if old.plugin is old_plugin:
                if (new.tryfirst, new.trylast) == (old.tryfirst, old.trylast):
                    lst[i] = new
                else:
                    del lst[i]
                    caller._add_hookimpl(new)
                break
        else:
            caller._add_hookimpl(new)
        if caller.is_historic():  # replay earlier historic calls, as pluggy's register does
            caller._maybe_apply_history(new)
    pm._name2plugin[name] = new_plugin


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


def hook_error(plugin: str, hook: str, exc: BaseException) -> PluginHookError:
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
    )


def format_traceback(exc: BaseException) -> str:
    """The formatted traceback of ``exc``; frames only if formatting it fails."""
    import traceback

    try:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:  # the exception's class resists the traceback module: keep the frames
        lines = ["Traceback (most recent call last):\n"]
        tb = exc.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}\n')
            tb = tb.tb_next
        return "".join(lines) + f"{type_name(type(exc))}: {exception_text(exc)}\n"


class SDKHookCaller(pluggy.HookCaller):
    """pluggy's hook caller, plus plugin attribution of errors, batches and per-plugin calls.

    ``__call__`` does what pluggy's does, with the options it reads on every
    call computed once, and one ``try`` around dispatch: exceptions raised by
    plugin code reach callers as ``PluginHookError`` without an extra frame
    on the normal path (the implementation that raised is found afterwards,
    from the traceback).
    """

    __slots__ = ("_defaults", "_firstresult")

    def __init__(self, name: str, hook_execute: Any) -> None:
        self._defaults: dict[str, object] = {}
        self._firstresult = False
        super().__init__(name, hook_execute)

    def set_specification(self, specmodule_or_class: Any, spec_opts: Any) -> None:
        super().set_specification(specmodule_or_class, spec_opts)
        assert self.spec is not None
        self._defaults = dict(getattr(self.spec, "kwargdefaults", None) or {})
        self._firstresult = bool(self.spec.opts.get("firstresult"))

    def __call__(self, **kwargs: object) -> Any:
        assert self._call_history is None, "Cannot directly call a historic hook - use call_historic instead."
        if self._defaults:
            kwargs = {**self._defaults, **kwargs}
        self._verify_all_args_are_provided(kwargs)
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

    def call_historic(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().call_historic(*args, **kwargs)
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

    def map(self, items: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Call the hook once per mapping of arguments; results in order.

        Each result is what calling the hook with that item would return
        (a list, or one value for ``firstresult`` hooks).  Plugins in worker
        processes or sandboxes receive all items in one crossing.
        """
        items = [{**self._defaults, **item} for item in items] if self._defaults else list(items)
        firstresult = self._firstresult
        results: list[Any] = [None] * len(items) if firstresult else [[] for _ in items]
        pending = list(range(len(items)))
        for impl in self._impls_in_call_order():
            if not pending:
                break
            try:
                args = _arg_tuples(items, pending, impl.argnames)
            except KeyError as exc:
                raise TypeError(f"hook {self.name!r}: an item lacks argument {exc.args[0]!r}") from None
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
        """Call the hook; return each plugin's non-``None`` result by plugin name."""
        out: dict[str, Any] = {}
        if self._defaults:
            kwargs = {**self._defaults, **kwargs}
        for impl in self._impls_in_call_order():
            try:
                args = tuple(kwargs[a] for a in impl.argnames)
            except KeyError as exc:
                raise TypeError(f"hook {self.name!r}: missing argument {exc.args[0]!r}") from None
            value = self._run(impl, impl.function, *args)
            if value is not None:
                out[impl.plugin_name] = value
        return out


def _arg_tuples(items: Sequence[Mapping[str, Any]], indices: list[int], names: tuple[str, ...]) -> list[_Args]:
    """Each selected item's arguments as a tuple in ``names`` order (the per-item cost of ``map``)."""
    if not names:
        return [() for _ in indices]
    if len(names) == 1:
        (name,) = names
        return [(items[i][name],) for i in indices]
    get = operator.itemgetter(*names)  # returns a tuple for two or more names
    return [get(items[i]) for i in indices]


def _each(function: Callable[..., Any], items: list[_Args]) -> list[Any]:
    return [function(*a) for a in items]


def lazy_caller_class(load_pending: Callable[[str], None]) -> type[SDKHookCaller]:
    """A hook caller class that loads the hook's pending plugins on first use.

    A hook's first call imports every in-process plugin declaring it *before*
    dispatching, so ordering options in their code (``tryfirst``) count from
    the first call on.  The caller then turns itself into a plain
    :class:`SDKHookCaller`: later calls pay nothing for laziness.
    """

    class LazyHookCaller(SDKHookCaller):
        __slots__ = ()

        def _activate(self) -> None:
            load_pending(self.name)
            self.__class__ = SDKHookCaller  # type: ignore[assignment]

        def __call__(self, **kwargs: object) -> Any:
            self._activate()
            return SDKHookCaller.__call__(self, **kwargs)

        def call_historic(self, *args: Any, **kwargs: Any) -> None:
            self._activate()
            SDKHookCaller.call_historic(self, *args, **kwargs)

        def map(self, items: Sequence[Mapping[str, Any]]) -> list[Any]:
            self._activate()
            return SDKHookCaller.map(self, items)

        def by_plugin(self, **kwargs: Any) -> dict[str, Any]:
            self._activate()
            return SDKHookCaller.by_plugin(self, **kwargs)

    return LazyHookCaller
