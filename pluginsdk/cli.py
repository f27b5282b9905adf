"""The ``pluginsdk`` command: list, inspect and check plugins; warm the WASM cache."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .host import PluginInfo

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    from ._errors import PluginError

    try:
        status: int = args.run(args)
    except PluginError as exc:
        print(f"pluginsdk: error: {_safe(exc)}", file=sys.stderr)
        return 1
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pluginsdk", description=__doc__)
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("list", help="list the plugins of an entry-point group (imports no plugin code)")
    p.add_argument("group", help='entry-point group, such as "textkit.plugins"')
    _spec_and_path(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_cmd_list)

    p = sub.add_parser("inspect", help="show everything known of one plugin (imports no plugin code unless --load)")
    p.add_argument("group")
    p.add_argument("name")
    _spec_and_path(p)
    p.add_argument(
        "--load",
        action="store_true",
        help="load the plugin as a host would (runs its code; needs --spec): show where it runs and its incidents",
    )
    p.set_defaults(run=_cmd_inspect)

    p = sub.add_parser("check", help="validate a plugin project: manifest, hook implementations, spec")
    p.add_argument("path", type=Path, help="the plugin project (the directory holding pyproject.toml)")
    p.add_argument("--spec", help="the host spec as module:OBJECT (default: [tool.pluginsdk] spec)")
    p.set_defaults(run=_cmd_check)

    wasm = sub.add_parser("wasm", help="the WebAssembly sandbox")
    wsub = wasm.add_subparsers(metavar="ACTION")
    p = wsub.add_parser("warm", help="compile the sandbox interpreter now, so no first call waits for it")
    p.add_argument("--interpreter", help="a python.wasm of your own (default: the bundled one)")
    p.set_defaults(run=_cmd_wasm_warm)
    p = wsub.add_parser("prune", help="remove cached interpreters and libraries no sandbox has used lately")
    p.add_argument("--days", type=float, default=None, help="unused for this many days (default: 30; 0: all)")
    p.set_defaults(run=_cmd_wasm_prune)

    env = sub.add_parser("env", help="private environments of plugins whose manifest has [environment]")
    esub = env.add_subparsers(metavar="ACTION")
    p = esub.add_parser("list", help="list the environments made so far")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_cmd_env_list)
    p = esub.add_parser("sync", help="make every environment the installed plugins of a group need, now")
    p.add_argument("group", help='entry-point group, such as "textkit.plugins"')
    _spec_and_path(p)
    p.add_argument("--config", type=Path, help="the host's policy file ([policy.environments]: indexes, allowed)")
    p.set_defaults(run=_cmd_env_sync)
    p = esub.add_parser("prune", help="remove environments no plugin has used lately")
    p.add_argument("--days", type=float, default=None, help="unused for this many days (default: 30; 0: all)")
    p.set_defaults(run=_cmd_env_prune)
    return parser


def _spec_and_path(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", help="judge compatibility against this host spec (module:OBJECT)")
    p.add_argument("--path", action="append", help="search only this directory (repeatable)")


def _load_spec(ref: str) -> Any:
    """The host's spec from ``module:OBJECT`` (host code, never plugin code)."""
    from ._resolve import load_spec

    return load_spec(ref)


def _safe(value: object, *, multiline: bool = False) -> str:
    """Metadata text as the terminal may see it: short, and with every control character escaped.

    Names, versions, reasons and paths come from plugins' metadata; printed
    raw, an escape sequence in them would drive the user's terminal.
    """
    from ._text import clip, printable

    return printable(clip(str(value)), multiline=multiline)


def _candidates(args: argparse.Namespace) -> list[Any]:
    from .discovery import discover

    spec = _load_spec(args.spec) if args.spec else None
    if spec is not None and spec.group != args.group:
        from ._errors import ConfigError

        raise ConfigError(f"spec {spec.name!r} uses group {spec.group!r}, not {args.group!r}")
    return discover(spec, group=args.group, path=args.path, use_index=False)


def _cmd_list(args: argparse.Namespace) -> int:
    found = _candidates(args)
    if args.json:
        print(json.dumps([c.to_json() for c in found], indent=2))
        return 0
    if not found:
        print(f"no plugins in group {args.group!r}")
        return 0
    rows: list[tuple[str, ...]] = [("NAME", "DISTRIBUTION", "VERSION", "ISOLATION", "REQUIRES", "STATUS")]
    for c in found:
        status = c.status if not c.reason else f"{c.status}: {c.reason.splitlines()[0]}"
        cells = (c.name, c.dist, c.version, c.isolation or "-", c.requires or "-", status)
        rows.append(tuple(_safe(cell) for cell in cells))
    _table(rows)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    if args.load and not args.spec:
        from ._errors import ConfigError

        raise ConfigError("--load needs --spec: a plugin is loaded against its host's spec")
    for c in _candidates(args):
        if c.name == args.name:
            record = c.to_json()
            info = _loaded(args) if args.load else None
            if info is not None:  # the host's word on status, once it tried to load the plugin
                record.update(status=info.status, reason=info.reason, runtime=info.runtime)
            for key, value in record.items():
                if isinstance(value, (list, tuple)):
                    value = ", ".join(map(str, value)) or "-"
                elif isinstance(value, dict):
                    value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
                text = "-" if value in (None, "") else _safe(value, multiline=key == "reason")
                print(f"{key + ':':<16}{text}")
            if c.isolation == "wasm":
                from ._resolve import sandbox_description

                print(f"{'sandbox:':<16}{_safe(sandbox_description())}")
            if info is not None and info.status == "loaded":
                _print_incidents(info)
            return 0
    print(f"pluginsdk: no plugin {_safe(repr(args.name))} in group {_safe(repr(args.group))}", file=sys.stderr)
    return 1


