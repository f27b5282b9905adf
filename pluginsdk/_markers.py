"""The marker plugin code uses: ``from pluginsdk import hookimpl``.

Guest-safe and import-free: it runs inside worker processes and the WASM
sandbox, where every import counts against start-up (pluggy and the
``typing`` it pulls in are most of a sandbox's start).  It records exactly
what ``pluggy.HookimplMarker("pluginsdk")`` records, the ``pluginsdk_impl``
options dict, so the host's pluggy reads these marks as its own; every host
spec shares that one project name, so one marker serves all hosts.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypedDict, TypeVar, overload

    from typing_extensions import Unpack

    _F = TypeVar("_F", bound=Callable[..., object])

    class _Options(TypedDict, total=False):
        """pluggy's implementation options, as keywords (for the overloads below)."""

        hookwrapper: bool
        optionalhook: bool
        tryfirst: bool
        trylast: bool
        specname: str | None
        wrapper: bool


PROJECT = "pluginsdk"
IMPL_ATTR = f"{PROJECT}_impl"


class HookimplMarker:
    """Marks functions as hook implementations (pluggy's marker, without pluggy).

    Use it bare (``@hookimpl``) or with options (``@hookimpl(tryfirst=True)``);
    either way the function is returned unchanged, its type included.

    Attributes:
        project_name: The pluggy project the marks belong to.
    """

    project_name = PROJECT

    # The overloads exist for type checkers only: at run time this module
    # imports nothing, ``typing`` included (see the module docstring).
    if TYPE_CHECKING:

        @overload
        def __call__(self, function: _F, **options: Unpack[_Options]) -> _F: ...

        @overload
        def __call__(self, function: None = ..., **options: Unpack[_Options]) -> Callable[[_F], _F]: ...

    def __call__(
        self,
        function: _F | None = None,
        *,
        hookwrapper: bool = False,
        optionalhook: bool = False,
        tryfirst: bool = False,
        trylast: bool = False,
        specname: str | None = None,
        wrapper: bool = False,
    ) -> _F | Callable[[_F], _F]:
        """Mark ``function``, or return a decorator marking functions with these options.

        The options are pluggy's: ``tryfirst``/``trylast`` move the
        implementation to the front or back of the call order; ``specname``
        implements the hook of that name under another function name;
        ``optionalhook`` tolerates a hook the spec lacks; ``wrapper`` and
        ``hookwrapper`` mark wrappers (refused when the plugin loads, as
        wrappers cannot cross an isolation boundary).
        """

        def mark(func: _F) -> _F:
            opts = {
                "wrapper": wrapper,
                "hookwrapper": hookwrapper,
                "optionalhook": optionalhook,
                "tryfirst": tryfirst,
                "trylast": trylast,
                "specname": specname,
            }
            setattr(func, IMPL_ATTR, opts)
            return func

        return mark if function is None else mark(function)


hookimpl = HookimplMarker()
"""Marks a function of a plugin module as the implementation of a hook.

Use it bare (``@hookimpl``) or with pluggy's options
(``@hookimpl(tryfirst=True)``): ``tryfirst``, ``trylast``, ``specname``,
``optionalhook``.  Wrappers are refused when the plugin loads: they cannot
cross an isolation boundary.  The function is returned unchanged, its type
included.
"""
