"""Private environments on disk: one per key, built once, reused, rebuilt when damaged.

Layout, under ``cache_dir()/envs``::

    <key>/                 the environment (a virtual environment)
    <key>/pluginsdk-env.json   the marker, written last: the environment is complete
    <key>/pluginsdk-used       touched at each use (for ``prune``)
    <key>.lock             flock'ed while the environment is checked or built

The key is a hash of everything that decides what gets installed: the
sorted, normalised dependencies, the interpreter (path and version) and the
index settings (the policy's, and the ``UV_*``/``PIP_*`` variables that name
indexes).  Two hosts starting together build an environment once: the second
waits on the lock (within the build timeout) and then finds the marker.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from .._errors import PluginLoadError
from .._paths import cache_dir
from .builder import Installer, build, env_python, find_installer, installer_problem
from .settings import EnvironmentSettings

__all__ = [
    "MARKER",
    "Environment",
    "environment_key",
    "envs_dir",
    "list_environments",
    "normalize_dependencies",
    "provision",
    "prune",
]

MARKER = "pluginsdk-env.json"
USED = "pluginsdk-used"
_FORMAT = 1
#: Environment variables that change what an installer resolves: part of the key.
_INDEX_VARIABLES = (
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_NO_INDEX",
    "UV_INDEX",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
)
#: Seconds the interpreter check of an existing environment may take.
CHECK_TIMEOUT = 15.0
# Interpreters this process has run, by path: (inode, mtime, size) of the file then.  A
# replaced or removed interpreter no longer matches, and is run (or found missing) again.
_checked: dict[str, tuple[int, int, int]] = {}


class Environment(NamedTuple):
    """One private environment, ready to run.

    Attributes:
        key: What identifies it (a hash of what determines it).
        root: Its directory.
        python: Its interpreter.
        dependencies: What was installed into it (normalised, sorted).
        built: Whether this call built it (else it was reused).
        installer: ``uv`` or ``pip``: what built it.
        seconds: How long this call took (building, or checking and waiting).
    """

    key: str
    root: str
    python: str
    dependencies: tuple[str, ...]
    built: bool
    installer: str
    seconds: float


def envs_dir() -> str:
    """Where private environments live: ``cache_dir()/envs``."""
    return os.path.join(cache_dir(), "envs")


def normalize_dependencies(dependencies: Iterable[str]) -> tuple[str, ...]:
    """Each PEP 508 string as ``packaging`` prints it, sorted, without repeats (``ValueError`` if invalid)."""
    from packaging.requirements import InvalidRequirement, Requirement

    out = set()
    for dep in dependencies:
        try:
            out.add(str(Requirement(dep)))
        except InvalidRequirement as exc:
            raise ValueError(f"{dep!r} is not a PEP 508 requirement: {exc}") from None
    return tuple(sorted(out))


_DEFAULT_SETTINGS = EnvironmentSettings()


def environment_key(dependencies: Iterable[str], settings: EnvironmentSettings = _DEFAULT_SETTINGS) -> str:
    """The key of the environment holding ``dependencies`` under ``settings``, for this interpreter."""
    determined = {
        "format": _FORMAT,
        "dependencies": list(normalize_dependencies(dependencies)),
        "python": sys.executable,
        "version": sys.version,
        "index": [settings.index_url, list(settings.extra_index_urls), list(settings.find_links), settings.no_index],
        "builds": settings.allow_builds,
        "variables": {k: os.environ[k] for k in _INDEX_VARIABLES if k in os.environ},
    }
    text = json.dumps(determined, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def provision(
    dependencies: Sequence[str],
    settings: EnvironmentSettings = _DEFAULT_SETTINGS,
    *,
    plugin: str | None = None,
    installer: Installer | None = None,
) -> Environment:
    """The environment holding ``dependencies``: reused if complete and sound, else built (once, across processes).

    Raises :class:`~pluginsdk.PluginLoadError` naming ``plugin`` when the
    environment cannot be had: the installer's own message for a failed
    build, or a timeout (``settings.timeout``, which also bounds waiting for
    another process's build).
    """
    start = time.monotonic()
    deadline = start + settings.timeout
    try:
        deps = normalize_dependencies(dependencies)
    except ValueError as exc:
        raise PluginLoadError(f"invalid [environment] dependencies: {exc}", plugin=plugin) from None
    key = environment_key(deps, settings)
    root = os.path.join(envs_dir(), key)
    marker = _sound(root, key)
    if marker is not None:  # the common case: no lock, no installer
        _touch(root)
        return _environment(key, root, deps, marker, built=False, start=start)
    os.makedirs(envs_dir(), exist_ok=True)
    fd = _lock(root + ".lock", deadline, plugin)
    try:
        marker = _sound(root, key)  # built by another process while this one waited
        if marker is not None:
            _touch(root)
            return _environment(key, root, deps, marker, built=False, start=start)
        if installer is None:
            installer = find_installer()
        if installer is None:
            raise PluginLoadError(f"cannot build a private environment: {installer_problem()}", plugin=plugin)
        shutil.rmtree(root, ignore_errors=True)  # damaged or half-built: start afresh
        try:
            build(root, deps, settings, installer=installer, deadline=deadline, plugin=plugin)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        marker = {
            "key": key,
            "dependencies": list(deps),
            "python": sys.executable,
            "version": sys.version.split()[0],
            "installer": installer.name,
            "index": settings.installer_args(),
            "built": time.time(),
            "build_seconds": round(time.monotonic() - start, 3),
        }
        _write_json(os.path.join(root, MARKER), marker)  # last: the environment is complete
        _touch(root)
        return _environment(key, root, deps, marker, built=True, start=start)
    finally:
        os.close(fd)  # releases the lock


def _environment(
    key: str, root: str, deps: tuple[str, ...], marker: dict[str, Any], *, built: bool, start: float
) -> Environment:
    seconds = time.monotonic() - start
    return Environment(key, root, env_python(root), deps, built, str(marker.get("installer", "?")), seconds)


def _read_marker(root: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(root, MARKER), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _sound(root: str, key: str) -> dict[str, Any] | None:
    """The marker of a complete environment whose interpreter runs, else ``None`` (missing or damaged)."""
    marker = _read_marker(root)
    if marker is None or marker.get("key") != key:
        return None
    python = env_python(root)
    try:
        st = os.stat(python)  # follows the link: a base interpreter gone fails here
    except OSError:
        return None
    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    if _checked.get(python) == stamp:
        return marker  # this process ran this very interpreter already
    if not os.access(python, os.X_OK):
        return None
    try:
        check = subprocess.run(
            [python, "-I", "-S", "-c", "import sys; print(sys.version)"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CHECK_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if check.returncode != 0 or check.stdout.decode(errors="replace").strip() != sys.version.strip():
        return None
    _checked[python] = stamp
    return marker


def _lock(path: str, deadline: float, plugin: str | None) -> int:
    """``path`` opened and flock'ed (exclusive), waiting until ``deadline`` at most."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise PluginLoadError(
                    f"timed out waiting for another process to build the private environment ({path})",
                    plugin=plugin,
                ) from None
            time.sleep(0.05)
        except OSError:
            os.close(fd)
            raise


