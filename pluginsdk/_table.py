"""Reading one settings table (``[policy.environments]``, ``[policy.ray]``) into its NamedTuple."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def checked_table(cls: type[T], value: object, where: str, check: Callable[[str, object], tuple[str | None, Any]]) -> T:
    """``cls`` from an instance, a mapping of its fields, or ``None`` (the defaults).

    ``check(key, value)`` gives each field's problem (or ``None``) and its
    normalised value.  Every problem, unknown keys included, is reported at
    once, as one :class:`~pluginsdk.ConfigError`.
    """
    from ._errors import ConfigError

    if value is None:
        return cls()
    fields_of: tuple[str, ...] = cls._fields  # type: ignore[attr-defined]
    if isinstance(value, cls):
        data: Mapping[str, Any] = value._asdict()  # type: ignore[attr-defined]
    elif isinstance(value, Mapping):
        data = value
    else:
        raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
    problems = [f"unknown key {where}.{k}" for k in data if k not in fields_of]
    fields: dict[str, Any] = {}
    for key, item in data.items():
        if key in fields_of:
            problem, fields[key] = check(key, item)
            if problem:
                problems.append(f"{where}.{key}: {problem}")
    if problems:
        raise ConfigError("invalid policy: " + "; ".join(problems))
    return cls(**fields)