def _loaded(args: argparse.Namespace) -> PluginInfo:
    """The plugin as a host sees it once it tried to load it (the workers are stopped after)."""
    from ._errors import PluginError
    from .host import Host

    _safe_logging()
    with Host(_load_spec(args.spec), path=args.path, use_index=False) as host:
        try:
            host.load(args.name)
        except PluginError:
            pass  # its status and reason say why
        return host.plugin(args.name)


def _safe_logging() -> None:
    """Send the SDK's log records (a plugin's failure, its output) to stderr escaped, as everything printed."""
    import logging

    class SafeFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return _safe(super().format(record), multiline=True)

    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter("%(name)s: %(levelname)s: %(message)s"))
    logger = logging.getLogger("pluginsdk")
    logger.addHandler(handler)
    logger.propagate = False


def _print_incidents(info: PluginInfo) -> None:
    """The count, then one line per incident kept: time, kind, hook, detail."""
    print(f"{'incidents:':<16}{info.incident_count}")
    for incident in info.incidents:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(incident.time))
        print(f"{'':<16}{when}  {_safe(incident.kind)}  {_safe(incident.hook or '-')}  {_safe(incident.detail)}")


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


def _cmd_check(args: argparse.Namespace) -> int:
    from .check import check_project

    problems, notes = check_project(args.path, spec_ref=args.spec, load_spec=_load_spec)
    for note in notes:
        print(f"ok: {_safe(note)}")
    for problem in problems:
        print(f"error: {_safe(problem, multiline=True)}", file=sys.stderr)
    if problems:
        print(f"{args.path}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.path}: plugin project is valid")
    return 0


def _cmd_wasm_warm(args: argparse.Namespace) -> int:
    try:
        from ._wasm import warm_cache  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        print(f"pluginsdk: the WASM sandbox is not available: {exc}", file=sys.stderr)
        return 1
    path = warm_cache(args.interpreter or os.environ.get("PLUGINSDK_WASM_PYTHON"))
    print(f"compiled sandbox interpreter cached at {path}")
    return 0


def _cmd_wasm_prune(args: argparse.Namespace) -> int:
    from ._wasm import prune_cache

    if args.days is not None and args.days < 0:
        print("pluginsdk: --days must not be negative", file=sys.stderr)
        return 2
    removed = prune_cache(args.days)
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} cache entries removed")
    return 0


def _cmd_env_list(args: argparse.Namespace) -> int:
    from .envs import envs_dir, list_environments

    found = list_environments()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print(f"no environments in {envs_dir()}")
        return 0
    rows: list[tuple[str, ...]] = [("KEY", "INSTALLER", "LAST USED", "STATE", "DEPENDENCIES")]
    for e in found:
        used = e.get("last_used")
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(used)) if used else "-"
        state = "complete" if e["complete"] else "incomplete (rebuilt on next use)"
        deps = ", ".join(e.get("dependencies") or []) or "-"
        rows.append(tuple(_safe(c) for c in (e["key"], e.get("installer", "-"), when, state, deps)))
    _table(rows)
    return 0


def _cmd_env_sync(args: argparse.Namespace) -> int:
    from ._errors import PluginError
    from .envs import provision
    from .policy import Policy

    policy = Policy.from_toml(args.config) if args.config else Policy()
    wanted: dict[tuple[str, ...], list[str]] = {}
    for c in _candidates(args):
        if c.environment is None:
            continue
        if c.status != "available" or policy.refusal(c.name, c.dist) is not None:
            why = c.reason or policy.refusal(c.name, c.dist) or c.status
            print(f"skipped plugin {_safe(c.name)}: {_safe(why.splitlines()[0])}")
            continue
        wanted.setdefault(tuple(c.environment), []).append(c.name)
    if not wanted:
        print(f"no plugin of group {_safe(repr(args.group))} needs a private environment")
        return 0
    if not policy.environments.allowed:
        print("pluginsdk: the host's policy does not allow private environments", file=sys.stderr)
        return 1
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
    return 1 if failed else 0


def _cmd_env_prune(args: argparse.Namespace) -> int:
    from .envs import prune

    if args.days is not None and args.days < 0:
        print("pluginsdk: --days must not be negative", file=sys.stderr)
        return 2
    removed = prune(args.days)
    for path in removed:
        print(f"removed {_safe(path)}")
    print(f"{len(removed)} environments and views removed")
    return 0
