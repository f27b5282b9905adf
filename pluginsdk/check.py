"""``pluginsdk check``: validate a plugin project before it is published.

By default the project's wheel is built (with its own build backend, offline)
and what a host will find *in the wheel* is checked: the entry points its
``entry_points.txt`` declares, the manifest shipped in the package, and the
code beside it.  With ``build=False`` the source tree is checked instead.

Unlike discovery, this imports the plugin (it is the author's own code, run
on the author's machine) so the manifest can be compared with the hook
implementations the code really has.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from ._errors import ManifestError, PluginError

__all__ = ["EXIT_BUILD", "EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "CheckReport", "check", "check_project"]

#: Exit statuses of ``pluginsdk check`` (see :class:`CheckReport`).
EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_BUILD = 0, 1, 2, 3


class CheckReport(NamedTuple):
    """What ``pluginsdk check`` found.

    Attributes:
        project: The project directory.
        exit_code: 0 valid; 1 problems found; 2 nothing to check (no project, no spec); 3 the wheel could not be built.
        problems: What is wrong, each naming the plugin or file.
        notes: What was checked and found right.
        wheel: The wheel's file name, when one was built.
    """

    project: str
    exit_code: int
    problems: list[str]
    notes: list[str]
    wheel: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**self._asdict(), "ok": self.exit_code == EXIT_OK}


def check_project(
    path: Path, *, spec_ref: str | None, load_spec: Callable[[str], Any] | None = None
) -> tuple[list[str], list[str]]:
    """Return ``(problems, notes)`` for the plugin project's source tree at ``path`` (builds nothing)."""
    report = check(path, spec_ref=spec_ref, build=False, load_spec=load_spec)
    return report.problems, report.notes


