"""Versioned hook specifications: :func:`hookspec` and :class:`HookSpec`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, TypeVar, overload

import pluggy

from ._errors import SpecError
from ._markers import PROJECT

if TYPE_CHECKING:
    from typing import Concatenate, ParamSpec

    # PEP 696 defaults, for checkers only (typing_extensions is not a dependency):
    # a bare ``HookSpec`` or ``Host`` means ``HookSpec[Any]``, as before they were generic.
    from typing_extensions import TypeVar as _DefaultTypeVar

    from ._typed import FirstResultMarker, HistoricMarker, Hook, PlainMarker

    H = _DefaultTypeVar("H", default=Any)
    _P = ParamSpec("_P")
    _R = TypeVar("_R")
else:
    H = TypeVar("H")

__all__ = ["HookDef", "HookSpec", "hookspec", "parse_release"]

_SINCE_ATTR = "pluginsdk_since"
_SPEC_ATTR = f"{PROJECT}_spec"  # where pluggy's HookspecMarker stores its options
_spec_marker = pluggy.HookspecMarker(PROJECT)


def parse_release(version: str) -> tuple[int, ...]:
    """``"1.10"`` -> ``(1, 10)``; trailing zeros dropped so ``1.0 == 1``.

    Spec versions are plain release numbers (no pre-releases, no epochs):
    they version an API, and this keeps comparing them free of imports.
    """
    # String methods, not a regex: compiling one costs more than a host's whole spec.
    if not isinstance(version, str) or not all(p.isascii() and p.isdigit() for p in version.split(".")):
        raise SpecError(f"spec version {version!r} is not a release number like '1.2'")
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


# Typed for checkers (see pluginsdk/_typed.py): each hook becomes a descriptor
# whose caller knows the hook's arguments and result; ``firstresult=True`` and
# ``historic=True`` as literals pick the caller's shape.  At run time the
# function itself is returned, marked.
@overload
def hookspec(function: Callable[Concatenate[Any, _P], _R], /) -> Hook[_P, _R]: ...
@overload
def hookspec(
    function: None = None,
    *,
    firstresult: Literal[False] = False,
    historic: Literal[False] = False,
    since: str | None = None,
) -> PlainMarker: ...
@overload
def hookspec(
    function: None = None,
    *,
    firstresult: Literal[True],
    historic: Literal[False] = False,
    since: str | None = None,
) -> FirstResultMarker: ...
@overload
def hookspec(
    function: None = None,
    *,
    firstresult: Literal[False] = False,
    historic: Literal[True],
    since: str | None = None,
) -> HistoricMarker: ...
@overload
def hookspec(
    function: None = None,
    *,
    firstresult: bool = False,
    historic: bool = False,
    since: str | None = None,
) -> Callable[[Callable[..., Any]], Any]: ...  # options known only at run time: an untyped hook
def hookspec(
    function: Callable[..., Any] | None = None,
    *,
    firstresult: bool = False,
    historic: bool = False,
    since: str | None = None,
) -> Any:
    """Mark a method of a hooks class as a hook specification.

    ``firstresult`` and ``historic`` have pluggy's meaning; ``since`` is the
    spec version that introduced the hook (hosts on an older version don't
    have it, and plugins implementing it are refused there).

    For type checkers, the method becomes its hook's typed caller on a
    :class:`~pluginsdk.Host` of the spec (``host.hook.NAME``, ``host.ahook.NAME``),
    with the method's arguments and result; ``firstresult`` and ``historic``
    must then be written as ``True`` or ``False``.  At run time the function
    itself is returned, marked.
    """
    if since is not None:
        parse_release(since)

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        setattr(func, _SINCE_ATTR, since)
        return _spec_marker(func, firstresult=firstresult, historic=historic)

    return mark if function is None else mark(function)


class HookDef(NamedTuple):
    """One hook of a spec.

    Attributes:
        name: The hook's name.
        argnames: Its arguments, in order (``self`` excluded).
        since: Spec version that introduced it (``None``: from the start).
        firstresult: Whether the first non-``None`` result ends the call.
        historic: Whether it is a pluggy historic hook.
        function: The specification function itself.
    """

    name: str
    argnames: tuple[str, ...]
    since: str | None
    firstresult: bool
    historic: bool
    function: Callable[..., object]


def _is_project_name(name: object) -> bool:
    """Letters, digits, ``.``, ``_`` and ``-``, starting and ending with a letter or digit."""
    return (
        isinstance(name, str)
        and name.isascii()
        and name[:1].isalnum()
        and name[-1:].isalnum()
        and all(c.isalnum() or c in "._-" for c in name)
    )


def _argnames(func: Callable[..., object]) -> tuple[str, ...]:
    """Parameter names, ``self`` excluded, keyword-only ones included, read from the code object.

    Far cheaper than ``inspect.signature`` on a host's start-up path.
    """
    code = getattr(func, "__code__", None)
    if code is None:
        raise SpecError(f"hook {func!r} is not a plain function")
    names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    return tuple(names[1:] if names and names[0] == "self" else names)


def _for_pluggy(hooks: type, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` as pluggy can read it: keyword-only parameters made positional.

    pluggy ignores keyword-only parameters (its spec would have no such
    argument).  A spec may declare them so that type checkers refuse
    positional hook calls (pluggy refuses them at run time); pluggy gets an
    empty stand-in with every parameter positional, defaults last, carrying
    the original's markers.
    """
    code = func.__code__
    if not code.co_kwonlyargcount:
        return func
    positional = code.co_varnames[: code.co_argcount]
    kwonly = code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
    defaults = dict(zip(positional[len(positional) - len(func.__defaults__ or ()) :], func.__defaults__ or ()))
    defaults.update(func.__kwdefaults__ or {})
    names = [*positional, *kwonly]
    order = [n for n in names if n not in defaults] + [n for n in names if n in defaults]
    scope: dict[str, Any] = {}
    exec(f"def {func.__name__}({', '.join(order)}):\n    pass\n", scope)  # names are identifiers (a code object's)
    stand_in: Callable[..., Any] = scope[func.__name__]
    stand_in.__defaults__ = tuple(defaults[n] for n in order if n in defaults) or None
    stand_in.__dict__.update(func.__dict__)  # pluggy's and pluginsdk's markers
    stand_in.__qualname__ = f"{hooks.__qualname__}.{func.__name__}"  # a method: pluggy drops ``self``
    stand_in.__module__ = func.__module__
    stand_in.__doc__ = func.__doc__
    stand_in.__annotations__ = dict(func.__annotations__)
    return stand_in


