"""Values back from the wire by annotation: the spec's return types on the host, parameter types in a guest.

Guest-safe, like :mod:`pluginsdk.codec` (which re-exports this module's
public names): the standard library only at module level; ``typing`` and
``cattrs`` are imported on first use.  A value of a plain annotation
(``str``, ``int | None``, ``list[str]``...) arrives as it is; cattrs runs
only for classes the wire cannot carry as such (attrs classes, enums,
tuples, sets, dates...).
"""

from __future__ import annotations

import sys

from ._errors import CodecError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

#: Types that cross the wire as they are.
PLAIN_TYPES = (type(None), bool, int, float, str, bytes)
_PLAIN_TYPES = PLAIN_TYPES
_converter: Any = None


def get_converter() -> Any:
    """The private cattrs converter, built on first non-plain value."""
    global _converter
    if _converter is None:
        import cattrs

        conv = cattrs.Converter()
        # Sets have no msgpack type; they cross as arrays (structured back from
        # the annotation on the host).
        conv.register_unstructure_hook(set, lambda v: [conv.unstructure(x) for x in v])
        conv.register_unstructure_hook(frozenset, lambda v: [conv.unstructure(x) for x in v])
        # Dates and times cross as ISO 8601 text, rebuilt by the annotation (docs/values.md).
        import datetime as dt

        for cls in (dt.datetime, dt.date, dt.time):
            conv.register_unstructure_hook(cls, cls.isoformat)
            conv.register_structure_hook(cls, _iso_reader(cls))
        _converter = conv
    return _converter


def _iso_reader(cls: Any) -> Callable[[Any, Any], Any]:
    """A cattrs structure hook reading ``cls`` (a date, time or datetime) from its ISO text."""

    def read(value: Any, _: Any) -> Any:
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            raise TypeError(f"expected ISO 8601 text, got {type(value).__qualname__}")
        return cls.fromisoformat(value)

    return read


_ITER_ORIGINS: tuple[Any, ...] = ()


def _is_any(tp: Any) -> bool:
    """``tp is typing.Any``, without importing typing (an annotation of Any implies it is loaded)."""
    typing = sys.modules.get("typing")
    return typing is not None and tp is typing.Any


def item_type(annotation: Any) -> Any:
    """The item type of an ``Iterator[X]``/``Iterable[X]``/``Generator[X, ...]`` return annotation.

    ``Any`` when the annotation is not an iterator type or has no argument.
    """
    import typing

    global _ITER_ORIGINS
    if not _ITER_ORIGINS:
        import collections.abc as cabc

        _ITER_ORIGINS = (cabc.Iterator, cabc.Iterable, cabc.Generator, cabc.AsyncIterator)
    origin = typing.get_origin(annotation)
    if origin in _ITER_ORIGINS:
        args = typing.get_args(annotation)
        return args[0] if args else typing.Any
    return typing.Any


def is_stream_type(annotation: Any) -> bool:
    """Whether a hook returning ``annotation`` streams: an ``Iterator``, ``Iterable`` or ``Generator`` type."""
    import typing

    item_type(annotation)  # loads _ITER_ORIGINS
    return annotation in _ITER_ORIGINS or typing.get_origin(annotation) in _ITER_ORIGINS


def needs_structuring(tp: Any) -> bool:
    """Whether values annotated ``tp`` need cattrs to become what the annotation says.

    False for ``Any`` and plain data (``str``, ``list[int]``, ``dict[str, float | None]``...),
    which arrive as they are; true when a class the wire cannot carry as such
    appears (attrs classes, enums, tuples, sets...).
    """
    if tp is object or tp in _PLAIN_TYPES or _is_any(tp):
        return False
    import typing

    origin = typing.get_origin(tp)
    if origin is None:
        return isinstance(tp, type) and tp not in (list, dict)
    if origin in (list, dict) or _is_union(tp) or origin in _plain_abcs():
        return any(needs_structuring(arg) for arg in typing.get_args(tp) if arg is not Ellipsis)
    return True


