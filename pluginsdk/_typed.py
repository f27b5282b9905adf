"""What a type checker sees of ``host.hook.NAME`` and ``host.ahook.NAME`` (see docs/typed-calls.md).

Nothing here runs in a host: :func:`~pluginsdk.hookspec` returns the
function it marks, and ``host.hook`` is pluggy's relay of
:class:`~pluginsdk._dispatch.SDKHookCaller` objects.  These protocols only
describe them, per hook, for checkers; the SDK imports this module under
``TYPE_CHECKING`` alone.

How one hooks class gives two typed views, with nothing but plain typing:
``hookspec`` turns each ``def NAME(self, ...) -> R`` into a descriptor
(:class:`Hook`, :class:`FirstResultHook` or :class:`HistoricHook`).
``Host[H].hook`` is typed as an *instance* of the hooks class ``H``, so
``host.hook.NAME`` reads the descriptor through an instance and gets a sync
caller; ``Host[H].ahook`` is typed as the *class* ``type[H]``, so
``host.ahook.NAME`` reads it through the class and gets the async caller.
The hook's parameters travel as a ``ParamSpec`` (``self`` dropped), its
result type as ``R``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar, overload

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from ._dispatch import PluginResult

__all__ = [
    "AsyncFirstResultCaller",
    "AsyncHistoricCaller",
    "AsyncHookCaller",
    "FirstResultCaller",
    "FirstResultHook",
    "HistoricCaller",
    "HistoricHook",
    "Hook",
    "HookCaller",
]

P = ParamSpec("P")
R = TypeVar("R")

if TYPE_CHECKING:
    # The hooks class's methods take ``self`` first; callers take the rest.
    _Spec = Callable[Concatenate[Any, P], R]
    # Items of a batch stay untyped: a ParamSpec cannot be turned into a TypedDict.
    _Items = Sequence[Mapping[str, Any]]


# -- sync callers: ``host.hook.NAME`` ------------------------------------------


class _Calls(Protocol[P, R]):
    """What every hook's caller has, whatever its options."""

    def by_plugin(self, *args: P.args, **kwargs: P.kwargs) -> dict[str, R]:
        """Each plugin's non-``None`` result, by plugin name."""
        ...

    def results(self, executor: Executor | None = None, /, *args: P.args, **kwargs: P.kwargs) -> list[PluginResult]:
        """Each plugin's value, error and time."""
        ...

    def map_results(self, items: _Items, executor: Executor | None = None) -> list[PluginResult]:
        """:meth:`results` for a batch."""
        ...


class HookCaller(_Calls[P, R], Protocol[P, R]):
    """``host.hook.NAME`` for a plain hook: one result per plugin."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> list[R]: ...

    def map(self, items: _Items) -> list[list[R]]:
        """One call per item: what each call would return, in order."""
        ...


class FirstResultCaller(_Calls[P, R], Protocol[P, R]):
    """``host.hook.NAME`` for a ``firstresult`` hook: the first non-``None`` result, if any."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R | None: ...

    def map(self, items: _Items) -> list[R | None]:
        """One call per item: what each call would return, in order."""
        ...


class HistoricCaller(_Calls[P, R], Protocol[P, R]):
    """``host.hook.NAME`` for a ``historic`` hook: called with ``call_historic`` (a direct call fails)."""

    def call_historic(
        self, result_callback: Callable[[R], None] | None = None, kwargs: Mapping[str, Any] | None = None
    ) -> None:
        """pluggy's ``call_historic``: ``kwargs`` is a mapping, so its names are checked when it runs."""

    def map(self, items: _Items) -> list[list[R]]:
        """One call per item: what each call would return, in order."""
        ...


# -- async callers: ``host.ahook.NAME`` ----------------------------------------


class _AsyncCalls(Protocol[P, R]):
    async def by_plugin(self, *args: P.args, **kwargs: P.kwargs) -> dict[str, R]:
        """Each plugin's non-``None`` result, by plugin name."""
        ...

    async def results(self, *args: P.args, **kwargs: P.kwargs) -> list[PluginResult]:
        """Each plugin's value, error and time."""
        ...

    async def map_results(self, items: _Items) -> list[PluginResult]:
        """``results`` for a batch."""
        ...


class AsyncHookCaller(_AsyncCalls[P, R], Protocol[P, R]):
    """``host.ahook.NAME`` for a plain hook: awaitables of what :class:`HookCaller` returns."""

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> list[R]: ...

    async def map(self, items: _Items) -> list[list[R]]:
        """One call per item: what each call would return, in order."""
        ...


class AsyncFirstResultCaller(_AsyncCalls[P, R], Protocol[P, R]):
    """``host.ahook.NAME`` for a ``firstresult`` hook."""

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R | None: ...

    async def map(self, items: _Items) -> list[R | None]:
        """One call per item: what each call would return, in order."""
        ...


class AsyncHistoricCaller(_AsyncCalls[P, R], Protocol[P, R]):
    """``host.ahook.NAME`` for a ``historic`` hook: no direct call (use ``host.hook.NAME.call_historic``)."""

    async def map(self, items: _Items) -> list[list[R]]:
        """One call per item: what each call would return, in order."""
        ...


# -- the descriptors ``hookspec`` makes of a hooks class's methods -------------
# Read through an instance (``host.hook``): the sync caller; through the class
# (``host.ahook``): the async one.


class Hook(Protocol[P, R]):
    """A plain hook of a hooks class, as checkers see it."""

    @overload
    def __get__(self, instance: None, owner: type[Any], /) -> AsyncHookCaller[P, R]: ...
    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None, /) -> HookCaller[P, R]: ...


class FirstResultHook(Protocol[P, R]):
    """A ``firstresult`` hook of a hooks class, as checkers see it."""

    @overload
    def __get__(self, instance: None, owner: type[Any], /) -> AsyncFirstResultCaller[P, R]: ...
    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None, /) -> FirstResultCaller[P, R]: ...


class HistoricHook(Protocol[P, R]):
    """A ``historic`` hook of a hooks class, as checkers see it."""

    @overload
    def __get__(self, instance: None, owner: type[Any], /) -> AsyncHistoricCaller[P, R]: ...
    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None, /) -> HistoricCaller[P, R]: ...


# -- what ``hookspec(...)`` with options returns -------------------------------


class PlainMarker(Protocol):
    def __call__(self, function: _Spec[P, R], /) -> Hook[P, R]: ...


class FirstResultMarker(Protocol):
    def __call__(self, function: _Spec[P, R], /) -> FirstResultHook[P, R]: ...


class HistoricMarker(Protocol):
    def __call__(self, function: _Spec[P, R], /) -> HistoricHook[P, R]: ...
