"""What a sandboxed plugin's manifest may add to its sandbox besides its dependencies (host side).

A ``wasm`` plugin gets its distribution's dependency closure without asking
(see :mod:`pluginsdk._closure` and :mod:`pluginsdk._wasm.deps`).  Its
manifest may also ask, under ``[wasm] packages``, for pure-Python packages
to be mounted read-only in its sandbox, each by itself (the package
directory only, no metadata): in practice packages the host's policy allows
beyond the closure.  The manifest is the plugin's own word, so it can only
*ask*: the host decides, and a package is mounted only if

- it is what import would find on the host's search path, and a directory
  (or ``.py`` file) that an installed distribution's ``RECORD`` says it
  installed (a bare directory, such as one beside the host's script, never
  is; ``top_level.txt`` is not evidence, since a wheel writes what it likes
  there, while ``RECORD`` lists the files the installer wrote);
- every distribution with files in it is the plugin's own, in its dependency
  closure (``Requires-Dist``, recursively, with markers and extras
  evaluated), or allowed by the host's policy (``Policy.wasm_packages``,
  by distribution or by top-level name);
- none of them is another plugin (a distribution with entry points in the
  host's group), whatever the policy says.

Anything else is refused with a :class:`~pluginsdk.PluginLoadError` naming
the plugin, the package and why.
"""

from __future__ import annotations

import csv
import importlib.machinery
import os
from collections.abc import Collection, Iterator, Sequence
from typing import NamedTuple

from ._errors import PluginLoadError
from ._metadata import normalize, parse_entry_points

__all__ = ["wasm_package_dirs"]

_NATIVE_SUFFIXES = (*importlib.machinery.EXTENSION_SUFFIXES, ".so", ".pyd", ".dylib")


class _Dist(NamedTuple):
    name: str  # as METADATA spells it
    meta_dir: str
    path_entry: str  # real path of the directory holding it


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(path or "."))


