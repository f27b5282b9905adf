"""A sandboxed plugin's dependencies, from its distribution's own metadata (host side).

A ``wasm`` plugin runs on an interpreter that is not the host's (CPython 3.12
on WASI), so its dependencies are resolved *for the guest*: the plugin's
distribution's ``Requires-Dist``, recursively, with environment markers
evaluated as the guest sees them (``sys_platform == "wasi"``,
``python_version == "3.12"``, ...; see :func:`guest_environment`), against the
distributions installed on the host's search path (first on the path winning,
as import would see them).

* A requirement of a dependency that is not installed, or whose installed
  version its specifier refuses, fails the plugin's load with the chain that
  led to it: ``textkit-user -> jinja2 -> markupsafe>=2.0: not installed``.
* The plugin's own extras (``Provides-Extra``) are not followed: an installer
  records none, and what a development install adds (a ``test`` extra's
  pytest...) has no place in a sandbox.  A dependency's extras that a
  requirement asks for (``jinja2[i18n]``) are followed like any requirement.
* The SDK's own distribution, and distributions whose packages the sandbox
  already provides (its guest libraries: pluggy, msgpack, attrs/cattrs), are
  checked against their specifier but neither mounted nor followed.
* Another plugin's distribution (one with entry points in the host's group)
  is never mounted in a plugin's sandbox: a closure that reaches one fails.

A plugin with a private environment (``[environment]`` in its manifest) gets
instead what its declared dependencies need, resolved the same way against
the environment's site-packages, not the host's (:func:`resolve_environment`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from ._deps import _Dist, _Installed, _metadata_field, _read
from ._errors import PluginLoadError
from ._metadata import normalize

if TYPE_CHECKING:
    from packaging.requirements import Requirement

__all__ = ["GUEST_PYTHON", "SDK_DIST", "Dependency", "guest_environment", "resolve", "resolve_environment"]

#: The guest interpreter's Python version when its file name does not say (the bundled one is 3.12.0).
GUEST_PYTHON = "3.12.0"
#: The SDK's own distribution: its guest side is in the sandbox already (``/lib``).
SDK_DIST = "pluginsdk-isolated"


def guest_environment(interpreter_name: str = "") -> dict[str, str]:
    """The PEP 508 marker environment of the sandbox's interpreter (every key set: none falls back to the host's).

    The Python version comes from the interpreter's file name when it has one
    (``python-3.12.0.wasm``), else :data:`GUEST_PYTHON`.  The other values are
    what the bundled CPython on WASI reports (``sys.platform``, ``os.name``,
    ``platform.system()``, ``platform.machine()``, ...), as
    :func:`packaging.markers.default_environment` would compute them inside.
    """
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", interpreter_name)
    full = ".".join(found.groups()) if found else GUEST_PYTHON
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": "posix",
        "platform_machine": "wasm32",
        "platform_python_implementation": "CPython",
        "platform_release": "0.0.0",
        "platform_system": "wasi",
        "platform_version": "0.0.0",
        "python_full_version": full,
        "python_version": ".".join(full.split(".")[:2]),
        "sys_platform": "wasi",
    }


class Dependency(NamedTuple):
    """One installed distribution a sandboxed plugin gets.

    Attributes:
        name: As its metadata spells it.
        version: Its installed version.
        meta_dir: Its ``.dist-info`` (or ``.egg-info``) directory.
        path_entry: The search-path entry holding it.
        chain: How the plugin's distribution reaches it (``("textkit-user", "jinja2>=3")``).
        root: Whether it is the plugin's own distribution (only its metadata is mounted).
        optional: Whether only the plugin's extras need it (left out, not an error, if the sandbox refuses it).
    """

    name: str
    version: str
    meta_dir: str
    path_entry: str
    chain: tuple[str, ...]
    root: bool = False
    optional: bool = False


def _version(dist: _Dist) -> str:
    text = _read(dist.meta_dir, "METADATA") or _read(dist.meta_dir, "PKG-INFO") or ""
    return next(_metadata_field(text, "Version"), "")


def resolve(
    plugin: str,
    dist_name: str,
    search_path: Sequence[str],
    *,
    env: Mapping[str, str],
    group: str | None = None,
    provided: Collection[str] = (),
    installed: _Installed | None = None,
) -> list[Dependency]:
    """The plugin's distribution and every installed distribution it needs in the sandbox, in resolution order.

    Empty if the plugin's distribution is not installed on ``search_path``.

    Args:
        plugin: The plugin's name, for error messages.
        dist_name: The distribution providing it.
        search_path: Where the host finds distributions, in order.
        env: The guest's marker environment (:func:`guest_environment`).
        group: The host's entry-point group (distributions with entry points there are plugins).
        provided: Top-level names the sandbox provides itself (the guest libraries).

    Raises:
        PluginLoadError: A requirement is missing, unsatisfied, or another plugin (see the module docstring).
    """
    installed = installed or _Installed(search_path)
    own = normalize(dist_name)
    root = installed.dists.get(own)
    if root is None:  # no metadata to go by (a backend built by hand): nothing but what is asked for
        return []
    walk = _Walk(plugin, own, installed, env, group, provided)
    found = {own: Dependency(root.name, _version(root), root.meta_dir, root.path_entry, (), True)}
    text = _read(root.meta_dir, "METADATA") or _read(root.meta_dir, "PKG-INFO") or ""
    walk.run(found, [(req, (root.name,)) for req, _ in walk.requirements(text, frozenset())])
    return list(found.values())


def resolve_environment(
    plugin: str,
    dist_name: str,
    search_path: Sequence[str],
    dependencies: Sequence[str],
    site: Sequence[str],
    *,
    env: Mapping[str, str],
    group: str | None = None,
    provided: Collection[str] = (),
) -> list[Dependency]:
    """The plugin's distribution, and what its private environment's ``dependencies`` need in the sandbox.

    As :func:`resolve`, but the requirements followed are ``dependencies``
    (the manifest's ``[environment]``, markers evaluated for the guest), and
    they are resolved against the distributions installed in ``site`` (the
    environment's site-packages), never the host's.  The plugin's own
    distribution is looked up on ``search_path`` (for its metadata only: its
    ``Requires-Dist`` is not followed, as a worker in the environment would
    not see them either).

    Raises:
        PluginLoadError: A requirement is missing, unsatisfied, or another plugin (see the module docstring).
    """
    from packaging.requirements import InvalidRequirement, Requirement

    own = normalize(dist_name)
    found: dict[str, Dependency] = {}
    root = _Installed(search_path).dists.get(own)
    if root is not None:
        found[own] = Dependency(root.name, _version(root), root.meta_dir, root.path_entry, (), True)
    start = f"{root.name if root is not None else dist_name} [environment]"
    todo: list[tuple[Requirement, tuple[str, ...]]] = []
    for line in dependencies:
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise PluginLoadError(f"invalid [environment] dependency {line!r}: {exc}", plugin=plugin) from None
        if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
            todo.append((req, (start,)))
    _Walk(plugin, own, _Installed(site), env, group, provided).run(found, todo)
    return list(found.values())


class _Walk:
    """Following requirements through the installed distributions (see :func:`resolve`)."""

    def __init__(
        self,
        plugin: str,
        own: str,
        installed: _Installed,
        env: Mapping[str, str],
        group: str | None,
        provided: Collection[str],
    ) -> None:
        self.plugin, self.own, self.installed, self.env = plugin, own, installed, env
        self.group, self.provided = group, provided

    def requirements(self, text: str, extras: frozenset[str]) -> Iterator[tuple[Requirement, bool]]:
        """``(requirement, only through an extra)`` for each ``Requires-Dist`` of ``text`` the guest needs."""
        from packaging.requirements import InvalidRequirement, Requirement

        for line in _metadata_field(text, "Requires-Dist"):
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue  # an installer would have refused it; it grants nothing
            if req.marker is None or req.marker.evaluate({**self.env, "extra": ""}):
                yield req, False
            elif any(req.marker.evaluate({**self.env, "extra": e}) for e in extras):
                yield req, True
            # else: not for the guest

    def run(self, found: dict[str, Dependency], todo: list[tuple[Requirement, tuple[str, ...]]]) -> None:
        """Add what ``todo``'s requirements need to ``found``, breadth first.

        Raises:
            PluginLoadError: A requirement is missing, unsatisfied, or another plugin.
        """
        from packaging.version import InvalidVersion, Version

        seen: set[tuple[str, frozenset[str]]] = set()
        while todo:
            req, chain = todo.pop(0)
            key = normalize(req.name)
            spec = str(req.specifier)
            link = f"{req.name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}{spec}"
            path = " -> ".join((*chain, link))
            dep = self.installed.dists.get(key)
            if dep is None:
                raise PluginLoadError(f"{path}: not installed", plugin=self.plugin)
            version = _version(dep)
            try:
                ok = req.specifier.contains(Version(version), prereleases=True)
            except InvalidVersion:
                ok = not spec
            if not ok:
                raise PluginLoadError(f"{path}: installed {version} does not satisfy {spec}", plugin=self.plugin)
            extras = frozenset(normalize(e) for e in req.extras)
            if key == self.own or key == normalize(SDK_DIST) or _provided(self.installed, dep, self.provided):
                continue  # in the sandbox already: checked, not mounted, not followed
            if self.group is not None and self.installed.is_plugin(dep, self.group):
                raise PluginLoadError(
                    f"{path}: {dep.name!r} is a plugin distribution (entry points in {self.group!r}); one"
                    " plugin's sandbox never mounts another's",
                    plugin=self.plugin,
                )
            if (key, extras) in seen:
                continue
            seen.add((key, extras))
            found.setdefault(key, Dependency(dep.name, version, dep.meta_dir, dep.path_entry, (*chain, link)))
            text = _read(dep.meta_dir, "METADATA") or _read(dep.meta_dir, "PKG-INFO") or ""
            todo += [(sub, (*chain, link)) for sub, _ in self.requirements(text, extras)]


def _provided(installed: _Installed, dist: _Dist, provided: Collection[str]) -> bool:
    """Whether every top-level package of ``dist`` is one the sandbox provides itself."""
    tops = installed.installed_tops(dist)
    return bool(tops) and tops <= set(provided)


def record_paths(dep: Dependency) -> list[str]:
    """Paths (relative to its search-path entry, ``/``-separated) of the files ``dep``'s installer wrote.

    ``RECORD``, else ``installed-files.txt``; paths leaving the entry (scripts,
    headers, data scheme files) are left out.
    """
    import csv

    record = _read(dep.meta_dir, "RECORD")
    if record is not None:
        paths = [row[0] for row in csv.reader(record.splitlines()) if row]
    else:  # egg-info: paths relative to the egg-info directory
        listed = _read(dep.meta_dir, "installed-files.txt") or ""
        base = os.path.basename(dep.meta_dir)
        paths = [os.path.join(base, p) for p in listed.splitlines() if p.strip()]
    out = []
    for path in paths:
        norm = os.path.normpath(path.replace("\\", "/")).replace("\\", "/")
        if norm.startswith(("../", "/")) or norm in ("..", ".") or os.path.isabs(norm):
            continue
        out.append(norm)
    return out
