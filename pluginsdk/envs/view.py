"""What a worker in a private environment sees of the host: the plugin's package and the SDK, by symlink.

The worker's path must not hold the host's site-packages (the plugin would
see the host's versions, not its own pins), yet the plugin's package and the
SDK's guest side are installed only in the host's environment, and should
not be installed twice.  So each gets a *view*: a small directory of
symbolic links, under ``cache_dir()/envs/views``:

* in front of the environment's own path: the plugin's top-level package
  (and its ``.dist-info``, so ``importlib.metadata`` knows it) and
  ``pluginsdk`` itself;
* behind it (``support``): the few libraries the guest side may import
  (msgpack; cattrs and attrs for values that are not plain data), used only
  when the environment has none of its own.

Views are named by a hash of what they point to and made atomically (built
aside, then renamed), so concurrent hosts never see half of one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import threading
import time
from collections.abc import Sequence

from .._paths import cache_dir

__all__ = ["SUPPORT_MODULES", "prune_views", "worker_path"]

#: Top-level modules the guest side may import beyond the standard library (msgpack always;
#: cattrs and what it needs only for values that are not plain data).
SUPPORT_MODULES = ("msgpack", "cattrs", "cattr", "attr", "attrs", "exceptiongroup", "typing_extensions")
_SDK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _views_dir() -> str:
    return os.path.join(cache_dir(), "envs", "views")


def _located(name: str) -> str | None:
    """Where top-level module ``name`` lives in the host (a package directory or a file), without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return next(iter(spec.submodule_search_locations))
    return spec.origin if spec.origin and os.path.isfile(spec.origin) else None


def _dist_info(path_entry: str | None, dist: str, version: str) -> str | None:
    if not path_entry:
        return None
    norm = dist.replace("-", "_").replace(".", "_")
    for candidate in (f"{norm}-{version}.dist-info", f"{norm.lower()}-{version}.dist-info"):
        full = os.path.join(path_entry, candidate)
        if os.path.isdir(full):
            return full
    return None


def _view(kind: str, links: Sequence[str]) -> str:
    """A directory holding a symlink to each of ``links`` (by base name): made once, atomically."""
    digest = hashlib.sha256("\0".join([kind, *links]).encode()).hexdigest()[:20]
    final = os.path.join(_views_dir(), f"{kind}-{digest}")
    if os.path.isdir(final):
        try:
            os.utime(final)
        except OSError:
            pass
        return final
    tmp = f"{final}.{os.getpid()}.{threading.get_ident()}.tmp"
    os.makedirs(tmp, exist_ok=True)
    for target in links:
        link = os.path.join(tmp, os.path.basename(target.rstrip(os.sep)))
        if not os.path.lexists(link):
            os.symlink(target, link)
    try:
        os.rename(tmp, final)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def worker_path(
    package_dir: str, path_entry: str | None, dist: str, version: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(front, back)``: the directories a private-environment worker puts before and after its own path."""
    front = [os.path.abspath(package_dir), _SDK_DIR]
    info = _dist_info(path_entry, dist, version)
    if info is not None:
        front.append(info)
    support = [p for p in (_located(name) for name in SUPPORT_MODULES) if p is not None]
    back = (_view("support", sorted(set(support))),) if support else ()
    return (_view("plugin", front),), back


def prune_views(cutoff: float) -> list[str]:
    """Remove views not used since ``cutoff`` (a ``time.time()``); return their paths."""
    base = _views_dir()
    try:
        names = os.listdir(base)
    except OSError:
        return []
    removed = []
    for name in names:
        path = os.path.join(base, name)
        try:
            used = os.stat(path).st_mtime
        except OSError:
            continue
        if used <= cutoff or (name.endswith(".tmp") and used < time.time() - 3600):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
