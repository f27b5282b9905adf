"""The value contract: what crosses a boundary, and where a value that cannot went wrong.

Shared by the host and the guest (it is one of :data:`pluginsdk.guest.SHARED_MODULES`):
the standard library only, and ``typing`` only once something has failed.

Nothing here runs on the happy path.  Encoding and structuring run at full
speed in :mod:`pluginsdk.codec`; only after one of them has failed is the
value walked again, here, to find the part to blame: the path inside the value
(``[2]['when']``), the part's type, and what would have been allowed.  The walk
asks the real codec (the ``encode`` or ``structure`` it is given) about each
part, so it blames exactly what the codec refused.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

__all__ = [
    "ALLOWED",
    "AS_IS",
    "BY_ANNOTATION",
    "RETURN",
    "split_location",
    "unencodable",
    "unreadable",
]

#: The ``argument`` of a :class:`~pluginsdk.CodecError` about a hook's result.
RETURN = "return value"
#: What crosses every boundary unchanged (tuples arrive as lists; see docs/values.md).
AS_IS = "None, bool, int (64 bits), float, str, bytes, list, tuple, dict"
#: What crosses as plain data and is rebuilt from the annotation on the receiving side.
BY_ANNOTATION = "dataclasses, attrs classes, enums, set, frozenset, datetime, date, time"
#: The list every "cannot cross" message ends with.
ALLOWED = f"what crosses: {AS_IS}; rebuilt by annotation: {BY_ANNOTATION}"

# The walk descends at most this deep (msgpack itself refuses 512 levels of nesting).
_MAX_DEPTH = 1024
_REPR_MAX = 40


def _short(value: Any) -> str:
    """``repr(value)``, cut to a readable length; never raises."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{_type_label(type(value))} object>"
    return text if len(text) <= _REPR_MAX else text[: _REPR_MAX - 3] + "..."


def _type_label(cls: type) -> str:
    """``module.Qualname`` of ``cls`` (``Qualname`` for builtins); never raises."""
    name = getattr(cls, "__qualname__", None)
    module = getattr(cls, "__module__", None)
    if not isinstance(name, str):
        name = "<unnamed class>"
    if not isinstance(module, str) or module == "builtins":
        return name
    return f"{module}.{name}"


def _annotation_label(tp: Any) -> str:
    """An annotation as a person writes it (``dict[str, int]``, ``Finding``)."""
    if isinstance(tp, type) and not getattr(tp, "__args__", None):
        return getattr(tp, "__qualname__", None) or repr(tp)
    return repr(tp).replace("typing.", "")


def _cause(exc: BaseException) -> str:
    """The innermost reason of a (cattrs) failure, as one line."""
    seen = 0
    while seen < 32 and getattr(exc, "exceptions", None):  # an exception group: its first leaf says why
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
        seen += 1
    if isinstance(exc, KeyError) and exc.args:
        return f"missing key {_short(exc.args[0])}"
    try:
        text = str(exc)
    except Exception:
        text = ""
    name = _type_label(type(exc))
    return f"{name}: {text}" if text else name


# --- what cannot be encoded ----------------------------------------------------


def _encodable_children(node: Any, unstructure: Callable[[Any], Any]) -> Iterator[tuple[str, Any]]:
    """``(path segment, part)`` for each part the encoder would encode of ``node``."""
    if isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            yield f"[{i}]", item
    elif isinstance(node, dict):
        for key, item in node.items():
            yield f"[key {_short(key)}]", key
            yield f"[{_short(key)}]", item
    elif hasattr(node, "__attrs_attrs__") or hasattr(node, "__dataclass_fields__"):
        for name in _field_names(type(node)):  # by attribute: its class's unstructuring may be what fails
            yield f".{name}", getattr(node, name, None)
    elif not isinstance(node, (str, bytes, bytearray, memoryview, int, float)) and node is not None:
        try:
            plain = unstructure(node)
        except Exception:
            return
        if plain is node or type(plain) is type(node):
            return
        if isinstance(plain, dict) and all(type(k) is str for k in plain):  # an object's fields
            for name, item in plain.items():
                yield f".{name}", item
        else:
            yield from _encodable_children(plain, unstructure)


