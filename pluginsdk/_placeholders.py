"""Placeholders in pluggy: the implementations the host registers for a plugin before (or instead of) importing it.

With :mod:`pluginsdk._dispatch`, the only module that reaches into pluggy
internals (``HookCaller._hookimpls``, ``PluginManager._name2plugin``): a
placeholder's generated functions are registered without pluggy's scan,
moved where a worker's tryfirst/trylast put them, and swapped in place for
the real implementations once an in-process plugin is imported.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pluggy

from ._markers import PROJECT, hookimpl

__all__ = ["BATCH_ATTR", "apply_ordering", "make_impl_function", "register_placeholder", "replace_impls"]

_Args = tuple[Any, ...]
#: Where a generated implementation keeps its batch function (``map`` sends all items in one crossing).
BATCH_ATTR = "__pluginsdk_batch__"

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
        setattr(impl, BATCH_ATTR, batch)
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
