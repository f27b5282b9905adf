"""One real virtual environment with pluginsdk, the leakscan host and its reference plugins.

Shared by ``test_template.py`` and ``test_reference.py`` (built once per test
session): creating a venv and installing six distributions costs seconds that
2 cores cannot spend per test.  Everything is built from this checkout with
this environment's pip, offline: the venv sees this environment's packages
(pytest, pluggy, hatchling...) through a ``.pth`` file, and pluginsdk, the
host and the plugins are installed into it as real wheels, entry points and
all, so discovery reads genuine installed metadata.
"""

from __future__ import annotations

import os
import re
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "reference-plugins"
# Directories under reference-plugins/; the host's is "leakscan", its distribution HOST_DIST.
REFERENCE_PROJECTS = (
    "leakscan",
    "leakscan-secrets",
    "leakscan-pii",
    "leakscan-entropy",
    "leakscan-legacy",
    "leakscan-rogue",
)
# Distribution names: "pluginsdk" and "leakscan" on PyPI are other people's projects.
SDK_DIST = "pluginsdk-isolated"
HOST_DIST = "pluginsdk-leakscan"
# This project's distributions (the plugins' are named as their directories), and the SDK's and
# host's old names "pluginsdk" and "leakscan": a stale install of those would shadow the new ones.
OWN_DISTS = frozenset({SDK_DIST, HOST_DIST, *REFERENCE_PROJECTS, "pluginsdk"})

_built: dict[str, Path] = {}


class Env:
    """A virtual environment and the commands to use it.

    Attributes:
        root: The venv directory.
        python: Its interpreter.
        bin: Its scripts directory.
        cache: The pluginsdk cache its commands share.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.python = self.bin / "python"
        # One SDK cache for every command in this venv: compiling the WebAssembly
        # interpreter takes seconds, and the per-test caches would redo it each time.
        self.cache = root / "pluginsdk-cache"

    def pip_install(self, *args: str, deps: bool = False) -> None:
        """Install into this venv with the outer pip: offline, no build isolation, dependencies only if ``deps``."""
        cmd = [sys.executable, "-m", "pip", "--python", str(self.python), "install", "-q"]
        cmd += ["--no-index", "--no-build-isolation", *([] if deps else ["--no-deps"]), *args]
        # No pip configuration either: a configured find-links or constraint file is not this checkout.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        result = subprocess.run(cmd, capture_output=True, text=True, env={**env, "PIP_CONFIG_FILE": os.devnull})
        assert 0 == result.returncode, result.stderr

    def pip_uninstall(self, *dists: str) -> None:
        cmd = [sys.executable, "-m", "pip", "--python", str(self.python), "uninstall", "-q", "-y", *dists]
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert 0 == result.returncode, result.stderr

    def run(
        self, *cmd: str, cwd: Path | None = None, stdin: str | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run a command of this venv (``python``, ``leakscan``, ``pluginsdk``...) with its PATH."""
        env = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(self.root),
        }
        env["PLUGINSDK_CACHE_DIR"] = str(self.cache)
        env.pop("PYTHONPATH", None)  # the venv's own path only: what an installed user would have
        exe = str(self.bin / cmd[0]) if (self.bin / cmd[0]).exists() else cmd[0]
        return subprocess.run(
            [exe, *cmd[1:]], cwd=cwd, input=stdin, capture_output=True, text=True, env=env, timeout=timeout
        )

    def pytest_plugin_args(self) -> list[str]:
        """``-p pluginsdk.testing`` if this pluginsdk lacks its ``pytest11`` entry point, else nothing."""
        probe = self.run(
            "python",
            "-c",
            "from importlib.metadata import entry_points; "
            "print(any(e.value == 'pluginsdk.testing' for e in entry_points(group='pytest11')))",
        )
        return [] if probe.stdout.strip() == "True" else ["-p", "pluginsdk.testing"]


def _outer_site_dirs() -> list[str]:
    dirs = {*site.getsitepackages(), site.getusersitepackages()}
    return sorted(d for d in dirs if os.path.isdir(d))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependencies_only(dest: Path) -> Path:
    """``dest``: the outer environment's installed packages, less this project's own distributions.

    Symlinks, nothing copied.  A venv that sees this directory through a ``.pth``
    file finds every third-party dependency installed (pytest, pluggy, hatchling,
    wasmtime...) and none of pluginsdk's own distributions, so those must come
    from what the test installs.
    """
    from importlib.metadata import distributions

    own: set[str] = set()
    for dist in distributions():
        if _canonical(dist.metadata["Name"] or "") in OWN_DISTS:
            own.update(Path(str(f)).parts[0] for f in dist.files or ())
    dest.mkdir(parents=True)
    for site_dir in _outer_site_dirs():
        for entry in sorted(Path(site_dir).iterdir()):
            # A .pth here would not be processed from a path entry anyway; an editable install's is ours.
            if entry.name in own or entry.suffix == ".pth" or os.path.lexists(dest / entry.name):
                continue
            (dest / entry.name).symlink_to(entry)
    return dest


def fresh_env(where: Path) -> Env:
    """A new venv that sees the outer environment's third-party packages only (see :func:`dependencies_only`)."""
    venv.create(where / "venv", with_pip=False)  # the outer pip drives it
    env = Env(where / "venv")
    purelib = env.run("python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip()
    Path(purelib, "dependencies.pth").write_text(f"{dependencies_only(where / 'dependencies')}\n")
    return env


def leakscan_env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """The session's venv with pluginsdk, leakscan and the reference plugins (built on first use)."""
    cached = _built.get("leakscan")
    if cached is not None:
        return Env(cached)
    root = tmp_path_factory.mktemp("leakscan-venv")
    venv.create(root, with_pip=False)  # the outer pip drives it
    env = Env(root)
    purelib = env.run("python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip()
    # Dependencies (pluggy, attrs, pytest, wasmtime...) come from the outer environment, after the venv's own.
    Path(purelib, "outer.pth").write_text("\n".join(_outer_site_dirs()) + "\n")
    env.pip_install(str(ROOT))
    env.pip_install(*(str(REFERENCE / d) for d in REFERENCE_PROJECTS))
    _built["leakscan"] = root
    return env


def wasm_unavailable() -> str | None:
    """Why the wasm level cannot run here (``None`` if it can)."""
    from pluginsdk.testing import isolation_unavailable

    return isolation_unavailable("wasm")


def component_unavailable() -> str | None:
    """Why the wasm level's ``component`` engine cannot run here (``None`` if it can)."""
    from pluginsdk.backends.wasm import WasmBackend

    return WasmBackend.unavailable_reason({"wasm_engine": "component"})
