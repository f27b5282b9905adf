"""The ``pluginsdk`` command: list, inspect and check plugins; diagnose the install; manage the WASM cache.

Each command is one ``_cmd_*`` function registered in :func:`_parser`.  Exit
statuses are shared (see ``_EPILOG``); everything printed from plugin
metadata is escaped (:func:`_safe`, or JSON's own escapes with ``--json``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .host import PluginInfo

from ._cli_common import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    _days,
    _discover,
    _json,
    _load_spec,
    _print_json,
    _prune,
    _safe,
    _spec_and_path,
    _table,
)

__all__ = ["main"]


_DESCRIPTION = (
    "List, inspect and check plugins of pluginsdk hosts; diagnose this installation; manage the sandbox cache."
)
_EPILOG = """\
exit status:
  0    success: nothing wrong found
  1    problems found (check: the project; doctor: something a host needs;
       inspect: the plugin is missing or cannot be used)
  2    usage error (bad arguments, a --spec that cannot be loaded)
  3    check only: the project's wheel could not be built
  130  interrupted
  141  stdout was closed early (for example by "| head"); nothing more is printed

Use "pluginsdk COMMAND --help" for a command's options."""

_CHECK_DESCRIPTION = """\
Build the project's wheel with its own build backend (offline and without
build isolation: the backend must be installed in this environment) and check
what a host will find in it: the entry points in entry_points.txt, the
manifest shipped in the package, the hooks the code implements, and for
isolation wasm, no C extensions. --no-build checks the source tree instead."""
_CHECK_EPILOG = """\
exit status:
  0  the project is valid
  1  problems found
  2  nothing to check: no such directory, no pyproject.toml, no spec
  3  the wheel could not be built (the backend is missing, or the build failed)"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if not hasattr(args, "run"):
            parser.print_help()
            return EXIT_USAGE
        status = _run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        # Like pip: the reader is gone (``| head``), so end quietly.  Point stdout at
        # /dev/null so the interpreter's final flush does not complain either.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("pluginsdk: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return status


def _run(args: argparse.Namespace) -> int:
    from ._errors import ConfigError, PluginError

    try:
        status: int = args.run(args)
    except ConfigError as exc:  # what the user asked for cannot be done as asked
        print(f"pluginsdk: error: {_safe(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except PluginError as exc:
        print(f"pluginsdk: error: {_safe(exc)}", file=sys.stderr)
        return EXIT_PROBLEMS
    return status


class _Version(argparse.Action):
    """``--version``: read only when asked (the distribution's metadata costs an import)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(_version_line())
        parser.exit()


def _version_line() -> str:
    """``pluginsdk 0.1.0 from /site-packages/pluginsdk (Python 3.11.7)``, as pip says it."""
    import platform

    try:
        import pluginsdk

        version = str(pluginsdk.__version__)
    except Exception:  # run from a checkout that was never installed
        version = "(version unknown: pluginsdk-isolated is not installed)"
    where = os.path.dirname(os.path.abspath(__file__))
    return f"pluginsdk {version} from {where} (Python {platform.python_version()})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pluginsdk",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="show the version, location and Python, then exit")
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("list", help="list the plugins of an entry-point group (imports no plugin code)")
    p.add_argument("group", help='entry-point group, such as "textkit.plugins"')
    _spec_and_path(p)
    _json(p, "print JSON (a list of plugin records) instead of a table")
    p.set_defaults(run=_cmd_list)

    p = sub.add_parser("inspect", help="show everything known of one plugin (imports no plugin code unless --load)")
    p.add_argument("group", help="entry-point group")
    p.add_argument("name", help="the plugin's name (its entry point's name)")
    _spec_and_path(p)
    p.add_argument(
        "--load",
        action="store_true",
        help="load the plugin as a host would (runs its code; needs --spec): show where it runs and its incidents",
    )
    _json(p, "print the plugin's record as JSON")
    p.set_defaults(run=_cmd_inspect)

    p = sub.add_parser(
        "check",
        help="validate a plugin project: build its wheel and check what a host will find in it",
        description=_CHECK_DESCRIPTION,
        epilog=_CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", type=Path, help="the plugin project (the directory holding pyproject.toml)")
    p.add_argument("--spec", help="the host spec as module:OBJECT (default: [tool.pluginsdk] spec)")
    p.add_argument("--no-build", action="store_true", help="check the source tree instead of a built wheel (faster)")
    _json(p, "print the outcome as JSON")
    p.set_defaults(run=_cmd_check)

    p = sub.add_parser(
        "doctor",
        help="what is installed, which isolation levels work here, the caches, and (given a group) each plugin",
    )
    p.add_argument("group", nargs="?", help="also check the plugins of this entry-point group")
    _spec_and_path(p)
    p.add_argument("--config", type=Path, help="the host's policy file: where its isolated plugins run (local, Ray)")
    _json(p, "print the report as JSON")
    p.set_defaults(run=_cmd_doctor)

    wasm = sub.add_parser("wasm", help="the WebAssembly sandbox")
    wsub = wasm.add_subparsers(metavar="ACTION")
    p = wsub.add_parser(
        "warm",
        help="prepare the sandbox now, so no first call waits for it: compile the interpreter, or (component"
        " engine) build every installed sandboxed plugin's component",
    )
    p.add_argument("--interpreter", help="a python.wasm of your own (default: the bundled one)")
    p.add_argument(
        "--engine",
        choices=("interpreter", "component"),
        help="the sandbox engine to prepare (default: PLUGINSDK_WASM_ENGINE, else interpreter)",
    )
    p.add_argument(
        "--path", action="append", help="search only this directory for plugins (component engine; repeatable)"
    )
    _json(p, "print the outcome as JSON")
    p.set_defaults(run=_cmd_wasm_warm)
    p = wsub.add_parser("prune", help="remove cached interpreters and libraries no sandbox has used lately")
    _days(p)
    _json(p, "print what was removed as JSON")
    p.set_defaults(run=_cmd_wasm_prune)

    env = sub.add_parser("env", help="private environments of plugins whose manifest has [environment]")
    esub = env.add_subparsers(metavar="ACTION")
    p = esub.add_parser("list", help="list the environments made so far")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_env_command("list"))
    p = esub.add_parser("sync", help="make every environment the installed plugins of a group need, now")
    p.add_argument("group", help='entry-point group, such as "textkit.plugins"')
    _spec_and_path(p)
    p.add_argument("--config", type=Path, help="the host's policy file ([policy.environments]: indexes, allowed)")
    p.set_defaults(run=_env_command("sync"))
    p = esub.add_parser("prune", help="remove environments no plugin has used lately")
    _days(p)
    _json(p, "print what was removed as JSON")
    p.set_defaults(run=_env_command("prune"))
    return parser


