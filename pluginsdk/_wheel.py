"""Building a plugin project's wheel with its own build backend, offline, for ``pluginsdk check``.

The wheel is what a host will find once the plugin is installed: a
manifest missing from the package data, or an entry point the build does
not write, passes a look at the source tree and fails at install.  So the
project is built with its own backend in this environment (no build
isolation, no index: nothing is downloaded) and the wheel unpacked as an
installer would lay it out, for discovery to look at.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

__all__ = ["BuildError", "build_wheel", "native_files", "unpack"]

#: Suffixes of compiled extension modules, which the WebAssembly sandbox cannot load.
NATIVE_SUFFIXES = (".so", ".pyd", ".dylib")
_TAIL = 3000  # characters of the build's output kept in an error


class BuildError(Exception):
    """The wheel could not be built; the message says why and what to do."""


def backend_problem(pyproject: dict[str, Any]) -> str | None:
    """Why the project's build backend cannot run in this environment, or ``None``.

    Without build isolation the backend and its ``requires`` must be
    installed here; saying which is missing beats the backend's traceback.
    """
    system = pyproject.get("build-system", {})
    backend = system.get("build-backend", "setuptools.build_meta:__legacy__")
    if not isinstance(backend, str) or not backend:
        return f"[build-system] build-backend must be a string, not {backend!r}"
    top = backend.partition(":")[0].split(".")[0]
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    paths = system.get("backend-path")
    if not found and not paths:
        return f"the build backend {backend!r} is not installed in this environment ({sys.executable})"
    missing = [r for r in system.get("requires", ["setuptools"]) if isinstance(r, str) and not _installed(r)]
    if missing:
        return f"the build requirements {', '.join(missing)} are not installed in this environment ({sys.executable})"
    return None


def _installed(requirement: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(requirement)
    except InvalidRequirement:
        return True  # the backend will say what is wrong with it
    if req.marker is not None and not req.marker.evaluate():
        return True
    try:
        have = version(req.name)
    except PackageNotFoundError:
        return False
    return not req.specifier or req.specifier.contains(have, prereleases=True)


def build_wheel(project: Path, out: Path, *, timeout: float = 600) -> Path:
    """Build ``project``'s wheel into ``out`` and return it; raise :class:`BuildError` if it cannot be built.

    ``python -m build`` when it is installed, else ``pip wheel``; never
    isolated, never from an index.
    """
    project = project.resolve()  # pip reads a bare relative name as a requirement
    if _have_build():
        cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(project)]
    else:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
        cmd += ["--disable-pip-version-check", "-q", "--wheel-dir", str(out), str(project)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no configured index, find-links or constraints: offline, this tree only
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, errors="replace", env=env, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise BuildError(f"building the wheel took over {timeout:.0f} s") from None
    except OSError as exc:
        raise BuildError(f"cannot run {cmd[0]}: {exc}") from None
    wheels = sorted(out.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        output = (result.stderr.strip() or result.stdout.strip())[-_TAIL:]
        raise BuildError(f"building the wheel failed (python {' '.join(cmd[1:4])} ...):\n{output}")
    return wheels[0]


def _have_build() -> bool:
    """Whether PyPA's ``build`` is installed (not merely a ``build/`` directory on the path)."""
    try:
        spec = importlib.util.find_spec("build")
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin is not None and _installed("build")


def unpack(wheel: Path, dest: Path) -> Path:
    """Lay ``wheel`` out in ``dest`` as an installer would put it in site-packages; return ``dest``.

    Only the purelib/platlib tree is needed to discover and import a plugin
    (scripts and headers are not).  Member names are checked: none may
    leave ``dest``.
    """
    root = dest.resolve()
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.infolist():
            name = member.filename
            parts = name.split("/")
            if len(parts) > 1 and parts[0].endswith(".data") and parts[1] in ("purelib", "platlib"):
                name = "/".join(parts[2:])
            elif len(parts) > 1 and parts[0].endswith(".data"):
                continue
            target = (root / name).resolve()
            if not name or target == root or root not in target.parents:
                raise BuildError(f"{wheel.name}: member {member.filename!r} would be written outside the install")
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(member))
    return dest


def native_files(package_dir: Path) -> list[str]:
    """Compiled extension modules under ``package_dir``, relative to it."""
    return sorted(p.relative_to(package_dir).as_posix() for p in package_dir.rglob("*") if p.suffix in NATIVE_SUFFIXES)
