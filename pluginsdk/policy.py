"""What a host allows: which plugins run, at which isolation, within which limits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError
from .backends.base import DEFAULT_LIMITS, ISOLATION_LEVELS, Limits

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Policy"]


def _check_level(what: str, level: object) -> None:
    if level not in ISOLATION_LEVELS:
        raise ValueError(f"{what} must be one of {', '.join(ISOLATION_LEVELS)}, not {level!r}")


class Policy:
    """A host's rules for its plugins.

    Isolation only ever goes up: a plugin runs at the highest of the level
    its manifest asks for, the host's override for it, and (unless it is
    trusted) ``min_isolation``.  Immutable once built.

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

    # A plain class: it is built on every host start, where generating a
    # dataclass's or attrs class's methods would cost more than the rest.
    __slots__ = (
        "allow",
        "disabled",
        "isolation",
        "limits",
        "min_isolation",
        "plugin_limits",
        "trusted",
        "wasm_interpreter",
    )

    disabled: frozenset[str]
    allow: frozenset[str] | None
    isolation: Mapping[str, str]
    min_isolation: str
    trusted: frozenset[str]
    limits: Limits
    plugin_limits: Mapping[str, Limits]
    wasm_interpreter: str | None

    def __init__(
        self,
        *,
        disabled: Iterable[str] = (),
        allow: Iterable[str] | None = None,
        isolation: Mapping[str, str] | None = None,
        min_isolation: str = "inprocess",
        trusted: Iterable[str] = (),
        limits: Limits | None = None,
        plugin_limits: Mapping[str, Limits] | None = None,
        wasm_interpreter: str | None = None,
    ) -> None:
        _check_level("min_isolation", min_isolation)
        for plugin, level in (isolation or {}).items():
            _check_level(f"isolation for plugin {plugin!r}", level)
        values = {
            "disabled": frozenset(disabled),
            "allow": None if allow is None else frozenset(allow),
            "isolation": dict(isolation or {}),
            "min_isolation": min_isolation,
            "trusted": frozenset(trusted),
            "limits": limits or Limits(),
            "plugin_limits": dict(plugin_limits or {}),
            "wasm_interpreter": wasm_interpreter,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Policy is immutable; cannot set {name!r}")

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in sorted(self.__slots__))
        return f"Policy({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Policy):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def replace(self, **changes: Any) -> Policy:
        """A copy of this policy with some fields changed."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        unknown = changes.keys() - fields.keys()
        if unknown:
            raise TypeError(f"Policy has no field(s) {', '.join(sorted(unknown))}")
        return Policy(**{**fields, **changes})

    @classmethod
    def from_toml(cls, path: str | Path) -> Policy:
        """Read the ``[policy]`` table of a TOML file."""
        from . import _toml

        try:
            data = _toml.load(path)
        except (OSError, UnicodeDecodeError, _toml.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read policy: {exc}", path=str(path)) from None
        return cls.from_dict(data.get("policy", {}), source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Policy:
        """Build a policy from plain data, as found under ``[policy]``."""
        import cattrs

        from . import _toml

        try:
            return cls(**_toml.converter().structure(dict(data), _policy_fields()))
        except cattrs.BaseValidationError as exc:
            raise ConfigError("invalid policy: " + "; ".join(_toml.problems(exc, "policy")), path=source) from None
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

        A manifest may ask for less memory, time, message size or open files than the
        host grants (its policy, else the SDK's defaults), never more; only
        ``plugin_limits`` can grant a plugin more.
        """
        # Hints are validated with the manifest; still, only a positive, finite
        # value can lower a cap (0 or NaN would switch it off).
        usable: dict[str, Any] = {
            k: v for k, v in hints.items() if isinstance(v, (int, float)) and 0 < v < float("inf")
        }
        manifest = Limits(**usable)
        capped = {}
        for field in ("memory_mb", "timeout", "max_message_mb", "open_files"):
            asked = getattr(manifest, field)
            cap = getattr(self.limits, field)
            if cap is None:
                cap = getattr(DEFAULT_LIMITS, field)
            if asked is not None and cap is not None:
                capped[field] = min(asked, cap)
        if capped:
            manifest = manifest._replace(**capped)
        own = self.plugin_limits.get(name, Limits())
        return own.merged(manifest, self.limits, DEFAULT_LIMITS)


def _policy_fields() -> type:
    """The schema of a ``[policy]`` table, for cattrs: Policy's own fields, all optional.

    Built only when a file is read (resolving annotations imports ``typing``).
    """
    from typing import TypedDict, get_type_hints

    fields: type = TypedDict("PolicyFields", get_type_hints(Policy), total=False)  # type: ignore[misc]
    return fields
