"""The static plugin manifest, ``pluginsdk.toml``, read as data.

A plugin ships the manifest inside its package directory.  It is parsed
without importing anything of the plugin, so the host can decide whether,
where and how to run a plugin before a line of its code executes.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs

from ._errors import ManifestError
from .backends.base import ISOLATION_LEVELS, Limits

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["MANIFEST_NAME", "Manifest", "PluginSection", "WasmSection", "load_manifest", "parse_manifest"]

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


def _check_requires(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(value)
    except InvalidRequirement as exc:
        raise ValueError(f"requires {value!r} is not 'SPEC-NAME<specifier>': {exc}") from None
    if req.extras or req.url or req.marker:
        raise ValueError(f"requires {value!r} may hold only a spec name and a version specifier")


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


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    # TOML gives ints where floats are meant ("timeout = 5"); strings stay strings.
    conv.register_structure_hook(float, lambda v, _: _number(v, float))
    conv.register_structure_hook(int, lambda v, _: _number(v, int))
    conv.register_structure_hook(str, lambda v, _: _string(v))
    return conv


def _number(value: object, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected a whole number, got {value!r}")
    return kind(value)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


_converter = _make_converter()


def describe_error(exc: BaseException, type_: type | None) -> str:
    """cattrs' wording, but a validator's own message where there is one."""
    from cattrs.v import format_exception

    if isinstance(exc, ValueError) and not isinstance(exc, cattrs.BaseValidationError) and str(exc):
        return str(exc)
    return format_exception(exc, type_)


def parse_manifest(data: Mapping[str, Any], *, path: str, plugin: str | None = None) -> Manifest:
    """Structure and validate manifest ``data`` read from ``path``."""
    try:
        manifest = _converter.structure(dict(data), Manifest)
    except cattrs.BaseValidationError as exc:
        problems = cattrs.transform_error(exc, path="", format_exception=describe_error)
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
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {path}", plugin=plugin, path=path) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(
            f"cannot read manifest {path}: {exc}", plugin=plugin, path=path, problems=[str(exc)]
        ) from None
    return parse_manifest(data, path=path, plugin=plugin)
