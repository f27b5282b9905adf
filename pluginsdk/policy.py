"""What a host allows: which plugins run, at which isolation, within which limits."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ._errors import ConfigError
from .backends.base import DEFAULT_LIMITS, ISOLATION_LEVELS, Limits

__all__ = ["Policy"]


def _optional_names(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def _level(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in ISOLATION_LEVELS:
        raise ValueError(f"{attribute.name} must be one of {', '.join(ISOLATION_LEVELS)}, not {value!r}")


def _levels(_: object, attribute: attrs.Attribute[Any], value: Mapping[str, str]) -> None:
    for name, level in value.items():
        if level not in ISOLATION_LEVELS:
            raise ValueError(
                f"isolation for plugin {name!r} must be one of {', '.join(ISOLATION_LEVELS)}, not {level!r}"
            )


@attrs.frozen
class Policy:
    """A host's rules for its plugins.

    Isolation only ever goes up: a plugin runs at the highest of the level
    its manifest asks for, the host's override for it, and (unless it is
    trusted) ``min_isolation``.

    Attributes:
        disabled: Plugins never loaded.
        allow: If set, the only plugins that may load.
        isolation: Per-plugin isolation overrides (they can only raise it).
        min_isolation: The floor for every plugin not in ``trusted``.
        trusted: Plugins exempt from ``min_isolation`` (first-party ones, say).
        limits: Host-wide limits: defaults for every plugin, and caps on
            what a manifest may ask for (memory, timeout, message size).
        plugin_limits: Per-plugin limits, which win over everything.
        wasm_interpreter: Path of the ``python.wasm`` to use for sandboxed
            plugins instead of the bundled one.
    """

    disabled: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)
    allow: frozenset[str] | None = attrs.field(default=None, converter=_optional_names)
    isolation: Mapping[str, str] = attrs.field(factory=dict, validator=_levels)
    min_isolation: str = attrs.field(default="inprocess", validator=_level)
    trusted: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)
    limits: Limits = Limits()
    plugin_limits: Mapping[str, Limits] = attrs.field(factory=dict)
    wasm_interpreter: str | None = None

    @classmethod
    def from_toml(cls, path: str | Path) -> Policy:
        """Read the ``[policy]`` table of a TOML file."""
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read policy: {exc}", path=str(path)) from None
        return cls.from_dict(data.get("policy", {}), source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Policy:
        """Build a policy from plain data, as found under ``[policy]``."""
        import cattrs

        conv = cattrs.Converter(forbid_extra_keys=True)
        conv.register_structure_hook_func(lambda t: t == frozenset[str], lambda v, _: frozenset(_strings(v)))
        conv.register_structure_hook(float, lambda v, _: _number(v))
        try:
            return conv.structure(dict(data), cls)
        except cattrs.BaseValidationError as exc:
            from .manifest import describe_error

            problems = cattrs.transform_error(exc, path="policy", format_exception=describe_error)
            raise ConfigError("invalid policy: " + "; ".join(problems), path=source) from None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"invalid policy: {exc}", path=source) from None

    def refusal(self, name: str) -> str | None:
        """Why policy keeps plugin ``name`` from loading, or ``None``."""
        if name in self.disabled:
            return "disabled by the host's policy"
        if self.allow is not None and name not in self.allow:
            return "not in the host's allow-list"
        return None

    def isolation_for(self, name: str, requested: str) -> str:
        """The level plugin ``name`` runs at, given the level its manifest asks for."""
        levels = [requested, self.isolation.get(name, requested)]
        if name not in self.trusted:
            levels.append(self.min_isolation)
        return max(levels, key=ISOLATION_LEVELS.index)

    def limits_for(self, name: str, hints: Mapping[str, Any]) -> Limits:
        """Resolved limits for plugin ``name`` whose manifest hints ``hints``.

        A manifest may ask for less memory, time or message size than the
        host grants by default, never more.
        """
        manifest = Limits(**hints)
        capped = {}
        for field in ("memory_mb", "timeout", "max_message_mb"):
            asked, cap = getattr(manifest, field), getattr(self.limits, field)
            if asked is not None and cap is not None:
                capped[field] = min(asked, cap)
        if capped:
            manifest = attrs.evolve(manifest, **capped)
        own = self.plugin_limits.get(name, Limits())
        return own.merged(manifest, self.limits, DEFAULT_LIMITS)


def _strings(value: object) -> list[str]:
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of plugin names, got {value!r}")
    return list(value)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)
