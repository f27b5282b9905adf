"""A sandboxed plugin's dependencies, staged as one read-only site directory (host side).

The sandbox cannot be handed the host's site-packages (it would see every
installed package), and WASI preopens name directories, not files: a
directory mounted at ``/x/a`` makes ``/x`` no directory the guest can list,
so neither ``sys.path`` nor :mod:`importlib.metadata` could find what is
mounted beside it.  So the files of a plugin's dependency closure (see
:mod:`pluginsdk._closure`) are copied into ``<SDK cache>/wasm/site-<key>/site``,
exactly the files each distribution's ``RECORD`` lists inside its search-path
entry, ``.dist-info`` included, C extensions and host bytecode left out.
That one directory is mounted read-only at ``/site`` and put on the guest's
``sys.path``: packages import as usual, namespace packages from several
distributions merge, ``importlib.metadata`` finds each distribution, and
package data files are beside their modules.  The plugin's own metadata
(not its package, which is mounted by itself) is staged apart, at
``/site-own``, so that plugins with the same dependencies share one copy.

The key is a hash of every file's path, size and modification time, so an
upgrade stages anew and plugins with the same closure share one copy.  Their
bytecode is compiled once by the guest interpreter (in a run that imports
nothing of them) into ``site-<key>/pyc/site``, mounted read-only at
``/pycache/site``: the guest's ``sys.pycache_prefix`` is ``/pycache``.
Entries are pruned with the rest of the cache (see :mod:`.cache`).

Refused, with an error naming the plugin, the distribution and the file: a
file that is a symbolic link or lies (through a linked directory) outside
its entry, an editable install (its files are not where its ``RECORD``
says), and a distribution whose C extensions it cannot do without
(:mod:`pluginsdk._native`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from .._closure import Dependency, record_paths
from .._errors import PluginLoadError
from .._native import extension_module, refusal
from .cache import _COMPLETE, _STAMP_EVERY, Sandbox
from .interpreter import wasm_cache_dir

__all__ = ["GUEST_OWN", "GUEST_SITE", "StagedSite", "stage"]

_SHARED_LIBRARY = re.compile(r"\.(so|pyd|dylib|dll)(\.[0-9.]+)?$")
#: Where the staged directory appears in the guest.
GUEST_SITE = "/site"
#: Where the plugin's own ``.dist-info`` appears in the guest.
GUEST_OWN = "/site-own"


class StagedSite(NamedTuple):
    """A staged closure.

    Attributes:
        site: The directory mounted at ``/site``.
        pycache: Its bytecode, mounted at ``/pycache/site``.
        own: The plugin's own metadata, mounted at ``/site-own``.
        left_out: Extension files left out, as ``dist: path`` (for error messages).
    """

    site: Path
    pycache: Path
    own: Path
    left_out: tuple[str, ...]


def _editable(dep: Dependency) -> bool:
    try:
        with open(os.path.join(dep.meta_dir, "direct_url.json"), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and isinstance(info.get("dir_info"), dict) and bool(info["dir_info"].get("editable"))


def _files(plugin: str, deps: Sequence[Dependency]) -> tuple[list[tuple[str, str, os.stat_result]], list[str]]:
    """``(relative path, host file, stat)`` of everything to stage, and the extension files left out."""
    chosen: dict[str, tuple[str, str, os.stat_result]] = {}
    left_out: list[str] = []
    for dep in deps:
        chain = " -> ".join(dep.chain) or dep.name
        meta = os.path.basename(dep.meta_dir)
        paths = record_paths(dep)
        if dep.root:  # the plugin's own package is mounted by itself: its metadata only
            paths = [p for p in paths if p.split("/")[0] == meta]
        else:
            if _editable(dep):
                why: str | None = (
                    f"{dep.name!r} is an editable install; the sandbox mounts only installed files,"
                    " so install it normally (pip install, not pip install -e)"
                )
            else:
                why = refusal(dep.name, paths, root=dep.path_entry)
                why = None if why is None else f"{why}; the sandbox cannot load C extensions"
            if why is not None and dep.optional:
                continue  # only an extra of the plugin wants it: left out
            if why is not None:
                raise PluginLoadError(f"{chain}: {why}", plugin=plugin)
        entry = dep.path_entry
        for rel in paths:
            if rel in chosen or "__pycache__" in rel.split("/") or rel.endswith((".pyc", ".pth")):
                continue
            if extension_module(rel) is not None:
                left_out.append(f"{dep.name}: {rel}")
                continue
            if _SHARED_LIBRARY.search(rel):  # bundled native libraries (``pkg.libs/libx.so.1``): of no use here
                continue
            host = os.path.join(entry, rel)
            try:
                st = os.lstat(host)
            except OSError:
                continue  # listed but gone: import says so, as it would in-process
            real_dir = os.path.realpath(os.path.dirname(host))
            inside = real_dir == entry or real_dir.startswith(entry.rstrip(os.sep) + os.sep)
            if not stat.S_ISREG(st.st_mode) or not inside:
                raise PluginLoadError(
                    f"{chain}: {host} (a file of distribution {dep.name!r}) is not a regular file inside {entry};"
                    " the sandbox mounts no links",
                    plugin=plugin,
                )
            chosen[rel] = (rel, host, st)
    return sorted(chosen.values()), left_out


def stage(plugin: str, deps: Sequence[Dependency], sandbox: Sandbox) -> StagedSite:
    """Stage ``deps`` (see the module docstring) and compile their bytecode if it is not cached yet.

    The plugin's own metadata is staged apart, so plugins with the same
    dependencies share one copy of them.

    Raises:
        PluginLoadError: A file or distribution is refused (see the module docstring).
    """
    shared, left_out = _stage_dir(plugin, [d for d in deps if not d.root], sandbox)
    own, _ = _stage_dir(plugin, [d for d in deps if d.root], sandbox)
    # Whatever compiled is valid bytecode, even if a file did not (the guest compiles that one in memory).
    return StagedSite(shared / "site", shared / "pyc" / "site", own / "site", tuple(left_out))


def _stage_dir(plugin: str, deps: Sequence[Dependency], sandbox: Sandbox) -> tuple[Path, list[str]]:
    """``site-<key>/`` holding ``deps``' files (``site/``) and their bytecode (``pyc/site/``); what was left out."""
    files, left_out = _files(plugin, deps)
    digest = hashlib.sha256()
    for dep in deps:
        digest.update(f"{dep.name}\0{dep.version}\0{int(dep.root)}\n".encode())
    for rel, _, st in files:
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    final = wasm_cache_dir() / f"site-{digest.hexdigest()[:16]}"
    if (final / _COMPLETE).exists():
        _touch(final / _COMPLETE)
        return final, left_out
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, host, _ in files:
        out = tmp / "site" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(host, out)  # keeps the mtime the bytecode is checked against
    (tmp / "site").mkdir(parents=True, exist_ok=True)
    (tmp / "pyc" / "site").mkdir(parents=True)
    compiled = any(rel.endswith(".py") for rel, _, _ in files) and _compile(sandbox, tmp)
    (tmp / _COMPLETE).write_text(json.dumps({"bytecode": compiled}))
    try:
        os.rename(tmp, final)
    except OSError:  # another process staged it first
        shutil.rmtree(tmp, ignore_errors=True)
    return final, left_out


def _touch(stamp: Path) -> None:
    """Refresh an entry's "used" stamp at most daily (pruning goes by it; see :func:`.cache.prune`)."""
    try:
        if time.time() - stamp.stat().st_mtime > _STAMP_EVERY:
            os.utime(stamp)
    except OSError:  # a read-only cache still works; it is only never pruned
        pass


def _compile(sandbox: Sandbox, staged: Path) -> bool:
    """Compile ``staged/site`` with the guest interpreter into ``staged/pyc/site``; whether it worked.

    The run imports nothing of the staged code (``compileall`` only reads it),
    and is the only one that may write the bytecode directory.
    """
    from .store import run_program

    code = (
        "import sys; sys.pycache_prefix = '/pycache'; import compileall; "
        f"sys.exit(0 if compileall.compile_dir({GUEST_SITE!r}, quiet=2, workers=1) else 1)"
    )
    dirs = [(str(staged / "site"), GUEST_SITE)]
    writable = [(str(staged / "pyc" / "site"), f"/pycache{GUEST_SITE}")]
    status = run_program(sandbox, ["-c", code], dirs=dirs, writable=writable)
    return status == 0
