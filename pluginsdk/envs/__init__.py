"""Private environments: a virtual environment per set of dependencies a plugin declares.

A plugin whose manifest has an ``[environment]`` table never runs in the
host's interpreter: at isolation ``process`` its workers run the interpreter
of an environment made for it (:func:`provision`), seeing the plugin's own
package and the SDK through a view (:mod:`.view`), never the host's
site-packages; at ``wasm`` the distributions its dependencies need are
staged for the sandbox from the environment's site-packages
(:func:`env_site_packages`; see :mod:`pluginsdk._wasm.deps`).  Environments
are made with uv (the ``envs`` extra) or with ``venv`` and pip, keyed by
what determines them, built once across processes, reused, and rebuilt
when damaged (:mod:`.store`).  The host's policy decides
whether they are allowed and which indexes they use
(:class:`EnvironmentSettings`, ``[policy.environments]``).

Only :mod:`.settings` is imported eagerly (the policy needs it on every host
start); the rest loads on first use.
"""

from __future__ import annotations

from .settings import EnvironmentSettings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .builder import env_site_packages, find_installer, installer_problem
    from .store import Environment, environment_key, envs_dir, list_environments, provision, prune
    from .view import worker_path

__all__ = [
    "Environment",
    "EnvironmentSettings",
    "env_site_packages",
    "environment_key",
    "envs_dir",
    "find_installer",
    "installer_problem",
    "list_environments",
    "provision",
    "prune",
    "worker_path",
]

_LAZY = {
    "Environment": ".store",
    "environment_key": ".store",
    "envs_dir": ".store",
    "list_environments": ".store",
    "provision": ".store",
    "prune": ".store",
    "env_site_packages": ".builder",
    "find_installer": ".builder",
    "installer_problem": ".builder",
    "worker_path": ".view",
}


def __getattr__(name: str) -> Any:
    """The names of :data:`_LAZY`, imported on first use (the policy imports this package on every start)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = globals()[name] = getattr(import_module(module, __name__), name)
    return value