class HookSpec(Generic[H]):
    """A named, versioned set of hooks a host offers to plugins.

    Plugins are found in the entry-point group ``group`` (``NAME.plugins`` by
    default) and declare in their manifest which spec versions they accept.

    Generic in its hooks class: ``HookSpec("textkit", "1.1", hooks=TextHooks)``
    is a ``HookSpec[TextHooks]``, and a :class:`~pluginsdk.Host` of it types
    its hook calls (see "Typed hook calls" in the docs).

    Attributes:
        name: Spec name, as plugins write it in ``requires``.
        version: This host's spec version, such as ``"1.1"``.
        group: The entry-point group plugins register under.
        hooks: The hooks class the spec was built from.
    """

    def __init__(
        self,
        name: str,
        version: str,
        hooks: type[H],
        *,
        group: str | None = None,
    ) -> None:
        if not _is_project_name(name):
            raise SpecError(f"spec name {name!r} is not a valid project name")
        self.name = name
        self.version = version
        self.release = parse_release(version)
        self.hooks: type[H] = hooks
        self.group = group or f"{name}.plugins"
        self._all = self._collect(hooks)
        self._active = {n: d for n, d in self._all.items() if d.since is None or parse_release(d.since) <= self.release}
        if not self._active:
            raise SpecError(f"spec {name!r} {version} defines no hooks (mark them with @hookspec)")
        self._types: dict[str, tuple[dict[str, Any], Any]] = {}
        self._namespace: type | None = None

    def __repr__(self) -> str:
        return f"HookSpec({self.name!r}, version={self.version!r}, group={self.group!r})"

    @staticmethod
    def _collect(hooks: type) -> dict[str, HookDef]:
        found: dict[str, HookDef] = {}
        for attr in dir(hooks):
            func = getattr(hooks, attr, None)
            opts = getattr(func, _SPEC_ATTR, None)
            if opts is None or not callable(func):
                continue
            params = _argnames(func)
            found[attr] = HookDef(
                name=attr,
                argnames=tuple(params),
                since=getattr(func, _SINCE_ATTR, None),
                firstresult=bool(opts.get("firstresult")),
                historic=bool(opts.get("historic")),
                function=func,
            )
        return found

    @property
    def hook_defs(self) -> Mapping[str, HookDef]:
        """The hooks this spec version has, by name."""
        return self._active

    def future_hook(self, name: str) -> HookDef | None:
        """The definition of a hook introduced after this spec version."""
        d = self._all.get(name)
        return d if d is not None and name not in self._active else None

    def namespace(self) -> type:
        """A class holding only this version's hooks, for pluggy's ``add_hookspecs``."""
        if self._namespace is None:
            functions = {n: _for_pluggy(self.hooks, d.function) for n, d in self._active.items()}
            self._namespace = type(self.hooks.__name__, (), functions)
        return self._namespace

    def types(self, hook: str) -> tuple[dict[str, Any], Any]:
        """Resolved argument and return annotations of ``hook`` (``Any`` when absent).

        Resolved on first use, as only boundary-crossing backends need them.
        """
        cached = self._types.get(hook)
        if cached is None:
            import typing

            d = self._active[hook]
            try:
                hints = typing.get_type_hints(d.function)
            except Exception:  # unresolvable annotations: carry plain data
                hints = {}
            cached = ({a: hints.get(a, Any) for a in d.argnames}, hints.get("return", Any))
            self._types[hook] = cached
        return cached
