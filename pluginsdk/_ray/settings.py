"""The host's word on Ray: ``executor`` and ``[policy.ray]`` (standard library only).

:class:`~pluginsdk.Policy` imports this on every host start, so it must stay
as cheap as :mod:`pluginsdk.envs.settings`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from .._table import checked_table

__all__ = ["EXECUTORS", "INSTALLERS", "RaySettings", "executor_problem"]

#: Where isolated plugins' workers run: on this machine, or as Ray actors.
EXECUTORS = ("local", "ray")
#: How Ray builds a plugin's ``[environment]`` on a node (its ``runtime_env`` field).
INSTALLERS = ("pip", "uv")


def executor_problem(value: object, *, where: str = "executor") -> str | None:
    """What is wrong with an executor name, or ``None``."""
    if value in EXECUTORS:
        return None
    return f"{where} must be one of {', '.join(EXECUTORS)}, not {value!r}"


class RaySettings(NamedTuple):
    """Where and how plugins run on Ray (``[policy.ray]``).

    Attributes:
        address: The cluster to connect to (``"ray://head:10001"``, ``"auto"``...).
            Unset: the cluster this process is already connected to, else a
            local cluster started once per process and shut down at exit.
        namespace: The Ray namespace of the actors (and of a connection made here).
        num_cpus: CPUs each actor reserves (unset: Ray's default for actors,
            one to be placed and none held while it runs).
        num_gpus: GPUs each actor reserves.
        resources: Custom resources each actor reserves (name -> amount).
        installer: How a plugin's ``[environment]`` is installed on a node:
            Ray's ``pip`` or ``uv`` runtime environment.
        plugins: Per plugin (``[policy.ray.plugins.NAME]``), what its actors
            ask for instead: any of ``num_cpus``, ``num_gpus``, ``resources``
            and ``installer``, each replacing the host-wide value for that
            plugin.  The host's word alone: a plugin's manifest has no say in
            what its actors reserve.
    """

    address: str | None = None
    namespace: str | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None
    resources: Mapping[str, float] = {}
    installer: str = "pip"
    plugins: Mapping[str, Mapping[str, Any]] = {}

    @classmethod
    def checked(cls, value: object, *, where: str = "policy.ray") -> RaySettings:
        """Settings from an instance or a mapping of the same keys, every problem reported at once."""
        return checked_table(cls, value, where, _check)

    def for_plugin(self, name: str) -> RaySettings:
        """The settings plugin ``name``'s actors get: its own entries (see :attr:`plugins`) win."""
        own = self.plugins.get(name)
        return self._replace(**own, plugins={}) if own else self._replace(plugins={})


def _amount(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


#: What a plugin's own entry in ``[policy.ray.plugins]`` may set (the connection is the host's, once).
PER_PLUGIN = ("num_cpus", "num_gpus", "resources", "installer")


def _check(key: str, value: object) -> tuple[str | None, Any]:
    """``(problem or None, value normalised)`` for one setting."""
    if key == "plugins":
        return _check_plugins(value)
    if key in ("address", "namespace"):
        ok = value is None or (isinstance(value, str) and value.strip() != "")
        return (None, value) if ok else (f"expected a non-empty string, got {value!r}", value)
    if key in ("num_cpus", "num_gpus"):
        if value is None:
            return None, None
        ok = _amount(value)
        return (None, float(value)) if ok else (f"{value!r} is not allowed; expected a finite number >= 0", value)  # type: ignore[arg-type]
    if key == "resources":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and k and _amount(v) for k, v in value.items()):
            return f"expected a table of resource names to finite numbers >= 0, got {value!r}", value
        return None, {k: float(v) for k, v in value.items()}
    # installer
    if value not in INSTALLERS:
        return f"expected one of {', '.join(INSTALLERS)}, got {value!r}", value
    return None, value


def _check_plugins(value: object) -> tuple[str | None, Any]:
    """``plugins``: plugin names to tables of :data:`PER_PLUGIN` keys, each checked as host-wide."""
    if not isinstance(value, Mapping):
        return f"expected a table of plugin names to tables, got {value!r}", value
    problems: list[str] = []
    plugins: dict[str, dict[str, Any]] = {}
    for name, table in value.items():
        if not isinstance(name, str) or not name:
            problems.append(f"{name!r} is no plugin name")
            continue
        if not isinstance(table, Mapping):
            problems.append(f"{name}: expected a table, got {table!r}")
            continue
        own = plugins[name] = {}
        for key, item in table.items():
            if key not in PER_PLUGIN:
                problems.append(f"{name}.{key}: not settable per plugin (only {', '.join(PER_PLUGIN)})")
                continue
            problem, own[key] = _check(key, item)
            if problem:
                problems.append(f"{name}.{key}: {problem}")
    return ("; ".join(problems) or None), plugins
