"""Importing a plugin and matching its hook implementations to the host's spec (guest side).

Guest-safe: the standard library and :mod:`pluginsdk.codec` only; typing,
inspect and importlib are imported only for what the fast paths cannot read
(a sandbox's start is mostly imports).
"""

from __future__ import annotations

import sys

from .. import codec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

_IMPL_ATTR = "pluginsdk_impl"  # where pluggy's HookimplMarker("pluginsdk") stores options


class LoadError(Exception):
    """The plugin cannot be served (import failed, hooks do not match)."""


class ArgumentError(Exception):
    """An argument could not be structured as the implementation's annotation."""

    def __init__(self, argument: str, reason: str) -> None:
        super().__init__(reason)
        self.argument = argument
        self.reason = reason


class Impl:
    """One hook implementation and which spec arguments it takes."""

    __slots__ = ("convert", "func", "indices", "opts", "whole")

    def __init__(
        self,
        func: Callable[..., Any],
        indices: tuple[int, ...],
        opts: dict[str, Any],
        n_spec: int,
        convert: Callable[[list[Any], str], list[Any]] | None = None,
    ) -> None:
        self.func = func
        self.indices = indices
        self.opts = opts
        self.convert = convert
        # Takes every spec argument in spec order, as sent: call with the args as they are.
        self.whole = indices == tuple(range(n_spec)) and convert is None

    def arguments(self, args: list[Any], hook: str) -> list[Any]:
        """This implementation's arguments out of the spec's ``args``, structured if it asks."""
        picked = [args[i] for i in self.indices]
        return picked if self.convert is None else self.convert(picked, hook)


def _function() -> None: ...


class _Probe:
    def method(self) -> None: ...


_FUNCTION = type(_function)  # types.FunctionType and MethodType, without importing types
_BOUND = type(_Probe().method)


def _argnames(func: Callable[..., Any]) -> tuple[str, ...]:
    """Arguments pluggy would pass: positional parameters without defaults.

    Read from the code object for plain functions and methods (what
    ``inspect.signature`` would say, without importing inspect); anything
    else (wrapped, callable objects, builtins) goes to inspect.
    """
    target, bound = func, False
    if type(func) is _BOUND:
        target, bound = func.__func__, True  # type: ignore[attr-defined]
    if type(target) is _FUNCTION and not hasattr(target, "__wrapped__") and not hasattr(target, "__signature__"):
        code = target.__code__
        required = code.co_varnames[: code.co_argcount - len(target.__defaults__ or ())]
        return required[1:] if bound else required
    import inspect

    params = inspect.signature(func).parameters.values()
    return tuple(
        p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    )


def _resolve(module: str, attr: str | None) -> Any:
    __import__(module)  # importlib.import_module without importing importlib
    obj: Any = sys.modules[module]
    for part in (attr or "").split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def load_impls(module: str, attr: str | None, hooks: dict[str, Sequence[str]]) -> dict[str, Impl]:
    """Import the plugin once and check its hook implementations against ``hooks``.

    Raises:
        LoadError: an implementation is not declared, takes arguments the
            spec does not have, is a wrapper, or a declared hook is missing.
        Exception: whatever importing the plugin raised.
    """
    obj = _resolve(module, attr)
    impls: dict[str, Impl] = {}
    problems: list[str] = []
    for name in dir(obj):
        func = getattr(obj, name, None)
        opts = getattr(func, _IMPL_ATTR, None)
        if not isinstance(opts, dict) or not callable(func):
            continue
        hook = opts.get("specname") or name
        if hook not in hooks:
            problems.append(f"implements {hook!r}, which it does not declare")
            continue
        if opts.get("hookwrapper") or opts.get("wrapper"):
            problems.append(f"{hook!r} is a wrapper, which cannot run across a boundary")
            continue
        spec_args = list(hooks[hook])
        wanted = _argnames(func)
        extra = [a for a in wanted if a not in spec_args]
        if extra:
            problems.append(f"{hook!r} takes {extra}, not in the spec's {spec_args}")
            continue
        indices = tuple(spec_args.index(a) for a in wanted)
        impls[hook] = Impl(func, indices, dict(opts), len(spec_args), _arg_converter(func, wanted))
    problems += [f"declares {h!r} but does not implement it" for h in hooks if h not in impls]
    if problems:
        raise LoadError("; ".join(problems))
    return impls


# Annotations that never need structuring, as objects or as strings (postponed evaluation).
_PLAIN_ANNOTATIONS = frozenset(
    {str, int, float, bool, bytes, object, list, dict, None, type(None)}
    | {"str", "int", "float", "bool", "bytes", "object", "list", "dict", "None", "Any", "typing.Any"}
)


def _arg_converter(func: Callable[..., Any], names: Sequence[str]) -> Callable[[list[Any], str], list[Any]] | None:
    """Structure the arguments ``func`` annotates with classes (attrs, enums...), or ``None``.

    Arguments cross as plain data; an implementation that annotates one with
    a class gets an instance (built by cattrs), as it would in-process.
    """
    annotations = getattr(func, "__annotations__", None) or {}
    try:
        if all(annotations.get(n, "str") in _PLAIN_ANNOTATIONS for n in names):
            return None  # the common case, decided without importing typing
    except TypeError:  # an unhashable annotation: let typing judge it
        pass
    targets = codec.argument_types(func, names)
    if not targets:
        return None

    def convert(values: list[Any], hook: str) -> list[Any]:
        for i, name, tp in targets:
            try:
                values[i] = codec.structure(values[i], tp)
            except codec.StructureError as exc:  # the path inside the argument travels after its name
                raise ArgumentError(name + exc.path, exc.reason) from None
        return values

    return convert
