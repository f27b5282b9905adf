"""``pluginsdk check``: validate a plugin project before it is published.

Unlike discovery, this imports the plugin (it is the author's own code, run
on the author's machine) so the manifest can be compared with the hook
implementations the code really has.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._errors import ManifestError, PluginError

__all__ = ["check_project"]


def check_project(
    path: Path, *, spec_ref: str | None, load_spec: Callable[[str], Any] | None = None
) -> tuple[list[str], list[str]]:
    """Return ``(problems, notes)`` for the plugin project at ``path``.

    ``load_spec`` turns ``spec_ref`` into the host's spec (default:
    :func:`pluginsdk._resolve.load_spec`).
    """
    from . import _toml

    if load_spec is None:
        from ._resolve import load_spec as default

        load_spec = default

    problems: list[str] = []
    notes: list[str] = []
    pyproject = path / "pyproject.toml"
    try:
        data = _toml.load(pyproject)
    except (OSError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        return [f"{pyproject}: {exc}"], notes
    spec_ref = spec_ref or data.get("tool", {}).get("pluginsdk", {}).get("spec")
    if not spec_ref:
        return [f"{pyproject}: no spec given (pass --spec module:OBJECT or set [tool.pluginsdk] spec)"], notes
    try:
        spec = load_spec(spec_ref)
    except PluginError as exc:
        return [str(exc)], notes
    entries = data.get("project", {}).get("entry-points", {}).get(spec.group, {})
    if not entries:
        return [f'{pyproject}: no entry point in [project.entry-points."{spec.group}"]'], notes
    roots = [str(p) for p in (path / "src", path) if p.is_dir()]
    for name, value in entries.items():
        problems += _check_entry(spec, name, value, roots, notes)
    return problems, notes


def _check_entry(spec: Any, name: str, value: str, roots: list[str], notes: list[str]) -> list[str]:
    from ._resolve import resolve, split_ref
    from .backends.inprocess import collect_impls
    from .discovery import check_compatibility, locate_package
    from .manifest import load_manifest

    try:
        module, attr = split_ref(value, what=f"plugin {name!r}: entry point")
    except PluginError as exc:
        return [str(exc)]
    located = locate_package(module, roots)
    if isinstance(located, str):
        return [f"plugin {name!r}: {located}"]
    package_dir, _, manifest_path = located
    if manifest_path is None:
        return [f"plugin {name!r}: no pluginsdk.toml in {package_dir}"]
    try:
        manifest = load_manifest(manifest_path, plugin=name)
    except ManifestError as exc:
        return [str(exc)]
    notes.append(f"plugin {name!r}: manifest {manifest_path} is valid ({manifest.plugin.isolation})")
    problem = check_compatibility(spec, manifest.plugin.requires, manifest.plugin.hooks)
    if problem is not None:
        return [f"plugin {name!r}: {problem[0]}: {problem[1]}"]
    notes.append(f"plugin {name!r}: {manifest.plugin.requires} accepts {spec.name} {spec.version}")
    if manifest.plugin.isolation == "wasm":
        native = sorted(p.name for p in Path(package_dir).rglob("*") if p.suffix in (".so", ".pyd", ".dylib"))
        if native:
            return [f"plugin {name!r}: isolation 'wasm' cannot load C extensions, found {', '.join(native)}"]

    sys.path[:0] = roots
    try:
        obj = resolve(module, attr)
        impls = collect_impls(spec.namespace(), obj, name, manifest.plugin.hooks)
    except PluginError as exc:
        return [str(exc)]
    except Exception as exc:
        return [f"plugin {name!r}: importing {value} failed: {type(exc).__name__}: {exc}"]
    finally:
        del sys.path[: len(roots)]
    notes.append(f"plugin {name!r}: implements {', '.join(sorted(impls))} as declared")
    return []