def _no_plugins(args: argparse.Namespace) -> str:
    from ._survey import group_hint

    hint = group_hint(args.group, args.path)
    message = f"no plugins in group {_safe(repr(args.group))}"
    return message + (f"; did you mean {_safe(repr(hint))}?" if hint else "")


def _cmd_list(args: argparse.Namespace) -> int:
    spec, found = _discover(args)
    if args.json:
        _print_json([c.to_json() for c in found])
        if not found:
            print(f"pluginsdk: {_no_plugins(args)}", file=sys.stderr)
        return EXIT_OK
    if not found:
        print(_no_plugins(args))
        return EXIT_OK
    rows: list[tuple[str, ...]] = [("NAME", "DISTRIBUTION", "VERSION", "ISOLATION", "REQUIRES", "STATUS")]
    for c in found:
        status = c.status if not c.reason else f"{c.status}: {c.reason.splitlines()[0]}"
        cells = (c.name, c.dist, c.version, c.isolation or "-", c.requires or "-", status)
        rows.append(tuple(_safe(cell) for cell in cells))
    _table(rows)
    if spec is None:
        print(
            "pluginsdk: spec versions not judged; pass --spec module:OBJECT to judge them as the host would",
            file=sys.stderr,
        )
    return EXIT_OK


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .config import AVAILABLE, LOADED

    if args.load and not args.spec:
        from ._errors import ConfigError

        raise ConfigError("--load needs --spec: a plugin is loaded against its host's spec")
    _, found = _discover(args)
    match = [c for c in found if c.name == args.name]
    if not match:
        return _unknown_plugin(args, [c.name for c in found])
    c = match[0]
    record = c.to_json()
    info = None
    if args.load:
        from ._progress import Progress

        with Progress(f"loading plugin {_safe(repr(args.name))} as a host would"):
            info = _loaded(args)
    if info is not None:  # the host's word on status, once it tried to load the plugin
        record.update(status=info.status, reason=info.reason, runtime=info.runtime)
    if c.isolation == "wasm":
        from ._resolve import sandbox_description

        record["sandbox"] = sandbox_description()
    if info is not None and info.status == LOADED:
        record["incident_count"] = info.incident_count
        record["incidents"] = [i._asdict() for i in info.incidents]
    if args.json:
        _print_json(record)
    else:
        _print_record(record)
    return EXIT_OK if record["status"] in (AVAILABLE, LOADED) else EXIT_PROBLEMS


def _unknown_plugin(args: argparse.Namespace, names: list[str]) -> int:
    import difflib

    if not names:
        message = _no_plugins(args)
    else:
        message = f"no plugin {_safe(repr(args.name))} in group {_safe(repr(args.group))}"
        close = difflib.get_close_matches(args.name, names, n=2)
        if close:
            message += f"; did you mean {' or '.join(_safe(repr(n)) for n in close)}?"
    print(f"pluginsdk: {message}", file=sys.stderr)
    return EXIT_PROBLEMS


def _print_record(record: dict[str, Any]) -> None:
    incidents = record.pop("incidents", None)
    count = record.pop("incident_count", None)
    for key, value in record.items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value)) or "-"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        text = "-" if value in (None, "") else _safe(value, multiline=key == "reason")
        print(f"{key + ':':<16}{text}")
    if count is not None:
        print(f"{'incidents:':<16}{count}")
        for incident in incidents or ():
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(incident["time"]))
            kind, hook, detail = (_safe(incident[k] or "-") for k in ("kind", "hook", "detail"))
            print(f"{'':<16}{when}  {kind}  {hook}  {detail}")


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