def _touch(root: str) -> None:
    try:
        with open(os.path.join(root, USED), "a"):
            pass
        os.utime(os.path.join(root, USED))
    except OSError:
        pass  # a read-only cache: prune only sees the build time


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _last_used(root: str) -> float | None:
    for name in (USED, MARKER):
        try:
            return os.stat(os.path.join(root, name)).st_mtime
        except OSError:
            continue
    return None


def list_environments() -> list[dict[str, Any]]:
    """Every environment under :func:`envs_dir`: its marker's fields, ``root``, ``last_used`` and ``complete``."""
    base = envs_dir()
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    found = []
    for name in names:
        root = os.path.join(base, name)
        if name in ("views", "support") or not os.path.isdir(root):
            continue
        marker = _read_marker(root)
        entry: dict[str, Any] = dict(marker or {"key": name})
        entry.update(root=root, complete=marker is not None, last_used=_last_used(root))
        found.append(entry)
    return found


def prune(days: float | None = None) -> list[str]:
    """Remove environments (and worker path views) unused for ``days`` (default 30; 0: all); return their paths.

    An environment being built or checked (its lock held) is left alone.
    """
    import fcntl

    cutoff = time.time() - (30.0 if days is None else days) * 86400
    removed = []
    for entry in list_environments():
        root = entry["root"]
        used = entry["last_used"]
        if used is not None and used > cutoff and entry["complete"]:
            continue
        fd = os.open(root + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(root, ignore_errors=True)
            removed.append(root)
        finally:
            os.close(fd)
    from .view import prune_views

    return removed + prune_views(cutoff)
