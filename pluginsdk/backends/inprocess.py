"""The ``inprocess`` backend: import the plugin into the host and call it directly."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pluggy

from .._errors import PluginLoadError, exception_text, format_traceback, type_name
from .._markers import PROJECT
from .._resolve import resolve
from .base import Backend

__all__ = ["InProcessBackend", "collect_impls"]


# One scratch manager per spec version validates every plugin loaded for it.
_scratch: dict[type, pluggy.PluginManager] = {}
_scratch_lock = threading.Lock()


def collect_impls(
    spec_namespace: type,
    plugin: object,
    name: str,
    declared: Sequence[str],
) -> dict[str, pluggy.HookImpl]:
    """Validate ``plugin``'s hook implementations with pluggy; return them by hook.

    A scratch plugin manager holding only this spec does the validation, so
    pluggy's own rules (argument names, unknown hooks) apply and its messages
    reach the user.  The implementations must match the manifest's ``hooks``.
    """
    with _scratch_lock:
        pm = _scratch.get(spec_namespace)
        if pm is None:
            pm = _scratch[spec_namespace] = pluggy.PluginManager(PROJECT)
            pm.add_hookspecs(spec_namespace)
        try:
            pm.register(plugin, name=name)
            pm.check_pending()
            collected = [(c.name, c.get_hookimpls()[0]) for c in pm.get_hookcallers(plugin) or ()]
        except pluggy.PluginValidationError as exc:
            raise PluginLoadError(str(exc), plugin=name) from None
        finally:
            if pm.get_plugin(name) is not None:
                pm.unregister(name=name)
    impls: dict[str, pluggy.HookImpl] = {}
    for hook, impl in collected:
        if impl.wrapper or impl.hookwrapper:
            raise PluginLoadError(
                f"hook {hook!r} is a wrapper; plugins run at any isolation level, where wrappers cannot cross",
                plugin=name,
            )
        impls[hook] = impl
    missing = sorted(set(declared) - impls.keys())
    extra = sorted(impls.keys() - set(declared))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"declares {missing} but does not implement them")
        if extra:
            parts.append(f"implements {extra} but its manifest does not declare them")
        raise PluginLoadError("manifest and code disagree: " + "; ".join(parts), plugin=name)
    return impls


class InProcessBackend(Backend):
    """Runs the plugin's code in the host process itself.

    The host splices the implementations this backend loads straight into
    its plugin manager, so after loading, calls don't pass through here.
    """

    isolation = "inprocess"
    impls: dict[str, pluggy.HookImpl] | None = None
    plugin_object: Any = None

    def start(self) -> None:
        if self.impls is not None:
            return
        t = self.target
        try:
            obj = resolve(t.module, t.attr)
        except BaseException as exc:  # the plugin's module body may raise anything, even SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise PluginLoadError(
                f"import of {t.module}{':' + t.attr if t.attr else ''} failed: "
                f"{type_name(type(exc))}: {exception_text(exc)}",
                plugin=t.name,
                traceback=format_traceback(exc),
            ) from None
        self.plugin_object = obj
        self.impls = collect_impls(t.spec.namespace(), obj, t.name, list(t.hooks))

    def call(self, hook: str, args: tuple[Any, ...]) -> Any:
        self.start()
        assert self.impls is not None
        impl = self.impls[hook]
        kwargs = dict(zip(self.target.hooks[hook], args))
        return impl.function(*[kwargs[a] for a in impl.argnames])

    def call_batch(self, hook: str, items: Sequence[tuple[Any, ...]]) -> list[Any]:
        return [self.call(hook, args) for args in items]

    def close(self) -> None:
        """Nothing to release: an imported module stays imported."""