def _read(meta_dir: str, name: str) -> str | None:
    try:
        with open(os.path.join(meta_dir, name), encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _metadata_field(text: str, field: str) -> Iterator[str]:
    """Values of header ``field`` in METADATA / PKG-INFO text (headers end at the first blank line)."""
    for line in text.split("\n\n", 1)[0].splitlines():  # the body (a long description) is never read
        if not line.strip():
            return
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == field.lower():
            yield value.strip()


class _Installed:
    """The distributions on a search path, first on the path winning, as import would see them."""

    def __init__(self, search_path: Sequence[str]) -> None:
        self.dists: dict[str, _Dist] = {}
        self.by_entry: dict[str, list[_Dist]] = {}
        for entry in search_path:
            directory = entry or "."
            try:
                names = sorted(os.listdir(directory))
            except OSError:
                continue
            real = _real(directory)
            for name in names:
                if not name.endswith((".dist-info", ".egg-info")):
                    continue
                meta_dir = os.path.join(directory, name)
                text = _read(meta_dir, "METADATA") or _read(meta_dir, "PKG-INFO") or ""
                dist_name = next(_metadata_field(text, "Name"), name.split("-")[0])
                dist = _Dist(dist_name, meta_dir, real)
                self.by_entry.setdefault(real, []).append(dist)
                self.dists.setdefault(normalize(dist_name), dist)

    def requires(self, key: str, extras: frozenset[str]) -> Iterator[tuple[str, frozenset[str]]]:
        """``(normalized name, extras)`` of what ``key`` requires, markers evaluated here."""
        from packaging.requirements import InvalidRequirement, Requirement

        dist = self.dists.get(key)
        if dist is None:
            return
        text = _read(dist.meta_dir, "METADATA") or _read(dist.meta_dir, "PKG-INFO") or ""
        for line in _metadata_field(text, "Requires-Dist"):
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue  # an installer would have refused it; it grants nothing
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
                continue
            yield normalize(req.name), frozenset(req.extras)

    def closure(self, root: str) -> set[str]:
        """``root`` and every installed distribution it requires, recursively (normalized names)."""
        seen: set[tuple[str, frozenset[str]]] = set()
        todo = [(normalize(root), frozenset[str]())]
        while todo:
            item = todo.pop()
            if item in seen:
                continue
            seen.add(item)
            todo += self.requires(*item)
        return {name for name, _ in seen if name in self.dists}

    @staticmethod
    def installed_tops(dist: _Dist) -> set[str]:
        """Top-level names ``dist``'s installer wrote files under (``RECORD``, else ``installed-files.txt``)."""
        tops: set[str] = set()
        record = _read(dist.meta_dir, "RECORD")
        if record is not None:
            paths = [row[0] for row in csv.reader(record.splitlines()) if row]
        else:  # egg-info: paths relative to the egg-info directory
            listed = _read(dist.meta_dir, "installed-files.txt") or ""
            paths = [os.path.normpath(os.path.join(os.path.basename(dist.meta_dir), p)) for p in listed.splitlines()]
        for path in paths:
            parts = path.replace("\\", "/").split("/")
            first = parts[0]
            if not first or first in ("..", ".", "__pycache__") or first.endswith((".dist-info", ".egg-info")):
                continue
            if len(parts) > 1:
                tops.add(first)
            elif first.endswith(".py"):
                tops.add(first[:-3])
            elif first.endswith(_NATIVE_SUFFIXES):
                tops.add(first.split(".")[0])
        return tops

    def is_plugin(self, dist: _Dist, group: str) -> bool:
        text = _read(dist.meta_dir, "entry_points.txt")
        if not text or group not in text:
            return False
        try:
            return bool(parse_entry_points(text, group))
        except ValueError:
            return True  # unreadable: treat as a plugin, which is never mounted


def wasm_package_dirs(
    plugin: str,
    dist_name: str,
    requested: Sequence[str],
    allowed: Collection[str],
    search_path: Sequence[str],
    *,
    group: str | None = None,
) -> list[tuple[str, str, bool]]:
    """``(top_level_name, host_path, is_single_file_module)`` for each package plugin ``plugin`` may have mounted.

    Args:
        plugin: The plugin's name, for error messages.
        dist_name: The distribution that provides the plugin.
        requested: Top-level names its manifest lists under ``[wasm] packages``.
        allowed: Distribution names or top-level names the host's policy allows
            beyond the plugin's dependency closure.
        search_path: Where the host finds them (as import would, in order).
        group: The host's entry-point group: distributions with entry points
            there are plugins, whose packages are never mounted in another's sandbox.

    Raises:
        PluginLoadError: A requested package is not eligible (see the module docstring).
    """
    if not requested:
        return []
    installed = _Installed(search_path)
    closure = installed.closure(dist_name)
    allowed_dists = {normalize(a) for a in allowed}
    own = normalize(dist_name)
    found: list[tuple[str, str, bool]] = []
    for name in dict.fromkeys(requested):

        def refuse(why: str, name: str = name) -> PluginLoadError:
            return PluginLoadError(f"[wasm] packages lists {name!r}, {why}", plugin=plugin)

        if not name.isidentifier():
            raise refuse("which is not a top-level package name")
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, list(search_path))
        except (ImportError, ValueError) as exc:
            raise refuse(f"which cannot be located: {exc}") from None
        if spec is None:
            raise refuse("which is not installed")
        locations = list(spec.submodule_search_locations or ())
        if locations:
            if len(locations) != 1:
                raise refuse(f"a namespace package spread over {len(locations)} directories, which is not mounted")
            host_path, single = locations[0], False
        elif spec.origin and spec.origin.endswith(".py"):
            host_path, single = spec.origin, True
        elif spec.origin and spec.origin.endswith(_NATIVE_SUFFIXES):
            raise refuse("a C extension, which cannot run in the sandbox")
        else:
            raise refuse(f"which is not a directory or .py file on disk ({spec.origin})")
        if not os.path.exists(host_path):
            raise refuse(f"which is not a directory or .py file on disk ({host_path})")
        entry = _real(os.path.dirname(host_path))
        owners = [d for d in installed.by_entry.get(entry, ()) if name in installed.installed_tops(d)]
        if not owners:
            raise refuse(
                f"but {host_path} belongs to no installed distribution; only packages that an installed"
                " distribution in the plugin's dependencies (or the host's policy) provides are mounted"
            )
        for owner in owners:
            key = normalize(owner.name)
            if key != own and group is not None and installed.is_plugin(owner, group):
                raise refuse(
                    f"a package of plugin distribution {owner.name!r}; one plugin's sandbox never mounts another's"
                )
            if key not in closure and key not in allowed_dists and name not in allowed:
                raise refuse(
                    f"a package of distribution {owner.name!r}, which is neither a dependency of {dist_name!r}"
                    " (its Requires-Dist, recursively) nor allowed by the host's policy (wasm_packages)"
                )
        found.append((name, host_path, single))
    return found