def _plain_abcs() -> tuple[Any, ...]:
    import collections.abc as cabc

    return (cabc.Sequence, cabc.MutableSequence, cabc.Mapping, cabc.MutableMapping, cabc.Iterable, cabc.Collection)


def _needs_structuring(tp: Any, value: Any) -> bool:
    if tp is object or _is_any(tp):
        return False
    if tp in _PLAIN_TYPES:
        return type(value) is not tp
    return True


def from_wire(value: Any, tp: Any, *, hook: str, argument: str = "return value", plugin: str | None = None) -> Any:
    """Structure plain ``value`` as ``tp`` (a spec annotation); :class:`CodecError` if it can't be.

    The error names where in ``value`` the part that cannot be read is.
    ``None`` passes whatever the annotation: a hook implementation returning
    ``None`` means "no result" to pluggy.
    """
    try:
        return structure(value, tp)
    except StructureError as exc:
        raise CodecError(exc.reason, plugin=plugin, hook=hook, argument=argument, path=exc.path) from None


class StructureError(ValueError):
    """A value cannot be read as its annotation.

    Attributes:
        path: Where in the value the part to blame is (``"[2]['when']"``; empty: the value itself).
        reason: Why, naming the annotation and the part's type.
    """

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


def _structure_raw(value: Any, tp: Any) -> Any:
    if value is None or not _needs_structuring(tp, value):
        return value
    return get_converter().structure(value, tp)


def structure(value: Any, tp: Any) -> Any:
    """Plain ``value`` as ``tp``; :class:`StructureError` (a ``ValueError``) saying where and why if it cannot be.

    ``None`` always passes.  The path is found only after a failure, by
    walking the value again (:mod:`pluginsdk._values`).
    """
    if value is None or not _needs_structuring(tp, value):
        return value
    try:
        return get_converter().structure(value, tp)
    except Exception as exc:
        error = exc
    from . import _values

    found = _values.unreadable(value, tp, _structure_raw)
    if found is None:  # it read the second time: report the first failure as it was
        raise StructureError(f"cannot be read as {_type_name(tp)}: {type(error).__name__}: {error}") from None
    raise StructureError(found[1], found[0]) from None


def converter(tp: Any, *, hook: str, plugin: str | None = None) -> Callable[[Any], Any] | None:
    """A function structuring one wire value as ``tp``, or ``None`` when values pass as they are.

    Plain annotations (``str``, ``int | None``...) cost one type check per
    value; cattrs runs only when the value is not already of such a type.
    ``plugin`` is named in the errors it raises.
    """
    if tp is object or _is_any(tp):
        return None
    plain = plain_types(tp)
    if plain is not None:
        return lambda v: v if type(v) in plain else from_wire(v, tp, hook=hook, plugin=plugin)
    return lambda v: from_wire(v, tp, hook=hook, plugin=plugin)


def argument_types(func: Callable[..., Any], names: Sequence[str]) -> list[tuple[int, str, Any]]:
    """``(position, name, annotation)`` of each of ``func``'s arguments ``names`` that needs structuring.

    Arguments cross as plain data; an implementation that annotates one with
    a class (attrs, enum, tuple...) gets an instance, as it would in-process.
    Unresolvable annotations count as none: the implementation gets plain data.
    """
    import typing

    try:
        hints = typing.get_type_hints(func)
    except Exception:
        return []
    return [(i, n, hints[n]) for i, n in enumerate(names) if n in hints and needs_structuring(hints[n])]


def plain_types(tp: Any) -> frozenset[type] | None:
    """The types a value of annotation ``tp`` arrives as unchanged (``int | None``...), if all plain."""
    import typing

    members = typing.get_args(tp) if _is_union(tp) else (tp,)
    return frozenset(members) if all(m in _PLAIN_TYPES for m in members) else None


def _is_union(tp: Any) -> bool:
    import types
    import typing

    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)
