"""What a host allows: which plugins run, at which isolation, within which limits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError
from ._ray.settings import RaySettings, executor_problem
from .config import DEFAULT_LIMITS, ISOLATION_LEVELS, LIMIT_RULES, Limits, limit_problem
from .envs.settings import EnvironmentSettings

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
        wasm_engine: The sandbox engine of ``wasm`` plugins: ``"interpreter"``
            (CPython booted in every instance) or ``"component"`` (each plugin
            built into a snapshot component); unset, ``PLUGINSDK_WASM_ENGINE``
            decides, else ``"interpreter"``.
        wasm_packages: Distributions (or their top-level packages) that any
            sandboxed plugin may have mounted through its manifest's
            ``[wasm] packages``, beyond its own distribution's dependencies.
        dists: Plugin name -> the distribution that owns it.  A name listed
            here is only ever loaded from that distribution; a name two
            distributions declare loads from neither unless it is listed.
        environments: Private environments for plugins whose manifest has an
            ``[environment]`` table: whether they are allowed, the indexes they
            are built from, the build timeout (``[policy.environments]``).
        executor: Where every isolated plugin's workers run: ``"local"`` (this
            machine) or ``"ray"`` (Ray actors; ``inprocess`` plugins always stay
            in the host).
        executors: Per-plugin executors, which win over ``executor``.
        ray: Where and how plugins run on Ray (``[policy.ray]``: the address,
            the resources each actor reserves, the installer of environments).
    """

    # A plain class: it is built on every host start, where generating a
    # dataclass's or attrs class's methods would cost more than the rest.
    __slots__ = (
        "allow",
        "disabled",
        "dists",
        "environments",
        "executor",
        "executors",
        "isolation",
        "limits",
        "min_isolation",
        "plugin_limits",
        "ray",
        "trusted",
        "wasm_engine",
        "wasm_interpreter",
        "wasm_packages",
    )

    disabled: frozenset[str]
    allow: frozenset[str] | None
    isolation: Mapping[str, str]
    min_isolation: str
    trusted: frozenset[str]
    limits: Limits
    plugin_limits: Mapping[str, Limits]
    wasm_interpreter: str | None
    wasm_engine: str | None
    wasm_packages: frozenset[str]
    dists: Mapping[str, str]
    environments: EnvironmentSettings
    executor: str
    executors: Mapping[str, str]
    ray: RaySettings

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
        wasm_engine: str | None = None,
        wasm_packages: Iterable[str] = (),
        dists: Mapping[str, str] | None = None,
        environments: EnvironmentSettings | Mapping[str, Any] | None = None,
        executor: str = "local",
        executors: Mapping[str, str] | None = None,
        ray: RaySettings | Mapping[str, Any] | None = None,
    ) -> None:
        _check_level("min_isolation", min_isolation)
        for what, chosen in [
            ("executor", executor),
            *((f"executor for plugin {p!r}", e) for p, e in (executors or {}).items()),
        ]:
            problem = executor_problem(chosen, where=what)
            if problem is not None:
                raise ValueError(problem)
        for plugin, level in (isolation or {}).items():
            _check_level(f"isolation for plugin {plugin!r}", level)
        if wasm_engine is not None:
            from ._component import ENGINES

            if wasm_engine not in ENGINES:
                raise ValueError(f"wasm_engine must be one of {', '.join(ENGINES)}, not {wasm_engine!r}")
        limits = Limits.checked(limits, where="policy.limits")
        plugin_limits = {
            plugin: Limits.checked(own, where=f"policy.plugin_limits.{plugin}")
            for plugin, own in (plugin_limits or {}).items()
        }
        values = {
            "disabled": frozenset(disabled),
            "allow": None if allow is None else frozenset(allow),
            "isolation": dict(isolation or {}),
            "min_isolation": min_isolation,
            "trusted": frozenset(trusted),
            "limits": limits,
            "plugin_limits": plugin_limits,
            "wasm_interpreter": wasm_interpreter,
            "wasm_engine": wasm_engine,
            "wasm_packages": frozenset(wasm_packages),
            "dists": dict(dists or {}),
            "environments": EnvironmentSettings.checked(environments),
            "executor": executor,
            "executors": dict(executors or {}),
            "ray": RaySettings.checked(ray),
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

        data = dict(data)
        # Limits go through the one check every limit goes through (config.Limits.checked),
        # so a policy file and a manifest refuse the same values in the same words.
        limits = data.pop("limits", None)
        plugin_limits = data.pop("plugin_limits", None)
        environments = data.pop("environments", None)  # checked by EnvironmentSettings, in its own words
        ray = data.pop("ray", None)  # and this by RaySettings
        try:
            fields: dict[str, Any] = _toml.converter().structure(data, _policy_fields())
        except cattrs.BaseValidationError as exc:
            raise ConfigError("invalid policy: " + "; ".join(_toml.problems(exc, "policy")), path=source) from None
        problems = [] if limits is None else Limits.problems(limits, where="policy.limits")
        if plugin_limits is not None and not isinstance(plugin_limits, dict):
            problems.append(f"policy.plugin_limits: expected a table of tables, got {type(plugin_limits).__name__}")
            plugin_limits = None
        for plugin, own in (plugin_limits or {}).items():
            problems += Limits.problems(own, where=f"policy.plugin_limits.{plugin}")
        if problems:
            raise ConfigError("invalid policy: " + "; ".join(problems), path=source)
        if limits is not None:
            fields["limits"] = Limits.checked(limits)
        if plugin_limits is not None:
            fields["plugin_limits"] = {plugin: Limits.checked(own) for plugin, own in plugin_limits.items()}
        if environments is not None:
            fields["environments"] = environments
        if ray is not None:
            fields["ray"] = ray
        try:
            return cls(**fields)
        except ConfigError as exc:
            raise ConfigError(exc.message, path=source) from None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"invalid policy: {exc}", path=source) from None

    def refusal(self, name: str, dist: str | None = None) -> str | None:
        """Why policy keeps plugin ``name`` (from distribution ``dist``) from loading, or ``None``."""
        if name in self.disabled:
            return "disabled by the host's policy"
        if self.allow is not None and name not in self.allow:
            return "not in the host's allow-list"
        owner = self.dists.get(name)
        if dist is not None and owner is not None:
            from ._metadata import normalize

            if normalize(dist) != normalize(owner):
                return f"the host's policy gives plugin name {name!r} to distribution {owner!r}, not {dist!r}"
        return None

    def isolation_for(self, name: str, requested: str) -> str:
        """The level plugin ``name`` runs at, given the level its manifest asks for."""
        levels = [requested, self.isolation.get(name, requested)]
        if name not in self.trusted:
            levels.append(self.min_isolation)
        return max(levels, key=ISOLATION_LEVELS.index)

    def executor_for(self, name: str, isolation: str) -> str:
        """Where plugin ``name``'s workers run at ``isolation``: ``"local"`` or ``"ray"`` (in-process: always local)."""
        if isolation == "inprocess":
            return "local"
        return self.executors.get(name, self.executor)

    def limits_for(self, name: str, hints: Mapping[str, Any]) -> Limits:
        """Resolved limits for plugin ``name`` whose manifest hints ``hints``.

        A manifest can only narrow what the host grants (its policy's
        ``limits``, else the SDK's defaults), field by field: fewer
        ``workers``, less ``memory_mb``, ``timeout``, ``max_message_mb`` and
        ``open_files``, and a sooner ``recycle_after`` / ``idle_timeout``
        (there 0, "never", is the widest value: a manifest may set one where
        the host has none, never lift the host's).  Only ``plugin_limits``,
        the host's own word on one plugin, can grant more.
        """
        # Hints were validated with the manifest; still, an invalid one (0 or NaN
        # would switch a cap off) is dropped rather than trusted.
        asked = {k: v for k, v in hints.items() if k in LIMIT_RULES and limit_problem(k, v) is None}
        granted = self.limits.merged(DEFAULT_LIMITS)
        narrowed = {k: _narrower(k, v, getattr(granted, k)) for k, v in asked.items() if v is not None}
        own = self.plugin_limits.get(name, Limits())
        return own.merged(Limits(**narrowed), granted)


def _narrower(field: str, asked: Any, cap: Any) -> Any:
    """The narrower of a manifest's ``asked`` and the host's ``cap`` for ``field``."""
    if cap is None:
        return asked
    if field in ("recycle_after", "idle_timeout"):  # 0 is "never": the widest
        if cap == 0:
            return asked
        if asked == 0:
            return cap
    return min(asked, cap)


def _policy_fields() -> type:
    """The schema of a ``[policy]`` table, for cattrs: Policy's own fields, all optional.

    Built only when a file is read (resolving annotations imports ``typing``).
    """
    from typing import TypedDict, get_type_hints

    hints = {
        k: v for k, v in get_type_hints(Policy).items() if k not in ("environments", "ray")
    }  # checked on their own
    fields: type = TypedDict("PolicyFields", hints, total=False)  # type: ignore[misc]
    return fields
