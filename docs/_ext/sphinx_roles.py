"""A griffe extension: the SDK's Sphinx-style roles, as mkdocstrings cross-references.

pluginsdk's docstrings name other objects the Sphinx way (``:class:`Limits```,
``:func:`~pluginsdk.codec.from_wire```).  Markdown has no such roles, so this
rewrites each one, once the package is loaded, before mkdocstrings renders it:

* a target that resolves (from the docstring's own scope, as Python would
  resolve the name there) to an object the reference documents becomes a link,
  ``[`Limits`][pluginsdk.config.Limits]``;
* any other target (a private module, another project) becomes plain code;
* ``text::`` before an indented literal block loses one colon (the block is
  Markdown code as it is).

So the docstrings stay as they are, and a link to a documented object that does
not resolve fails the strict build (autorefs warns) rather than rendering as text.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import griffe

logger = griffe.logger

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|mod|attr|exc|obj|const):`(?P<tilde>~?)(?P<target>[^`]+)`")
LITERAL = re.compile(r"(\S)::$", re.MULTILINE)

# What the API reference renders (docs/reference/*.md); links go only there.
DOCUMENTED = (
    "pluginsdk.config",
    "pluginsdk.testing",
    "pluginsdk.guest.protocol",
    "pluginsdk.codec",
    "pluginsdk._dispatch.SDKHookCaller",
)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of the loaded package."""

    def __init__(self, documented: list[str] | None = None) -> None:
        super().__init__()
        self.documented = tuple(documented or DOCUMENTED)
        self.root_names: set[str] = set()
        # Where each name the package root exports is defined -> its name at the root ("pluginsdk.Host").
        self.exported: dict[str, str] = {}

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path != "pluginsdk":
            return
        self.root_names = {str(n) for n in (pkg.exports or ())}
        for name in self.root_names:
            member = pkg.members.get(name)
            if isinstance(member, griffe.Alias):
                self.exported[member.target_path] = f"pluginsdk.{name}"
        rendered = (*self.documented, *self.exported)
        for obj in _walk(pkg):
            if obj.docstring is not None and ":" in obj.docstring.value:
                shown = any(obj.path == r or obj.path.startswith(r + ".") for r in rendered)
                text = ROLE.sub(functools.partial(self._rewrite, obj, rendered=shown), obj.docstring.value)
                # RST's "text::" before an indented literal block: in Markdown the block is code already.
                obj.docstring.value = LITERAL.sub(r"\1:", text)

    def _rewrite(self, obj: griffe.Object, match: re.Match[str], *, rendered: bool) -> str:
        target = match["target"].strip().rstrip("()")
        shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
        path = _resolve(obj, target.lstrip("."))
        if path is None:
            first = target.lstrip(".").split(".")[0]
            if rendered and not _importable(first) and not _assigned(obj, first):
                # A name that is neither pluginsdk's nor an importable module's: a typo, or a renamed object.
                logger.warning("%s: cross-reference %r names nothing", obj.path, match[0])
            return f"`{shown}`"
        path = self._at_root(path)
        if not self._linked(path):
            return f"`{shown}`"
        return f"[`{shown}`][{path}]"

    def _at_root(self, path: str) -> str:
        """``path`` under the name the package root exports it by, if it is (or is inside) an exported object."""
        for defined, exported in self.exported.items():
            if path == defined or path.startswith(defined + "."):
                return exported + path[len(defined) :]
        return path

    def _linked(self, path: str) -> bool:
        """Whether the reference renders ``path``: a documented object, none of whose own parts is private."""
        parts = path.split(".")
        if len(parts) >= 2 and parts[0] == "pluginsdk" and parts[1] in self.root_names:
            return not any(p.startswith("_") for p in parts[2:])
        for mod in self.documented:
            if path == mod:
                return True
            if path.startswith(mod + "."):
                return not any(p.startswith("_") for p in path[len(mod) + 1 :].split("."))
        return False


def _assigned(obj: griffe.Object, name: str) -> bool:
    """Whether ``obj``'s module assigns ``name`` where griffe does not see it (``A, B = 1, 2``)."""
    source = obj.module.source if obj.module is not None else ""
    return re.search(rf"^(?:\w+\s*,\s*)*{re.escape(name)}\s*(?:,\s*\w+\s*)*=(?!=)", source, re.MULTILINE) is not None


def _importable(name: str) -> bool:
    """Whether ``name`` is a top-level module this environment has (``cattrs``, ``concurrent``...)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias and member.parent is obj:
            found.extend(_walk(member))  # type: ignore[arg-type]
    return found


def _resolve(obj: griffe.Object, target: str) -> str | None:
    """The full path ``target`` names from ``obj``'s scope, or ``None`` outside pluginsdk."""
    first, _, rest = target.partition(".")
    if first == "pluginsdk":
        return target
    scope: griffe.Object | None = obj if (obj.is_class or obj.is_module) else obj.parent
    while scope is not None:
        if first in scope.members:
            member = scope.members[first]
            base = member.target_path if isinstance(member, griffe.Alias) else member.path
            path = f"{base}.{rest}" if rest else base
            return path if path.startswith("pluginsdk") else None
        scope = scope.parent
    return None
