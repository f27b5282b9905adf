"""Making one virtual environment with uv (the ``envs`` extra), or with ``venv`` and pip.

Everything runs as a subprocess with a deadline, in a session of its own so
that a timeout kills the installer's children too; a failure is reported
with the installer's own words.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from .._errors import PluginLoadError
from .._text import clip
from .settings import EnvironmentSettings

__all__ = [
    "INSTALLER_VARIABLE",
    "Installer",
    "build",
    "env_python",
    "env_site_packages",
    "find_installer",
    "installer_problem",
]

#: Set to ``uv`` or ``pip`` to choose the installer (default: uv when it is installed, else pip).
INSTALLER_VARIABLE = "PLUGINSDK_ENV_INSTALLER"
#: Added to an install's failure when only wheels may be installed (the policy's default).
WHEELS_ONLY_HINT = (
    " (only wheels are installed: [policy.environments] allow_builds = true permits building from source)"
)
#: The installer's output quoted in an error, at most (its last lines: where resolvers say why).
OUTPUT_QUOTED = 1500


class Installer:
    """A way to make environments: ``uv`` (its path) or ``pip`` (the host's pip, or the environment's own)."""

    def __init__(self, name: str, uv: str | None = None, host_pip: bool = False) -> None:
        self.name = name
        self.uv = uv
        self.host_pip = host_pip

    def __repr__(self) -> str:
        return f"Installer({self.name!r})"


def find_uv() -> str | None:
    """uv's executable: the ``uv`` package's (the ``envs`` extra), else ``uv`` on ``PATH``."""
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pass
    else:
        try:
            return str(find_uv_bin())
        except (FileNotFoundError, OSError):
            pass
    return shutil.which("uv")


def _host_pip() -> bool:
    """Whether this interpreter's pip can install into another environment (``pip --python``, pip 22.3+)."""
    import importlib.util

    if importlib.util.find_spec("pip") is None:
        return False
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(p) for p in version("pip").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (22, 3)


def _has_ensurepip() -> bool:
    import importlib.util

    return importlib.util.find_spec("ensurepip") is not None and importlib.util.find_spec("venv") is not None


def find_installer() -> Installer | None:
    """The installer to use, or ``None`` if there is none (see :func:`installer_problem`)."""
    wanted = os.environ.get(INSTALLER_VARIABLE, "").strip().lower()
    if wanted in ("", "uv"):
        uv = find_uv()
        if uv is not None:
            return Installer("uv", uv=uv)
        if wanted == "uv":
            return None
    import importlib.util

    if importlib.util.find_spec("venv") is None:
        return None
    if _host_pip():
        return Installer("pip", host_pip=True)
    return Installer("pip") if _has_ensurepip() else None


def installer_problem() -> str | None:
    """Why no environment can be made here, or ``None``."""
    if find_installer() is not None:
        return None
    wanted = os.environ.get(INSTALLER_VARIABLE, "").strip().lower()
    if wanted == "uv":
        return f"{INSTALLER_VARIABLE}=uv, but uv is not installed (pip install 'pluginsdk-isolated[envs]')"
    return (
        "no installer for private environments: uv is not installed (pip install 'pluginsdk-isolated[envs]')"
        " and this Python has neither the venv module with pip nor ensurepip"
    )


def env_python(root: str) -> str:
    """The interpreter of the environment at ``root``."""
    if sys.platform == "win32":
        return os.path.join(root, "Scripts", "python.exe")
    return os.path.join(root, "bin", "python")


def env_site_packages(root: str) -> tuple[str, ...]:
    """The site-packages directories of the environment at ``root`` (made for this interpreter), those that exist.

    Pure and platform libraries may be two directories (``lib`` and ``lib64``); one linked to the other counts once.
    """
    if sys.platform == "win32":
        candidates = [os.path.join(root, "Lib", "site-packages")]
    else:
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        candidates = [os.path.join(root, lib, version, "site-packages") for lib in ("lib", "lib64")]
    found: dict[str, str] = {}
    for path in candidates:
        if os.path.isdir(path):
            found.setdefault(os.path.realpath(path), path)
    return tuple(found.values())


def build(
    root: str,
    dependencies: Sequence[str],
    settings: EnvironmentSettings,
    *,
    installer: Installer,
    deadline: float,
    plugin: str | None,
) -> None:
    """Make a fresh environment at ``root`` (which must not exist) holding ``dependencies``."""
    python = env_python(root)
    index = settings.installer_args()
    if installer.uv is not None:
        steps = [[installer.uv, "venv", "--quiet", "--python", sys.executable, root]]
        if dependencies:
            steps.append([installer.uv, "pip", "install", "--quiet", "--python", python, *index, *dependencies])
    elif installer.host_pip:
        steps = [[sys.executable, "-m", "venv", "--without-pip", root]]
        if dependencies:
            pip = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-input"]
            steps.append([*pip, "--disable-pip-version-check", *index, *dependencies])
    else:
        steps = [[sys.executable, "-m", "venv", root]]
        if dependencies:
            pip = [python, "-m", "pip", "install", "--quiet", "--no-input", "--disable-pip-version-check"]
            steps.append([*pip, *index, *dependencies])
    # A failed install says what the policy could change: without allow_builds, only wheels are installed.
    hint = "" if settings.allow_builds else WHEELS_ONLY_HINT
    for i, command in enumerate(steps):
        cwd = os.path.dirname(root)
        _run(command, cwd, deadline=deadline, plugin=plugin, deps=dependencies, installer=installer.name, hint=hint * i)


def _run(
    command: list[str],
    cwd: str,
    *,
    deadline: float,
    plugin: str | None,
    deps: Sequence[str],
    installer: str,
    hint: str = "",
) -> None:
    """Run one step; a failure or a timeout is a :class:`PluginLoadError` quoting the installer."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    what = f"the private environment of plugin {plugin!r}" if plugin else "the private environment"
    listed = ", ".join(deps) or "no dependencies"
    step = " ".join(os.path.basename(c) if i == 0 else c for i, c in enumerate(command[:3]))
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise PluginLoadError(f"cannot build {what} ({listed}): no time left before `{step}`", plugin=plugin)
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,  # not the host's: uv would look for a project there
            start_new_session=True,
        )
    except OSError as exc:
        raise PluginLoadError(f"cannot build {what} ({listed}): cannot run {installer}: {exc}", plugin=plugin) from None
    try:
        output, _ = proc.communicate(timeout=remaining)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        output, _ = proc.communicate()
        tail = _tail(output)
        message = f"cannot build {what} ({listed}): `{step}` took longer than the build timeout"
        raise PluginLoadError(message + (f"; {installer} said: {tail}" if tail else ""), plugin=plugin) from None
    if proc.returncode != 0:
        tail = _tail(output) or "(no output)"
        message = f"cannot build {what} ({listed}) with {installer}: `{step}` failed (exit {proc.returncode}): {tail}"
        raise PluginLoadError(clip(message) + hint, plugin=plugin)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _tail(output: bytes | None) -> str:
    text = (output or b"").decode("utf-8", "replace").strip()
    return text if len(text) <= OUTPUT_QUOTED else "..." + text[-OUTPUT_QUOTED:]
