"""Where and how the host runs a plugin: its backend's target, built from the host's policy.

The host decides (policy, path, options); a plugin's manifest only narrows
(its limits through :meth:`Policy.limits_for`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from .backends.base import PluginTarget
from .config import FAILED, UNAVAILABLE

if TYPE_CHECKING:
    import logging

    from .discovery import Candidate
    from .policy import Policy
    from .spec import HookSpec

__all__ = ["environment_problem", "plugin_target"]


def environment_problem(policy: Policy, cand: Candidate, isolation: str) -> tuple[str, str] | None:
    """``(status, reason)`` if plugin ``cand``, which declares ``[environment]``, cannot run here."""
    name = cand.name
    if not policy.environments.allowed:
        return UNAVAILABLE, (
            f"plugin {name!r} needs a private environment ([environment] in its manifest), which the host's"
            " policy does not allow ([policy.environments] allowed = false)"
        )
    if isolation == "inprocess":
        return FAILED, (
            f"plugin {name!r} declares a private environment ([environment] in its manifest), so it cannot run"
            f' in the host\'s interpreter: ask for isolation = "process" in its manifest, or give it'
            f' [policy.isolation] {name} = "process" in the host\'s policy'
        )
    if isolation != "wasm" and policy.executor_for(name, isolation) == "ray":
        return None  # Ray installs it on the node (the actors' runtime_env); a sandbox's is staged here
    from .envs import installer_problem

    why = installer_problem()
    return None if why is None else (UNAVAILABLE, f"plugin {name!r} needs a private environment, but {why}")


def plugin_target(
    cand: Candidate,
    isolation: str,
    *,
    spec: HookSpec[Any],
    policy: Policy,
    path: list[str] | None,
    prewarm: bool,
    coalesce: bool,
    check_values: bool,
    log: logging.Logger,
) -> PluginTarget:
    """What a backend needs to run ``cand`` at ``isolation``: where it is, its hooks, limits and options.

    A private environment (``[environment]``) is provisioned here, unless Ray
    builds it on the node.  ``prewarm``, ``coalesce`` and ``check_values``:
    the host's own settings (see :class:`~pluginsdk.Host`).
    """
    from ._options import BackendOptions  # only once a plugin starts (see pluginsdk.config)

    assert cand.package_dir is not None and cand.path_entry is not None
    opts = BackendOptions(
        sys_path=tuple(sys.path if path is None else [*path, *sys.path]),
        wasm_interpreter=policy.wasm_interpreter,
        wasm_engine=policy.wasm_engine,
        wasm_packages=tuple(cand.wasm_packages),
        wasm_allowed=tuple(sorted(policy.wasm_packages)),
        prewarm=prewarm,  # the host's choice: otherwise workers start as calls need them
        coalesce=coalesce,
        check_values=check_values,
    )
    if policy.executor_for(cand.name, isolation) == "ray":
        environment = None if cand.environment is None else tuple(cand.environment)
        opts = opts._replace(executor="ray", ray=policy.ray, environment=environment, environments=policy.environments)
    if cand.environment is not None and (isolation == "wasm" or opts.executor != "ray"):
        # Built here (a sandbox's too, wherever its instances run: they mount the host's directories).
        from .envs import env_site_packages, provision, worker_path

        env = provision(cand.environment, policy.environments, plugin=cand.name)
        log.info(
            "private environment %s %s in %.2f s (%s)",
            env.key,
            "built" if env.built else "reused",
            env.seconds,
            ", ".join(env.dependencies) or "no dependencies",
        )
        if isolation == "wasm":  # what its dependencies need, staged for the sandbox from the environment
            opts = opts._replace(environment=env.dependencies, wasm_site=env_site_packages(env.root))
        else:  # its own interpreter, seeing the plugin and the SDK, not the host's packages
            front, back = worker_path(cand.package_dir, cand.path_entry, cand.dist, cand.version)
            opts = opts._replace(python=env.python, sys_path=front, sys_path_tail=back, host_path=False)
    # Where the plugin is and what it implements, what it may use, how the host runs it.
    where = (cand.name, cand.dist, cand.module, cand.attr, cand.package_dir, cand.path_entry)
    hooks = {h: spec.hook_defs[h].argnames for h in cand.hooks}
    return PluginTarget(*where, hooks, policy.limits_for(cand.name, cand.limits), spec, opts)
