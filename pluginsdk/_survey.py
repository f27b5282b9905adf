"""What the command line says of installed plugins: honest statuses, and "did you mean" for names.

Discovery without a host spec validates manifests but judges nothing else;
a plugin it calls ``available`` may still be one no host of the group could
run.  :func:`judge` adds what can be known without the spec: the spec name
the manifest ``requires`` against the group's (``NAME.plugins``), and
whether the plugin's isolation level can run here (the host's own check,
:func:`pluginsdk._resolve.isolation_unavailable`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .config import AVAILABLE, FAILED, INCOMPATIBLE, UNAVAILABLE

if TYPE_CHECKING:
    from .discovery import Candidate
    from .spec import HookSpec

__all__ = ["entry_point_groups", "group_hint", "hook_hint", "judge", "spec_name_of_group"]

_SUFFIX = ".plugins"


def spec_name_of_group(group: str) -> str | None:
    """The spec name a group is named after (``textkit.plugins`` -> ``textkit``), if it follows the rule."""
    return group[: -len(_SUFFIX)] if group.endswith(_SUFFIX) and len(group) > len(_SUFFIX) else None


def judge(found: Iterable[Candidate], group: str, spec: HookSpec | None) -> list[Candidate]:
    """``found`` with the statuses a host of ``group`` would give before loading anything.

    With a spec, discovery has judged compatibility; without one, a manifest
    requiring another spec than the group's is ``incompatible``.  Either
    way, an ``available`` plugin whose isolation level cannot run here is
    ``unavailable``, and a hook the spec lacks gets a "did you mean".
    """
    from ._metadata import normalize
    from ._resolve import isolation_unavailable
    from .config import ISOLATION_LEVELS
    from .manifest import parse_requires

    expected = spec_name_of_group(group) if spec is None else None
    judged = []
    for c in found:
        if c.status == AVAILABLE and expected is not None and c.requires:
            try:
                wanted = parse_requires(c.requires)[0]
            except ValueError:  # discovery validated it; nothing to add
                wanted = expected
            if normalize(wanted) != normalize(expected):
                reason = f"requires spec {wanted!r}, but group {group!r} is for spec {expected!r}"
                c = c._replace(status=INCOMPATIBLE, reason=reason)
        if c.status == AVAILABLE and c.isolation in ISOLATION_LEVELS and c.isolation != "inprocess":
            why = isolation_unavailable(c.isolation)
            if why is not None:
                c = c._replace(status=UNAVAILABLE, reason=why)
        if c.status == FAILED and spec is not None:
            hint = hook_hint([h for h in c.hooks if h not in spec.hook_defs], spec)
            if hint and hint not in c.reason:
                c = c._replace(reason=f"{c.reason}; {hint}")
        judged.append(c)
    return judged


def hook_hint(unknown: Sequence[str], spec: HookSpec) -> str:
    """``did you mean 'transform'?`` for the first of ``unknown`` close to a hook of ``spec``, else ``""``."""
    known = sorted(spec.hook_defs)
    for name in unknown:
        if spec.future_hook(name) is not None:
            continue
        close = _close(name, known)
        if close:
            return f"did you mean {' or '.join(repr(n) for n in close)} (not {name!r})?"
    return ""


def _close(name: str, known: Sequence[str]) -> list[str]:
    import difflib  # only on a failure's path

    return difflib.get_close_matches(name, known, n=2, cutoff=0.6)


def entry_point_groups(path: Sequence[str] | None = None) -> set[str]:
    """Every entry-point group declared by a distribution on ``path`` (default ``sys.path``).

    Reads each ``entry_points.txt`` once: only asked when a group came up empty.
    """
    import sys

    from ._metadata import ENTRY_POINTS_MAX_BYTES

    groups: set[str] = set()
    for entry in list(sys.path if path is None else path):
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(os.path.join(entry or ".", name, "entry_points.txt"), "rb") as f:
                    raw = f.read(ENTRY_POINTS_MAX_BYTES)
            except OSError:
                continue
            for line in raw.decode("utf-8", "replace").splitlines():
                line = line.strip()
                if line.startswith("[") and line.endswith("]"):
                    groups.add(line[1:-1].strip())
    return groups


def group_hint(group: str, path: Sequence[str] | None = None) -> str | None:
    """An installed entry-point group the user probably meant by ``group``, or ``None``.

    ``textkit`` suggests ``textkit.plugins``; a misspelling suggests the
    closest group.
    """
    groups = entry_point_groups(path) - {group}
    if not groups:
        return None
    if group + _SUFFIX in groups:
        return group + _SUFFIX
    prefixed = sorted(g for g in groups if g.startswith(group + "."))
    if prefixed:
        return prefixed[0]
    close = _close(group, sorted(groups))
    return close[0] if close else None