def check(
    path: Path,
    *,
    spec_ref: str | None = None,
    build: bool = True,
    load_spec: Callable[[str], Any] | None = None,
    step: Callable[[str], None] | None = None,
) -> CheckReport:
    """Check the plugin project at ``path``; see :class:`CheckReport` for the outcome.

    ``load_spec`` turns ``spec_ref`` into the host's spec (default: the
    shared loader of ``pluginsdk._resolve``); ``step`` is told each stage of
    the work (for a progress display).
    """
    from . import _toml

    if load_spec is None:
        from ._resolve import load_spec as default

        load_spec = default
    project = str(path)
    pyproject = path / "pyproject.toml"
    if not path.is_dir():
        return CheckReport(project, EXIT_USAGE, [f"{path}: not a directory"], [])
    if not pyproject.is_file():
        return CheckReport(project, EXIT_USAGE, [f"{path}: no pyproject.toml (is this a plugin project?)"], [])
    try:
        data = _toml.load(pyproject)
    except (OSError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        return CheckReport(project, EXIT_PROBLEMS, [f"{pyproject}: {exc}"], [])
    spec_ref = spec_ref or data.get("tool", {}).get("pluginsdk", {}).get("spec")
    if not spec_ref:
        problem = f"{pyproject}: no spec given (pass --spec module:OBJECT or set [tool.pluginsdk] spec)"
        return CheckReport(project, EXIT_USAGE, [problem], [])
    try:
        spec = load_spec(spec_ref)
    except PluginError as exc:
        return CheckReport(project, EXIT_USAGE, [str(exc)], [])
    declared = data.get("project", {}).get("entry-points", {}).get(spec.group, {})
    if not build:
        if not declared:
            problem = (
                f'{pyproject}: no entry point in [project.entry-points."{spec.group}"]'
                " (if setup.cfg or setup.py declares them, check without --no-build)"
            )
            return CheckReport(project, EXIT_PROBLEMS, [problem], [])
        notes: list[str] = []
        roots = [str(p) for p in (path / "src", path) if p.is_dir()]
        problems = [p for name, value in declared.items() for p in _check_source(spec, name, value, roots, notes)]
        return CheckReport(project, EXIT_PROBLEMS if problems else EXIT_OK, problems, notes)
    return _check_wheel(path, data, spec, declared, step or (lambda _: None))


def _check_wheel(
    path: Path, data: dict[str, Any], spec: Any, declared: dict[str, str], step: Callable[[str], None]
) -> CheckReport:
    import tempfile

    from . import _wheel

    project = str(path)
    problem = _wheel.backend_problem(data)
    if problem is not None:
        return CheckReport(project, EXIT_BUILD, [f"{path}: cannot build the wheel: {problem} (or pass --no-build)"], [])
    with tempfile.TemporaryDirectory(prefix="pluginsdk-check-") as tmp:
        step("building the wheel")
        try:
            wheel = _wheel.build_wheel(path, Path(tmp) / "dist")
            step(f"checking {wheel.name}")
            site = _wheel.unpack(wheel, Path(tmp) / "site")
        except _wheel.BuildError as exc:
            return CheckReport(project, EXIT_BUILD, [f"{path}: {exc}"], [])
        notes = [f"built {wheel.name}"]
        problems = _check_unpacked(path, spec, declared, site, wheel.name, notes)
        return CheckReport(project, EXIT_PROBLEMS if problems else EXIT_OK, problems, notes, wheel.name)


def _check_unpacked(
    path: Path, spec: Any, declared: dict[str, str], site: Path, wheel: str, notes: list[str]
) -> list[str]:
    """Problems a host would meet with the wheel installed (``site``: the wheel unpacked)."""
    from . import _wheel
    from ._survey import judge
    from .config import AVAILABLE, UNAVAILABLE
    from .discovery import discover

    found = judge(discover(spec, path=[str(site)], use_index=False), spec.group, spec)
    in_wheel = {c.name: c for c in found}
    problems = []
    if not found:
        from ._survey import group_hint

        close = group_hint(spec.group, [str(site)])
        where = f", but one in {close!r}: misspelled in pyproject.toml?" if close else ""
        return [f"{wheel}: entry_points.txt declares no entry point in group {spec.group!r}{where}"]
    for name, value in declared.items():
        c = in_wheel.get(name)
        if c is None:
            problems.append(f"plugin {name!r}: pyproject.toml declares it, but {wheel}'s entry_points.txt does not")
        elif c.value != value:
            problems.append(f"plugin {name!r}: the wheel's entry point is {c.value!r}, pyproject.toml says {value!r}")
    for c in found:
        notes.append(f"plugin {c.name!r}: entry point {c.value} in {wheel}")
        if c.status == UNAVAILABLE:  # this machine lacks the level (no wasmtime...), not a fault of the project
            notes.append(f"note: plugin {c.name!r} cannot run at isolation {c.isolation!r} here ({c.reason})")
        elif c.status != AVAILABLE:
            reason = c.reason.replace(str(site), wheel)  # the unpacked copy is gone once check returns
            if c.manifest_path is None and c.package_dir and _source_manifest(path, c.module):
                top = c.module.split(".")[0]
                reason += (
                    "; the source tree has one, but the wheel does not ship it: declare it as package data"
                    f' (setuptools: [tool.setuptools.package-data] {top} = ["pluginsdk.toml"])'
                )
            problems.append(f"plugin {c.name!r} ({c.status} once installed from {wheel}): {reason}")
            continue
        assert c.manifest_path is not None and c.package_dir is not None
        notes.append(
            f"plugin {c.name!r}: {wheel} ships its manifest ({c.isolation});"
            f" {c.requires} accepts {spec.name} {spec.version}"
        )
        notes += _executor_notes(c.name, c.isolation or "", c.package_dir, c.module)
        if c.isolation == "wasm":
            native = _wheel.native_files(Path(c.package_dir))
            if native:
                problems.append(
                    f"plugin {c.name!r}: isolation 'wasm' cannot load C extensions, and {wheel} has {', '.join(native)}"
                )
                continue
        problems += _check_code(spec, c.name, c.value, c.manifest_path, [str(site)], notes)
    return problems


def _source_manifest(path: Path, module: str) -> bool:
    from .discovery import locate_package

    located = locate_package(module, [str(p) for p in (path / "src", path) if p.is_dir()])
    return not isinstance(located, str) and located[2] is not None


def _check_source(spec: Any, name: str, value: str, roots: list[str], notes: list[str]) -> list[str]:
    from ._resolve import split_ref
    from ._survey import hook_hint
    from ._wheel import native_files
    from .discovery import check_compatibility, locate_package
    from .manifest import load_manifest

    try:
        module, _ = split_ref(value, what=f"plugin {name!r}: entry point")
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
    notes += _executor_notes(name, manifest.plugin.isolation, package_dir, module)
    problem = check_compatibility(spec, manifest.plugin.requires, manifest.plugin.hooks)
    if problem is not None:
        hint = hook_hint([h for h in manifest.plugin.hooks if h not in spec.hook_defs], spec)
        return [f"plugin {name!r}: {problem[0]}: {problem[1]}" + (f"; {hint}" if hint else "")]
    notes.append(f"plugin {name!r}: {manifest.plugin.requires} accepts {spec.name} {spec.version}")
    if manifest.plugin.isolation == "wasm":
        native = native_files(Path(package_dir))
        if native:
            return [f"plugin {name!r}: isolation 'wasm' cannot load C extensions, found {', '.join(native)}"]
    return _check_code(spec, name, value, manifest_path, roots, notes)


def _executor_notes(name: str, isolation: str, package_dir: str, module: str) -> list[str]:
    """Where a host may run an isolated plugin (its policy decides: this machine or Ray) and what Ray needs."""
    if isolation not in ("process", "wasm"):
        return []
    import os

    from ._ray.cluster import unavailable_reason

    note = (
        f"plugin {name!r}: a host runs it ({isolation}) on its own machine, or as Ray actors where its policy"
        ' says executor = "ray"'
    )
    if unavailable_reason() is not None:
        note += ' (Ray is not installed here: such a host needs pip install "pluginsdk-isolated[ray]")'
    if isolation == "process" and os.path.basename(package_dir) != module.split(".")[0]:
        note += "; it is a single module, not a package: on Ray it must be installed on the nodes"
    return [note]


def _check_code(spec: Any, name: str, value: str, manifest_path: str, roots: list[str], notes: list[str]) -> list[str]:
    """Import the plugin from ``roots`` (first on the path) and compare its hooks with the manifest's."""
    import os

    from ._resolve import resolve, split_ref
    from ._survey import hook_hint
    from .backends.inprocess import collect_impls
    from .manifest import load_manifest

    module, attr = split_ref(value, what=f"plugin {name!r}: entry point")
    hooks = load_manifest(manifest_path, plugin=name).plugin.hooks
    sys.path[:0] = roots
    try:
        obj = resolve(module, attr)
        loaded = sys.modules.get(module)
        where = getattr(loaded, "__file__", None) or next(iter(getattr(loaded, "__path__", None) or ()), None)
        origin = os.path.realpath(str(where)) if where else "an unknown place"
        if not any(origin.startswith(os.path.realpath(r) + os.sep) for r in roots):
            return [f"plugin {name!r}: {module} was imported from {origin}, not from {roots[0]}"]
        impls = collect_impls(spec.namespace(), obj, name, hooks)
    except PluginError as exc:
        hint = hook_hint(_marked_names(sys.modules.get(module)), spec)
        return [str(exc) + (f"; {hint}" if hint else "")]
    except Exception as exc:
        return [f"plugin {name!r}: importing {value} failed: {type(exc).__name__}: {exc}"]
    finally:
        del sys.path[: len(roots)]
    notes.append(f"plugin {name!r}: implements {', '.join(sorted(impls))} as declared")
    return []


def _marked_names(module: object) -> list[str]:
    """Names of the functions in ``module`` marked ``@hookimpl``: a misspelled hook is one of them."""
    from ._markers import IMPL_ATTR

    return [n for n, v in vars(module).items() if hasattr(v, IMPL_ATTR)] if module is not None else []
