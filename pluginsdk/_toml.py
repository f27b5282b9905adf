"""Reading the SDK's TOML files (manifests, host policy) into typed values.

One private cattrs converter, never the global one, for host policy files:
unknown keys are errors (a typo must not be silently ignored), TOML integers
are accepted where a float is meant, and nothing else is coerced.  It is
built on first use, so reading a file costs no cattrs import.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

TYPE_CHECKING = False
if TYPE_CHECKING:
    import cattrs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["TOMLDecodeError", "TooLarge", "converter", "describe_error", "load"]

TOMLDecodeError = tomllib.TOMLDecodeError


class TooLarge(Exception):
    """A file is larger than the caller accepts (raised before it is read whole)."""


def load(path: str | Path, *, max_bytes: int | None = None) -> dict[str, Any]:
    """Parse the TOML file at ``path``; with ``max_bytes``, refuse a larger file unread.

    The size is judged by reading at most ``max_bytes + 1`` bytes, not by
    ``stat``: a FIFO or ``/dev/zero`` has no size to stat.
    """
    with open(path, "rb") as f:
        raw = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(raw) > max_bytes:
        raise TooLarge(f"over {max_bytes} bytes")
    data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    return data


def _number(value: object, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected a whole number, got {value!r}")
    return kind(value)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _names(value: object) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of names, got {value!r}")
    return frozenset(value)


_converter: cattrs.Converter | None = None


def converter() -> cattrs.Converter:
    """The SDK's private converter for TOML data."""
    global _converter
    if _converter is None:
        _converter = _make()
    return _converter


def _make() -> cattrs.Converter:
    import cattrs
    from cattrs.cols import is_namedtuple, namedtuple_dict_structure_factory

    conv = cattrs.Converter(forbid_extra_keys=True)
    # Named tuples come from TOML tables; their options are positional-only.
    conv.register_structure_hook_factory(
        is_namedtuple,
        lambda cl, c: namedtuple_dict_structure_factory(cl, c, "from_converter", True),
    )
    conv.register_structure_hook(float, lambda v, _: _number(v, float))
    conv.register_structure_hook(int, lambda v, _: _number(v, int))
    conv.register_structure_hook(str, lambda v, _: _string(v))
    conv.register_structure_hook_func(lambda t: t == frozenset[str], lambda v, _: _names(v))
    return conv


def describe_error(exc: BaseException, type_: type | None) -> str:
    """cattrs' wording, but a validator's own message where there is one."""
    import cattrs
    from cattrs.v import format_exception

    if isinstance(exc, ValueError) and not isinstance(exc, cattrs.BaseValidationError) and str(exc):
        return str(exc)
    return format_exception(exc, type_)


def problems(exc: cattrs.BaseValidationError, path: str) -> list[str]:
    """One readable line per problem in a cattrs validation error."""
    import cattrs

    return cattrs.transform_error(exc, path=path, format_exception=describe_error)