def _cmd_check(args: argparse.Namespace) -> int:
    from ._progress import Progress
    from .check import check

    if args.no_build:
        report = check(args.path, spec_ref=args.spec, build=False, load_spec=_load_spec)
    else:
        with Progress(f"checking {_safe(args.path)}") as progress:
            report = check(args.path, spec_ref=args.spec, load_spec=_load_spec, step=progress.step)
    if args.json:
        _print_json(report.to_json())
        return report.exit_code
    for note in report.notes:
        print(f"ok: {_safe(note)}")
    for problem in report.problems:
        print(f"error: {_safe(problem, multiline=True)}", file=sys.stderr)
    where = _safe(args.path)
    if report.exit_code == EXIT_OK:
        print(f"{where}: plugin project is valid" + (f" ({_safe(report.wheel)} checked)" if report.wheel else ""))
    elif report.exit_code == EXIT_PROBLEMS:
        print(f"{where}: {len(report.problems)} problem(s)", file=sys.stderr)
    return report.exit_code


def _cmd_doctor(args: argparse.Namespace) -> int:
    from ._doctor import diagnose

    spec = _load_spec(args.spec) if args.spec else None
    group = args.group or (spec.group if spec is not None else None)
    if spec is not None and group != spec.group:
        from ._errors import ConfigError

        raise ConfigError(f"spec {spec.name!r} uses group {spec.group!r}, not {group!r}")
    from .policy import Policy

    policy = Policy.from_toml(args.config) if args.config else None
    report = diagnose(group=group, spec=spec, path=args.path, policy=policy)
    if args.json:
        _print_json(report.to_json())
    else:
        for line in report.lines():
            print(_safe(line))
    return EXIT_PROBLEMS if report.broken else EXIT_OK


def _cmd_wasm_warm(args: argparse.Namespace) -> int:
    from ._errors import ConfigError
    from ._resolve import isolation_unavailable
    from .backends.wasm import wasm_engine

    try:
        engine = wasm_engine({"wasm_engine": args.engine})
    except ConfigError as exc:
        print(f"pluginsdk: {_safe(exc.message)}", file=sys.stderr)
        return EXIT_USAGE
    if engine == "component":
        return _warm_components(args)

    explicit = args.interpreter or os.environ.get("PLUGINSDK_WASM_PYTHON") or None
    why = isolation_unavailable("wasm", wasm_interpreter=explicit)
    if why is not None:
        print(f"pluginsdk: the WASM sandbox is not available: {_safe(why)}", file=sys.stderr)
        return EXIT_PROBLEMS
    from ._doctor import warm_sandbox

    outcome = warm_sandbox(explicit)
    if args.json:
        _print_json(outcome)
    elif outcome["built"]:
        print(
            f"prepared the sandbox in {outcome['seconds']:.1f} s ({', '.join(outcome['built'])});"
            f" compiled interpreter cached at {outcome['module']}"
        )
    else:
        print(f"the sandbox cache was already warm (checked in {outcome['seconds']:.1f} s): {outcome['module']}")
    return EXIT_OK


def _warm_components(args: argparse.Namespace) -> int:
    """``wasm warm`` on the component engine: build every installed sandboxed plugin's component."""
    from ._component import unavailable_reason

    why = unavailable_reason()
    if why is not None:
        print(f"pluginsdk: the component sandbox is not available: {_safe(why)}", file=sys.stderr)
        return EXIT_PROBLEMS
    from ._component.backend import warm_components
    from ._progress import Progress

    with Progress("looking for sandboxed plugins") as progress:
        records = warm_components(args.path, progress=progress.step)
        seconds = progress.elapsed
    failed = [r for r in records if r["outcome"] == "failed"]
    if args.json:
        _print_json({"engine": "component", "plugins": records, "seconds": seconds})
    else:
        for r in records:
            took = f" in {r['seconds']:.1f} s" if r["outcome"] == "built" else ""
            print(_safe(f"{r['name']} ({r['group']}): {r['outcome']}{took}: {r['detail']}"))
        built = sum(r["outcome"] == "built" for r in records)
        print(f"{len(records)} sandboxed plugins, {built} built, {len(failed)} failed ({seconds:.1f} s)")
    return EXIT_PROBLEMS if failed else EXIT_OK


def _cmd_wasm_prune(args: argparse.Namespace) -> int:
    from ._wasm import prune_cache

    return _prune(args, prune_cache, "cache entries")


def _env_command(action: str) -> Callable[[argparse.Namespace], int]:
    """``pluginsdk env ACTION``, imported when it runs (see :mod:`pluginsdk._cli_env`)."""

    def run(args: argparse.Namespace) -> int:
        from . import _cli_env

        command: Callable[[argparse.Namespace], int] = getattr(_cli_env, f"cmd_{action}")
        return command(args)

    return run