def unencodable(value: Any, encode: Callable[[Any], Any], unstructure: Callable[[Any], Any]) -> tuple[str, str] | None:
    """``(path, reason)`` for the part of ``value`` that ``encode`` refuses; ``None`` if it encodes.

    The path is empty when ``value`` itself is to blame; the reason names the
    part's type, says why and lists what crosses.
    """
    try:
        encode(value)
        return None
    except Exception as exc:
        error: BaseException = exc
    path: list[str] = []
    node = value
    for _ in range(_MAX_DEPTH):
        for segment, part in _encodable_children(node, unstructure):
            try:
                encode(part)
            except Exception as exc:
                path.append(segment)
                node, error = part, exc
                break
        else:
            break
    return "".join(path), f"{_type_label(type(node))} cannot cross ({_cause(error)}); {ALLOWED}"


# --- what cannot be read as its annotation --------------------------------------


def _fields(cls: type) -> dict[str, Any] | None:
    """An attrs class's or dataclass's fields and their resolved types, or ``None`` for other types."""
    if not (hasattr(cls, "__attrs_attrs__") or hasattr(cls, "__dataclass_fields__")):
        return None
    import typing

    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        return None
    return {n: hints.get(n, typing.Any) for n in _field_names(cls)}


def _field_names(cls: type) -> list[str]:
    """The field names of an attrs class or a dataclass."""
    attrs_fields = getattr(cls, "__attrs_attrs__", None)
    if attrs_fields is not None:
        return [a.name for a in attrs_fields]
    return list(getattr(cls, "__dataclass_fields__", ()))


def _matches_shape(node: Any, tp: Any) -> bool:
    """Whether ``node`` has the shape annotation ``tp`` asks for (a list for ``list[X]``...)."""
    import typing

    origin = typing.get_origin(tp) or tp
    if not isinstance(origin, type):
        return False
    if isinstance(node, origin):
        return True
    if isinstance(node, list):  # sequences and sets arrive as lists
        return issubclass(origin, (list, tuple, set, frozenset)) or origin.__module__ == "collections.abc"
    return isinstance(node, dict) and _fields(origin) is not None


def _typed_children(node: Any, tp: Any) -> Iterator[tuple[str, Any, Any]]:
    """``(path segment, part, the part's annotation)`` for each part of ``node`` that ``tp`` types."""
    import collections.abc as cabc
    import types
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        yield "", node, args[0]
    elif origin in (typing.Union, types.UnionType):
        members = [m for m in args if m is not type(None) and _matches_shape(node, m)]
        if len(members) == 1:  # the one member this value could be: blame within it
            yield "", node, members[0]
    elif origin is tuple and isinstance(node, (list, tuple)):
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(node)
        if len(args) == len(node):
            for i, (item, item_tp) in enumerate(zip(node, args)):
                yield f"[{i}]", item, item_tp
    elif origin in (dict, cabc.Mapping, cabc.MutableMapping) and len(args) == 2 and isinstance(node, dict):
        for key, item in node.items():
            yield f"[key {_short(key)}]", key, args[0]
            yield f"[{_short(key)}]", item, args[1]
    elif origin is not None and len(args) == 1 and isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            yield f"[{i}]", item, args[0]
    elif origin is None and isinstance(tp, type) and isinstance(node, dict):
        fields = _fields(tp)
        for name, field_tp in (fields or {}).items():
            if name in node:
                yield f"[{_short(name)}]", node[name], field_tp


def unreadable(value: Any, tp: Any, structure: Callable[[Any, Any], Any]) -> tuple[str, str] | None:
    """``(path, reason)`` for the part of ``value`` that ``structure`` cannot read as its annotation.

    ``structure(part, annotation)`` raises for what it cannot read; ``None``
    if ``value`` reads as ``tp``.
    """
    try:
        structure(value, tp)
        return None
    except Exception as exc:
        error: BaseException = exc
    path: list[str] = []
    node, node_tp = value, tp
    for _ in range(_MAX_DEPTH):
        for segment, part, part_tp in _typed_children(node, node_tp):
            try:
                structure(part, part_tp)
            except Exception as exc:
                path.append(segment)
                node, node_tp, error = part, part_tp, exc
                break
        else:
            break
    got = f"{_type_label(type(node))} {_short(node)}"
    return "".join(path), f"expected {_annotation_label(node_tp)} as annotated, got {got} ({_cause(error)})"


def split_location(argument: str | None) -> tuple[str, str]:
    """``(argument, path)`` out of an error frame's ``argument`` field (``"doc['items'][0]"``).

    A guest names the part of a value it could not handle by appending its
    path to the argument's name (or to :data:`RETURN`); ``None`` is the return value.
    """
    if not argument:
        return RETURN, ""
    if argument.startswith(RETURN):
        return RETURN, argument[len(RETURN) :]
    end = 0
    while end < len(argument) and (argument[end].isalnum() or argument[end] == "_"):
        end += 1
    return (argument[:end], argument[end:]) if end else (argument, "")
