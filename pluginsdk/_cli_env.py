"""``pluginsdk env list|sync|prune``: private environments of plugins whose manifest has ``[environment]``."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

from ._cli_common import EXIT_OK, EXIT_PROBLEMS, _discover, _prune, _safe, _table

if TYPE_CHECKING:
    import argparse


def cmd_list(args: argparse.Namespace) -> int:
    from .envs import envs_dir, list_environments

    found = list_environments()
    if args.json:
        print(json.dumps(found, indent=2))
        return EXIT_OK
    if not found:
        print(f"no environments in {envs_dir()}")
        return EXIT_OK
    rows: list[tuple[str, ...]] = [("KEY", "INSTALLER", "LAST USED", "STATE", "DEPENDENCIES")]
    for e in found:
        used = e.get("last_used")
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(used)) if used else "-"
        state = "complete" if e["complete"] else "incomplete (rebuilt on next use)"
        deps = ", ".join(e.get("dependencies") or []) or "-"
        rows.append(tuple(_safe(c) for c in (e["key"], e.get("installer", "-"), when, state, deps)))
    _table(rows)
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    from ._errors import PluginError
    from .envs import provision
    from .policy import Policy

    policy = Policy.from_toml(args.config) if args.config else Policy()
    wanted: dict[tuple[str, ...], list[str]] = {}
    for c in _discover(args)[1]:
        if c.environment is None:
            continue
        if c.status != "available" or policy.refusal(c.name, c.dist) is not None:
            why = c.reason or policy.refusal(c.name, c.dist) or c.status
            print(f"skipped plugin {_safe(c.name)}: {_safe(why.splitlines()[0])}")
            continue
        wanted.setdefault(tuple(c.environment), []).append(c.name)
    if not wanted:
        print(f"no plugin of group {_safe(repr(args.group))} needs a private environment")
        return EXIT_OK
    if not policy.environments.allowed:
        print("pluginsdk: the host's policy does not allow private environments", file=sys.stderr)
        return EXIT_PROBLEMS
    failed = 0
    for deps, names in wanted.items():
        plugins = ", ".join(names)
        try:
            env = provision(deps, policy.environments, plugin=plugins)
        except PluginError as exc:
            failed += 1
            print(f"failed {_safe(plugins)}: {_safe(exc.message, multiline=True)}", file=sys.stderr)
            continue
        what = "built" if env.built else "reused"
        listed = ", ".join(env.dependencies) or "no dependencies"
        print(f"{what} {env.key} for {_safe(plugins)} ({_safe(listed)}; {env.installer}, {env.seconds:.1f} s)")
    return EXIT_PROBLEMS if failed else EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    from .envs import prune

    return _prune(args, prune, "environments and views")
