"""The static plugin manifest, ``pluginsdk.toml``, read as data.

A plugin ships the manifest inside its package directory.  It is parsed
without importing anything of the plugin, so the host can decide whether,
where and how to run a plugin before a line of its code executes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import cattrs

from . import _toml
from ._errors import ManifestError
from .backends.base import ISOLATION_LEVELS, Limits

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet

__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "PluginSection",
    "WasmSection",
    "load_manifest",
    "parse_manifest",
    "parse_requires",
]

MANIFEST_NAME = "pluginsdk.toml"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_isolation(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ISOLATION_LEVELS:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATION_LEVELS)}, not {value!r}")


def _check_hooks(_: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("hooks must list at least one hook")
    bad = [h for h in value if not _IDENTIFIER.fullmatch(h)]
    if bad:
        raise ValueError(f"hook names must be identifiers: {', '.join(map(repr, bad))}")


_REQUIRES = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(.*)", re.S)


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


def _check_requires(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    parse_requires(value)


@attrs.frozen
class PluginSection:
    """The ``[plugin]`` table.

    Attributes:
        requires: Spec name and PEP 440 specifier, e.g. ``"textkit>=1.0,<2"``.
        isolation: The level the plugin asks for; the host may raise it.
        hooks: The hooks the plugin implements.
    """

    requires: str = attrs.field(validator=_check_requires)
    hooks: tuple[str, ...] = attrs.field(validator=_check_hooks)
    isolation: str = attrs.field(default="inprocess", validator=_check_isolation)


@attrs.frozen
class WasmSection:
    """The optional ``[wasm]`` table.

    Attributes:
        packages: Import names of pure-Python dependencies to mount into the sandbox.
    """

    packages: tuple[str, ...] = ()


@attrs.frozen
class Manifest:
    """A parsed, validated ``pluginsdk.toml``.

    Attributes:
        plugin: The ``[plugin]`` table.
        limits: Resource hints from ``[limits]``; the host policy has the last word.
        wasm: Sandbox settings from ``[wasm]``.
    """

    plugin: PluginSection
    limits: Limits = Limits()
    wasm: WasmSection = WasmSection()


def parse_manifest(data: Mapping[str, Any], *, path: str, plugin: str | None = None) -> Manifest:
    """Structure and validate manifest ``data`` read from ``path``."""
    try:
        manifest = _toml.converter.structure(dict(data), Manifest)
    except cattrs.BaseValidationError as exc:
        problems = _toml.problems(exc, path="")
        raise ManifestError(
            f"invalid manifest {path}: " + "; ".join(problems),
            plugin=plugin,
            path=path,
            problems=problems,
        ) from None
    except (ValueError, TypeError) as exc:
        raise ManifestError(f"invalid manifest {path}: {exc}", plugin=plugin, path=path, problems=[str(exc)]) from None
    for name in ("workers", "timeout", "memory_mb", "max_message_mb", "recycle_after", "idle_timeout"):
        value = getattr(manifest.limits, name)
        if value is not None and value < 0:
            raise ManifestError(
                f"invalid manifest {path}: limits.{name} must not be negative",
                plugin=plugin,
                path=path,
                problems=[f"limits.{name} must not be negative"],
            )
    return manifest


def load_manifest(path: str | Path, *, plugin: str | None = None) -> Manifest:
    """Read and validate the manifest file at ``path``."""
    path = str(path)
    try:
        data = _toml.load(path)
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {path}", plugin=plugin, path=path) from None
    except (OSError, UnicodeDecodeError, _toml.TOMLDecodeError) as exc:
        raise ManifestError(
            f"cannot read manifest {path}: {exc}", plugin=plugin, path=path, problems=[str(exc)]
        ) from None
    return parse_manifest(data, path=path, plugin=plugin)
