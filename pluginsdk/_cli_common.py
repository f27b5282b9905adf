"""What the ``pluginsdk`` command's modules share: exit statuses, safe printing, discovery as the CLI sees it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .discovery import Candidate
    from .spec import HookSpec

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_BUILD = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141


def _spec_and_path(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", help="judge compatibility against this host spec (module:OBJECT)")
    p.add_argument("--path", action="append", help="search only this directory (repeatable)")


def _json(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--json", action="store_true", help=help)


def _days(p: argparse.ArgumentParser) -> None:
    p.add_argument("--days", type=float, default=None, help="unused for this many days (default: 30; 0: all)")


def _prune(args: argparse.Namespace, prune: Callable[[float | None], Sequence[object]], what: str) -> int:
    """``wasm prune`` and ``env prune``: remove what has not been used for ``--days``; say what went."""
    if args.days is not None and args.days < 0:
        print("pluginsdk: --days must not be negative", file=sys.stderr)
        return EXIT_USAGE
    removed = prune(args.days)
    if args.json:
        _print_json({"removed": [str(p) for p in removed], "count": len(removed)})
        return EXIT_OK
    for path in removed:
        print(f"removed {_safe(path)}")
    print(f"{len(removed)} {what} removed")
    return EXIT_OK


def _print_json(value: object) -> None:
    """JSON on stdout; its escapes (ASCII only) keep plugin text from reaching the terminal raw."""
    print(json.dumps(value, indent=2, ensure_ascii=True))


def _load_spec(ref: str) -> HookSpec:
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


def _discover(args: argparse.Namespace) -> tuple[HookSpec | None, list[Candidate]]:
    """The group's plugins, with the statuses a host would give them before loading any."""
    from ._survey import judge
    from .discovery import discover

    spec = _load_spec(args.spec) if args.spec else None
    if spec is not None and spec.group != args.group:
        from ._errors import ConfigError

        raise ConfigError(f"spec {spec.name!r} uses group {spec.group!r}, not {args.group!r}")
    found = discover(spec, group=args.group, path=args.path, use_index=False)
    return spec, judge(found, args.group, spec)


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
