"""Find a spec's plugins from installed metadata, importing none of them.

Each entry point of the spec's group becomes a :class:`Candidate`: its
package directory is located with ``importlib.util.find_spec`` on the
top-level name (which runs no code of the package), its ``pluginsdk.toml``
is read as data, and its ``requires`` is checked against the spec.  Problems
are returned as data on the candidate, so one broken plugin never stops the
others being found.

Scanning metadata costs tens of milliseconds with many distributions
installed, so results are kept in an on-disk index (see :mod:`._index`) that
any install, uninstall, ``sys.path`` change or manifest edit invalidates.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _index
from ._errors import ManifestError
from .config import AVAILABLE, FAILED, INCOMPATIBLE

if TYPE_CHECKING:
    from .spec import HookSpec

__all__ = ["Candidate", "check_compatibility", "discover", "locate_package"]


__all__ += ["AVAILABLE", "FAILED", "INCOMPATIBLE"]  # the statuses live in .config


class Candidate(NamedTuple):
    """One entry point of the spec's group, as discovery found it.

    Attributes:
        name: The entry point's name: the plugin's name.
        dist: The distribution that declares it.
        version: That distribution's version.
        value: The entry point's value, ``module`` or ``module:attr``.
        module: Module part of ``value``.
        attr: Object part of ``value``, if any.
        package_dir: Directory of the top-level package, once found.
        path_entry: The ``sys.path`` entry holding the package.
        manifest_path: The ``pluginsdk.toml`` read, once found.
        requires: The manifest's ``requires``.
        isolation: The isolation the manifest asks for.
        hooks: The hooks the manifest declares.
        limits: The manifest's ``[limits]`` as a plain mapping.
        wasm_packages: Extra pure-Python packages to mount in the sandbox.
        status: ``available``, ``incompatible`` or ``failed``.
        reason: Why, when not ``available``.
        environment: The manifest's ``[environment] dependencies``, or ``None``
            when it has no ``[environment]`` table (the plugin uses the host's packages).
    """

    name: str
    dist: str
    version: str
    value: str
    module: str = ""
    attr: str | None = None
    package_dir: str | None = None
    path_entry: str | None = None
    manifest_path: str | None = None
    requires: str | None = None
    isolation: str | None = None
    hooks: tuple[str, ...] = ()
    limits: dict[str, Any] = {}  # noqa: RUF012 - a named tuple's field: never mutated
    wasm_packages: tuple[str, ...] = ()
    status: str = AVAILABLE
    reason: str = ""
    environment: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Candidate:
        data = dict(data)
        data["hooks"] = tuple(data["hooks"])
        data["wasm_packages"] = tuple(data["wasm_packages"])
        if data.get("environment") is not None:
            data["environment"] = tuple(data["environment"])
        return cls(**data)


def discover(
    spec: HookSpec | None,
    *,
    group: str | None = None,
    path: Sequence[str] | None = None,
    use_index: bool = True,
    dists: Mapping[str, str] | None = None,
) -> list[Candidate]:
    """Return every plugin of ``spec``'s group, sorted by name.

    Without a spec (``group`` then names the entry-point group), manifests
    are validated but compatibility is not judged.  ``path`` limits the
    search to those directories (default: ``sys.path``).  With
    ``use_index``, a still-valid on-disk index answers without reading any
    metadata; otherwise it is rebuilt after the scan.

    A plugin name is granted by the host, never taken: ``dists`` (the
    policy's :attr:`~pluginsdk.Policy.dists`) maps a name to the
    distribution that owns it.  A name declared by several distributions
    is given to none of them unless ``dists`` names one; every claimant is
    returned, failed, as ``"NAME (DISTRIBUTION)"`` with a reason naming
    them all.  A name ``dists`` gives to one distribution fails when
    another declares it.
    """
    if spec is not None:
        group = spec.group
    if group is None:
        raise TypeError("discover() needs a spec or a group")
    search = list(sys.path if path is None else path)
    key = _index.key(spec, search) if use_index and spec is not None else None
    if key is not None:
        cached = _index.load(key, search)
        if cached is not None:
            return _settle_names([Candidate.from_json(c) for c in cached], dists or {})  # sorted by name
    found = sorted(_scan(spec, group, search, path is None), key=lambda c: (c.name, c.dist))
    if key is not None:
        _index.store(key, search, _watched_files(found), [c.to_json() for c in found])
    return _settle_names(found, dists or {})


def _settle_names(found: list[Candidate], dists: Mapping[str, str]) -> list[Candidate]:
    """Who gets each plugin name (see :func:`discover`); sorted by name.

    Directory order must never decide: an unrelated distribution that sorts
    first would take over a name the host trusts.
    """
    claims: dict[str, list[Candidate]] = {}
    for c in found:
        claims.setdefault(c.name, []).append(c)
    if not dists and len(claims) == len(found):
        return found  # the usual case: every name claimed once, none reserved
    from ._metadata import normalize
    from ._text import clip

    settled = []
    for name, group in claims.items():
        owner = dists.get(name)
        if owner is None and len(group) == 1:
            settled += group
            continue
        claimants = ", ".join(repr(c.dist) for c in group)
        for c in group:
            if owner is not None and normalize(c.dist) == normalize(owner):
                settled.append(c)
                continue
            if owner is not None:
                reason = f"the host's policy gives plugin name {name!r} to distribution {owner!r}, not {c.dist!r}"
            else:
                reason = (
                    f"plugin name {name!r} is declared by distributions {claimants}; none of them is loaded"
                    f" until the host's policy names the one it means (Policy(dists={{{name!r}: DIST}}),"
                    " or [policy.dists] in a policy file)"
                )
            if c.status == FAILED and c.reason:
                reason += f"; besides, {c.reason}"
            qualified = f"{name} ({c.dist})" if len(group) > 1 else name
            settled.append(c._replace(name=qualified, status=FAILED, reason=clip(reason)))
    return sorted(settled, key=lambda c: c.name)


def _watched_files(found: Iterable[Candidate]) -> list[str]:
    """What the index must re-stat: each manifest read, and where a missing one would appear.

    A manifest added to a plugin that had none (the usual fix to an editable
    install) changes neither the search path nor any manifest: it changes the
    package's directories, so those are watched.
    """
    watched = []
    for c in found:
        if c.manifest_path:
            watched.append(c.manifest_path)
        elif c.package_dir:
            parts = c.module.split(".")
            watched += [os.path.join(c.package_dir, *parts[1:depth]) for depth in range(1, len(parts) + 1)]
    return watched


def _scan(spec: HookSpec | None, group: str, search: list[str], full_import_system: bool) -> Iterable[Candidate]:
    from ._metadata import group_entries
    from ._text import clip

    for found in group_entries(group, search, full_import_system):
        if found.error is not None:  # an unreadable entry_points.txt spoils one distribution, not the scan
            yield Candidate(
                name=f"<{found.dist}>",
                dist=found.dist,
                version=found.version,
                value="",
                status=FAILED,
                reason=clip(found.error),
            )
            continue
        for ep_name, ep_value in found.entries:
            # Two distributions may declare one name: both are kept, and discover() settles it.
            cand = _examine(spec, ep_name, found.dist, found.version, ep_value, search, full_import_system)
            yield cand._replace(reason=clip(cand.reason))  # reasons quote metadata: kept short


def _dotted_name(value: str) -> bool:
    """``a.b.c`` where each part is a Python identifier."""
    return all(part.isidentifier() for part in value.split("."))


def _examine(
    spec: HookSpec | None,
    name: str,
    dist: str,
    version: str,
    value: str,
    search: list[str],
    full_import_system: bool,
) -> Candidate:
    base = Candidate(name=name, dist=dist, version=version, value=value)
    module, _, attr = (part.strip() for part in value.partition(":"))
    if not _dotted_name(module) or (attr and not _dotted_name(attr)):
        reason = f"bad entry point value {value!r} (expected 'module' or 'module:object')"
        return base._replace(status=FAILED, reason=reason)
    base = base._replace(module=module, attr=attr or None)

    located = locate_package(module, search, full_import_system=full_import_system)
    if isinstance(located, str):
        return base._replace(status=FAILED, reason=located)
    package_dir, path_entry, manifest_path = located
    base = base._replace(package_dir=package_dir, path_entry=path_entry)
    if manifest_path is None:
        return base._replace(
            status=FAILED,
            reason=f"no pluginsdk.toml in package {module.split('.')[0]!r} ({package_dir})",
        )

    from .manifest import load_manifest

    try:
        manifest = load_manifest(manifest_path, plugin=name)
    except ManifestError as exc:
        return base._replace(manifest_path=manifest_path, status=FAILED, reason=exc.message)
    base = base._replace(
        manifest_path=manifest_path,
        requires=manifest.plugin.requires,
        isolation=manifest.plugin.isolation,
        hooks=manifest.plugin.hooks,
        limits={k: v for k, v in manifest.limits._asdict().items() if v is not None},
        wasm_packages=manifest.wasm.packages,
        environment=None if manifest.environment is None else manifest.environment.dependencies,
    )
    if spec is None:
        return base
    problem = check_compatibility(spec, manifest.plugin.requires, manifest.plugin.hooks)
    if problem is not None:
        return base._replace(status=problem[0], reason=problem[1])
    return base


def check_compatibility(spec: HookSpec, requires: str, hooks: Iterable[str]) -> tuple[str, str] | None:
    """``(status, reason)`` if a plugin with this manifest cannot run on ``spec``."""
    from ._metadata import normalize
    from .manifest import parse_requires

    name, specifier = parse_requires(requires)
    if normalize(name) != normalize(spec.name):
        return INCOMPATIBLE, f"requires spec {name!r}, but this host provides {spec.name!r}"
    if not specifier.contains(spec.version, prereleases=True):
        return INCOMPATIBLE, f"requires {spec.name}{specifier}, but this host provides {spec.name} {spec.version}"
    for hook in hooks:
        if hook in spec.hook_defs:
            continue
        future = spec.future_hook(hook)
        if future is not None:
            return INCOMPATIBLE, (
                f"implements hook {hook!r}, added in {spec.name} {future.since}; this host provides {spec.version}"
            )
        return FAILED, f"declares hook {hook!r}, which spec {spec.name} {spec.version} does not have"
    return None


def locate_package(
    module: str, search: Sequence[str], *, full_import_system: bool = False
) -> tuple[str, str, str | None] | str:
    """``(package_dir, path_entry, manifest_or_None)`` for ``module``, or why not.

    ``search`` is the path to look in; with ``full_import_system`` the
    interpreter's whole import system is asked instead (``sys.meta_path``).

    Only the top-level name is resolved through the import system: finding a
    dotted name would import its parents, running the package's ``__init__``.
    Sub-packages are then found by walking directories.
    """
    import importlib.machinery
    import importlib.util

    from .manifest import MANIFEST_NAME

    parts = module.split(".")
    try:
        if full_import_system:
            found = importlib.util.find_spec(parts[0])
        else:
            found = importlib.machinery.PathFinder.find_spec(parts[0], list(search))
    except (ImportError, ValueError) as exc:
        return f"cannot locate module {parts[0]!r}: {exc}"
    if found is None:
        return f"module {module!r} is not installed (entry point points nowhere)"
    locations = list(found.submodule_search_locations or ())
    if not locations:
        return f"module {parts[0]!r} is a single file; a plugin must be a package that carries pluginsdk.toml"
    for location in locations:
        # Deepest package first: "a.b.c" looks in a/b/c, then a/b, then a.
        for depth in range(len(parts), 0, -1):
            candidate = os.path.join(location, *parts[1:depth], MANIFEST_NAME)
            if os.path.isfile(candidate):
                return location, os.path.dirname(location), candidate
    return locations[0], os.path.dirname(locations[0]), None


_locate_package = locate_package  # the old private name, for code not yet switched
