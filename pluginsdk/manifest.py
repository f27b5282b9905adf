"""The static plugin manifest, ``pluginsdk.toml``, read as data.

A plugin ships the manifest inside its package directory.  It is parsed
without importing anything of the plugin, so the host can decide whether,
where and how to run a plugin before a line of its code executes.

The schema is small and checked here directly, every problem reported at
once: manifests are read on discovery's cold path, where importing a
structuring library (attrs and cattrs together) would cost more than the
whole budget of that scan.  Policy files, read once per host, go through the
SDK's cattrs converter instead (``_toml``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _toml
from ._errors import ManifestError
from ._text import clip
from .config import ISOLATION_LEVELS, LIMIT_RULES, Limits, limit_problem

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet

__all__ = [
    "MANIFEST_MAX_BYTES",
    "EnvironmentSection",
    "MANIFEST_NAME",
    "Manifest",
    "PluginSection",
    "WasmSection",
    "load_manifest",
    "parse_manifest",
    "parse_requires",
]

MANIFEST_NAME = "pluginsdk.toml"
#: A manifest is a few hundred bytes; a larger one is refused before it is read
#: whole (parsing megabytes would stall every host that discovers the plugin).
MANIFEST_MAX_BYTES = 64 * 1024
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REQUIRES = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(.*)", re.S)


class PluginSection(NamedTuple):
    """The ``[plugin]`` table.

    Attributes:
        requires: Spec name and PEP 440 specifier, e.g. ``"textkit>=1.0,<2"``.
        hooks: The hooks the plugin implements.
        isolation: The level the plugin asks for; the host may raise it.
    """

    requires: str
    hooks: tuple[str, ...]
    isolation: str = "inprocess"


class WasmSection(NamedTuple):
    """The optional ``[wasm]`` table.

    Attributes:
        packages: Import names of pure-Python dependencies to mount into the sandbox.
    """

    packages: tuple[str, ...] = ()


class EnvironmentSection(NamedTuple):
    """The optional ``[environment]`` table: the plugin runs in a private environment of its own.

    Attributes:
        dependencies: PEP 508 requirements installed for this plugin only,
            never into the host's environment.
    """

    dependencies: tuple[str, ...] = ()


#: At most this many ``[environment] dependencies``, each at most this long.
MAX_DEPENDENCIES = 200
_MAX_DEPENDENCY_CHARS = 500


class Manifest(NamedTuple):
    """A parsed, validated ``pluginsdk.toml``.

    Attributes:
        plugin: The ``[plugin]`` table.
        limits: Resource hints from ``[limits]``; the host policy has the last word.
        wasm: Sandbox settings from ``[wasm]``.
        environment: The ``[environment]`` table, or ``None`` if there is none
            (the plugin runs with the host's packages).
    """

    plugin: PluginSection
    limits: Limits = Limits()
    wasm: WasmSection = WasmSection()
    environment: EnvironmentSection | None = None


@functools.lru_cache(maxsize=512)
def parse_requires(value: str) -> tuple[str, SpecifierSet]:
    """Split ``"textkit>=1.0,<2"`` into the spec name and a PEP 440 specifier set.

    Only a name and a specifier are allowed (no extras, markers or URLs), so
    this needs ``packaging.specifiers`` alone rather than the heavier
    requirement parser.
    """
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    match = _REQUIRES.fullmatch(value)
    if match is None:
        raise ValueError(f"requires {value!r} is not 'SPEC-NAME<specifier>', e.g. 'textkit>=1.0,<2'")
    name, rest = match.groups()
    if any(c in rest for c in "[;@"):
        raise ValueError(f"requires {value!r} may hold only a spec name and a version specifier")
    try:
        return name, SpecifierSet(rest.strip())
    except InvalidSpecifier as exc:
        raise ValueError(f"requires {value!r} is not 'SPEC-NAME<specifier>': {exc}") from None


# The schema: table -> key -> (kind, required).  Kinds: "str", "names" (a list
# of strings), "limit" (checked by config.limit_problem, as every limit is).
_SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {
    "plugin": {"requires": ("str", True), "hooks": ("names", True), "isolation": ("str", False)},
    "limits": dict.fromkeys(LIMIT_RULES, ("limit", False)),
    "wasm": {"packages": ("names", False)},
    "environment": {"dependencies": ("requirements", False)},
}


def _kind_problem(kind: str, where: str, value: object) -> str | None:
    """What is wrong with ``value`` at ``where`` (``table.key``), or ``None``."""
    if kind == "limit":
        table, _, key = where.partition(".")
        return limit_problem(key, value, where=table)
    if kind == "requirements":
        return _requirements_problem(where, value)
    if kind == "str":
        ok = isinstance(value, str)
        expected = "a string"
    else:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        expected = "a list of strings"
    if ok:
        return None
    text = repr(value)
    return f"{where}: expected {expected}, got {text if len(text) <= 60 else text[:55] + '...'}"


def _requirements_problem(where: str, value: object) -> str | None:
    """What is wrong with ``[environment] dependencies``: PEP 508 strings naming a project on an index.

    Direct references (``name @ URL``) are refused: where packages come from
    is the host's policy's word (its index settings), not a manifest's.
    """
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return f'{where}: expected a list of PEP 508 strings, e.g. ["six==1.16.0"]'
    if len(value) > MAX_DEPENDENCIES:
        return f"{where}: at most {MAX_DEPENDENCIES} dependencies, not {len(value)}"
    from packaging.requirements import InvalidRequirement, Requirement

    bad = []
    for dep in value:
        if len(dep) > _MAX_DEPENDENCY_CHARS:
            bad.append(f"{dep[:40]!r}...: longer than {_MAX_DEPENDENCY_CHARS} characters")
            continue
        try:
            req = Requirement(dep)
        except InvalidRequirement as exc:
            bad.append(f"{dep!r} is not a PEP 508 requirement ({str(exc).splitlines()[0]})")
            continue
        if req.url is not None:
            bad.append(f"{dep!r}: direct references are not allowed (the host's policy chooses the index)")
    return f"{where}: " + "; ".join(bad) if bad else None


def _problems(data: Mapping[str, Any]) -> list[str]:
    """Every way ``data`` departs from the schema, one line each (empty: valid)."""
    problems = [f"unknown table [{t}] (expected {', '.join(_SCHEMA)})" for t in data if t not in _SCHEMA]
    if "plugin" not in data:
        problems.append("required table [plugin] is missing")
    for table, keys in _SCHEMA.items():
        section = data.get(table, {})
        if not isinstance(section, dict):
            problems.append(f"[{table}] must be a table")
            continue
        problems += [f"unknown key {table}.{k}" for k in section if k not in keys]
        for key, (kind, required) in keys.items():
            if key not in section:
                if required and table in data:
                    problems.append(f"required key {table}.{key} is missing")
                continue
            problem = _kind_problem(kind, f"{table}.{key}", section[key])
            if problem is not None:
                problems.append(problem)
    if problems:
        return problems
    plugin = data["plugin"]
    if plugin.get("isolation", "inprocess") not in ISOLATION_LEVELS:
        problems.append(f"isolation must be one of {', '.join(ISOLATION_LEVELS)}, not {plugin['isolation']!r}")
    if not plugin["hooks"]:
        problems.append("hooks must list at least one hook")
    bad = [h for h in plugin["hooks"] if not _IDENTIFIER.fullmatch(h)]
    if bad:
        problems.append(f"hook names must be identifiers: {', '.join(map(repr, bad))}")
    try:
        parse_requires(plugin["requires"])
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def parse_manifest(data: Mapping[str, Any], *, path: str, plugin: str | None = None) -> Manifest:
    """Validate manifest ``data`` read from ``path``; every problem is reported at once."""
    problems = [clip(p, 300) for p in _problems(data)]  # a hostile value must not make a huge reason
    if problems:
        raise ManifestError(
            clip(f"invalid manifest {path}: " + "; ".join(problems)), plugin=plugin, path=path, problems=problems
        )
    section = data["plugin"]
    return Manifest(
        plugin=PluginSection(
            requires=section["requires"],
            hooks=tuple(section["hooks"]),
            isolation=section.get("isolation", "inprocess"),
        ),
        limits=Limits.checked(data.get("limits")),
        wasm=WasmSection(packages=tuple(data.get("wasm", {}).get("packages", ()))),
        environment=(
            EnvironmentSection(dependencies=tuple(data["environment"].get("dependencies", ())))
            if "environment" in data
            else None
        ),
    )


def load_manifest(path: str | Path, *, plugin: str | None = None) -> Manifest:
    """Read and validate the manifest file at ``path``."""
    path = str(path)
    try:
        data = _toml.load(path, max_bytes=MANIFEST_MAX_BYTES)
    except _toml.TooLarge as exc:
        raise ManifestError(
            f"manifest {path} is larger than {MANIFEST_MAX_BYTES // 1024} KiB ({exc}); it was not read",
            plugin=plugin,
            path=path,
            problems=[str(exc)],
        ) from None
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {path}", plugin=plugin, path=path) from None
    except (OSError, UnicodeDecodeError, _toml.TOMLDecodeError) as exc:
        raise ManifestError(
            f"cannot read manifest {path}: {exc}", plugin=plugin, path=path, problems=[str(exc)]
        ) from None
    return parse_manifest(data, path=path, plugin=plugin)
