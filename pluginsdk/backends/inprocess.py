"""The ``inprocess`` backend: import the plugin into the host and call it directly.

With ``check_values`` (``Host(..., check_values=True)``, on in the pytest
kit), each implementation is called as an isolated level calls it: the
arguments and the result round-trip through the codec's encode and decode,
arguments are structured by the implementation's annotations and results by
the spec's, so a set comes back as a list, a bad value raises the same
:class:`~pluginsdk.CodecError` (see docs/values.md), and a plugin's exception
is a :class:`~pluginsdk.PluginHookError` with its batch index.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pluggy

from .. import codec
from .._dispatch import hook_error
from .._errors import CodecError, PluginLoadError, exception_text, format_traceback, type_name
from .._markers import PROJECT
from .._placeholders import make_impl_function
from .._resolve import resolve
from .._values import RETURN
from ..config import BackendOptions
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
        impls = collect_impls(t.spec.namespace(), obj, t.name, list(t.hooks))
        options = t.options if isinstance(t.options, BackendOptions) else BackendOptions.from_mapping(t.options)
        if options.check_values:
            impls = {hook: self._checked(hook, impl) for hook, impl in impls.items()}
        self.impls = impls

    def _checked(self, hook: str, impl: pluggy.HookImpl) -> pluggy.HookImpl:
        """``impl`` behind a function taking the spec's arguments and applying the value contract."""
        spec_args = tuple(self.target.hooks[hook])
        returns = self.target.spec.types(hook)[1]
        checked = _Checked(self.target.name, hook, impl.function, spec_args, impl.argnames, returns)
        function = make_impl_function(hook, spec_args, checked.call, checked.batch)
        return pluggy.HookImpl(impl.plugin, impl.plugin_name, function, impl.opts)

    def call(self, hook: str, args: tuple[Any, ...], timed: bool = False) -> Any:
        self.start()
        assert self.impls is not None
        impl = self.impls[hook]
        kwargs = dict(zip(self.target.hooks[hook], args))
        return impl.function(*[kwargs[a] for a in impl.argnames])

    def call_batch(self, hook: str, items: Sequence[tuple[Any, ...]], timed: bool = False) -> list[Any]:
        return [self.call(hook, args) for args in items]

    def close(self) -> None:
        """Nothing to release: an imported module stays imported."""


def _may_stream(annotation: Any) -> bool:
    """Whether an isolated level streams an iterator result of a hook returning ``annotation``."""
    return annotation is Any or annotation is object or codec.is_stream_type(annotation)


class _Checked:
    """One implementation called as a worker or the sandbox would call it (see the module docstring).

    The same steps and the same codec functions as the isolated levels, in
    the same order: the host encodes the spec's arguments, the guest decodes
    them, structures the ones its implementation annotates, calls it, lists an
    iterator result (or streams it, for a hook whose spec returns an
    iterator), encodes the result; the host decodes it and structures it by
    the spec's return annotation.
    """

    def __init__(
        self,
        plugin: str,
        hook: str,
        function: Callable[..., Any],
        spec_args: tuple[str, ...],
        impl_args: Sequence[str],
        returns: Any,
    ) -> None:
        self.plugin, self.hook, self.function, self.spec_args = plugin, hook, function, spec_args
        self.indices = tuple(spec_args.index(a) for a in impl_args)
        self.arg_types = codec.argument_types(function, impl_args)
        self.stream = _may_stream(returns)
        self.returns = codec.item_type(returns) if self.stream else returns
        self.plain = codec.plain_types(self.returns)

    # -- the host sends the arguments; the guest reads them -------------------------
    def _cross_arguments(self, items: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
        try:
            sent: list[list[Any]] = codec.decode(codec.encode(list(items)))
        except Exception as exc:
            try:
                for args in items:
                    codec.encode_args(args, self.spec_args, self.hook)  # raises, naming the argument and the path
            except CodecError as bad:
                bad.plugin = self.plugin
                raise bad from None
            raise CodecError(codec.describe_error(exc), plugin=self.plugin, hook=self.hook) from None
        return sent

    def _run(self, args: list[Any], index: int | None, stream: bool) -> Any:
        picked = [args[i] for i in self.indices]
        for i, name, tp in self.arg_types:
            try:
                picked[i] = codec.structure(picked[i], tp)
            except codec.StructureError as exc:
                raise CodecError(
                    exc.reason, plugin=self.plugin, hook=self.hook, argument=name, path=exc.path, index=index
                ) from None
        try:
            result = self.function(*picked)
            if type(result) in _PLAIN or not isinstance(result, Iterator) or stream:
                return result
            return list(result)  # not a streaming hook: the whole result, as a worker sends it
        except Exception as exc:
            raise hook_error(self.plugin, self.hook, exc, index=index) from exc

    # -- the guest sends the result; the host reads it -------------------------------
    def _cross_result(self, value: Any, index: int | None, *, listed: bool = False) -> Any:
        try:
            plain = codec.decode(codec.encode(value))
        except Exception as exc:
            raise codec.unencodable_error(value, exc, hook=self.hook, plugin=self.plugin, index=index) from None
        if self.stream and not listed:
            return [self._read(v, index) for v in plain] if isinstance(plain, list) else plain
        return self._read(plain, index)

    def _read(self, plain: Any, index: int | None) -> Any:
        if plain is None or (self.plain is not None and type(plain) in self.plain):
            return plain
        try:
            return codec.structure(plain, self.returns)
        except codec.StructureError as exc:
            raise CodecError(
                exc.reason, plugin=self.plugin, hook=self.hook, argument=RETURN, path=exc.path, index=index
            ) from None

    def _items(self, it: Iterator[Any]) -> Iterator[Any]:
        """A streamed result: each item crosses on its own, as in a stream's chunks."""
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except Exception as exc:
                raise hook_error(self.plugin, self.hook, exc) from exc
            yield self._cross_result(item, None, listed=True)

    # -- what pluggy calls -----------------------------------------------------------
    def call(self, args: tuple[Any, ...]) -> Any:
        """One call, arguments in spec order."""
        (sent,) = self._cross_arguments([args])
        result = self._run(sent, None, self.stream)
        if self.stream and type(result) not in _PLAIN and isinstance(result, Iterator):
            return self._items(result)
        return self._cross_result(result, None)

    def batch(self, items: list[tuple[Any, ...]]) -> list[Any]:
        """A batch (``map``): every item runs, then every result crosses, as in one BATCH request."""
        results = [self._run(args, index, False) for index, args in enumerate(self._cross_arguments(items))]
        return [self._cross_result(value, index) for index, value in enumerate(results)]


_PLAIN = frozenset((type(None), bool, int, float, str, bytes, list, dict, tuple))
