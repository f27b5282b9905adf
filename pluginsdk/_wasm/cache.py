"""What the sandbox keeps in ``<SDK cache>/wasm``, and how it is (re)built.

* ``python-<sha>-wt<ver>-<cfg>.cwasm``: the interpreter, rewritten to gate
  its descriptors (see :mod:`.gate`) and compiled ahead of time
  (``Module.serialize``).  Compiling costs 4-9 s; loading the cached file is
  an mmap (<1 ms).  Keyed by interpreter hash, wasmtime version, engine
  settings and rewrite version (wasmtime refuses artifacts of another
  version/config).  Written to a temporary name and renamed, so readers
  never see half a file.  A ``.json`` beside it holds the file's SHA-256 and
  stamp; a file whose stamp changed is re-hashed and rebuilt if it no longer
  matches (corruption).
* ``lib-<hash>/``: the guest libraries (pluggy, msgpack, attrs/cattrs and
  pluginsdk's guest side: the :mod:`pluginsdk.guest` folder and the modules
  it shares with the host), copied as ``.py`` only.  The sandbox
  mounts this directory, never the host's site-packages, so the guest sees
  no host modules.  Content-addressed, so it never goes stale.
* ``pyc-<interp>-<lib>/``: bytecode of ``lib-<hash>/`` compiled *by the guest
  interpreter* in a warm-up instance that runs no plugin code (the only
  instance that may write there), then mounted read-only as
  ``sys.pycache_prefix``: plugins cannot plant bytecode for each other.

Every key changes with an upgrade (of wasmtime, the SDK or a guest
package), so old entries pile up (~27 MB a compiled module).  Each use
refreshes an entry's "used" stamp (the ``.json``, or a directory's
``.complete``) at most daily, and whenever a process sets up a sandbox,
entries unused for :data:`PRUNE_AFTER_DAYS` are removed (also ``pluginsdk
wasm prune``).  An entry in use by a long-running host is stamped at each
instance start, so it is never that old.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import BackendUnavailable
from .gate import REWRITE_VERSION, rewrite
from .interpreter import Interpreter, sha256_file, wasm_cache_dir, wasmtime_version

if TYPE_CHECKING:
    import wasmtime

__all__ = ["Sandbox", "engine_config", "load_module", "mark_used", "prune", "stage_guest_lib"]

#: Engine settings every instance uses; part of the compiled-module cache key.
ENGINE_SETTINGS: dict[str, Any] = {"epoch_interruption": True}
#: Third-party packages the guest loop imports (msgpack falls back to pure Python);
#: attrs/cattrs only when a value is not plain data.  pluggy is mounted for plugins
#: that import it themselves (the guest loop does not).  Missing optional ones are skipped.
GUEST_PACKAGES = ("msgpack",)
OPTIONAL_GUEST_PACKAGES = ("pluggy", "attr", "attrs", "cattrs", "typing_extensions", "exceptiongroup")
#: The guest program, inside ``lib-<hash>/``.
GUEST_MAIN = "pluginsdk/guest/sandbox.py"
_COMPLETE = ".complete"
#: Cache entries unused for this many days are removed.
PRUNE_AFTER_DAYS = 30.0
_STAMP_EVERY = 86400.0  # seconds between refreshes of an entry's "used" stamp

#: Held while a module is compiled or checked (one compile at a time per process).
lock = threading.Lock()
_checked_modules: set[tuple[str, int, int]] = set()


@attrs.frozen
class Sandbox:
    """Everything prepared once per interpreter and process.

    Attributes:
        interpreter: The verified interpreter.
        module_file: Its compiled, cached module.
        lib_dir: Staged guest libraries (mounted at ``/lib``).
        pycache_dir: Their bytecode (mounted read-only at ``/pycache``).
    """

    interpreter: Interpreter
    module_file: Path
    lib_dir: Path
    pycache_dir: Path


def engine_config() -> wasmtime.Config:
    """A fresh engine configuration (one per instance, see :mod:`.instance`)."""
    import wasmtime

    cfg = wasmtime.Config()
    cfg.epoch_interruption = bool(ENGINE_SETTINGS["epoch_interruption"])
    return cfg


def _settings_key() -> str:
    machine = os.uname().machine if hasattr(os, "uname") else ""
    blob = json.dumps([ENGINE_SETTINGS, sys.platform, machine, REWRITE_VERSION])
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def module_file(interp: Interpreter) -> Path:
    """Where the compiled form of ``interp`` is cached."""
    return wasm_cache_dir() / f"python-{interp.sha256[:16]}-wt{wasmtime_version()}-{_settings_key()}.cwasm"


def _write_atomic(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _key(path: Path) -> tuple[str, int, int]:
    size, mtime = _stamp(path)
    return (str(path), size, mtime)


def _module_ok(path: Path) -> bool:
    """Whether the cached module is whole: its stamp, else its hash, matches the record."""
    meta = path.with_suffix(".json")
    try:
        record = json.loads(meta.read_text())
        stamp = _stamp(path)
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict):
        return False
    if record.get("stamp") == stamp:
        return True
    if record.get("sha256") != sha256_file(path):
        return False
    record["stamp"] = stamp  # touched, not changed: remember the new stamp
    try:
        _write_atomic(meta, json.dumps(record))
    except OSError:
        pass
    return True


def compile_module(interp: Interpreter, target: Path) -> None:
    """Compile ``interp`` and cache it at ``target`` (the slow, cold path)."""
    import wasmtime

    engine = wasmtime.Engine(engine_config())
    try:
        wasm = rewrite(Path(interp.path).read_bytes())
        data = bytes(wasmtime.Module(engine, wasm).serialize())
    except (ValueError, IndexError, wasmtime.WasmtimeError) as exc:
        raise BackendUnavailable(f"cannot compile the WASI interpreter {interp.path}: {exc}") from None
    _write_atomic(target, data)
    record = {"sha256": hashlib.sha256(data).hexdigest(), "stamp": _stamp(target), "interpreter": interp.path}
    _write_atomic(target.with_suffix(".json"), json.dumps(record))


def ensure_module(interp: Interpreter, *, force: bool = False) -> Path:
    """The compiled module's path, compiling it if missing, stale or corrupt."""
    target = module_file(interp)
    if not force and target.exists() and _key(target) in _checked_modules:
        return target
    if force or not _module_ok(target):
        compile_module(interp, target)
    _checked_modules.add(_key(target))
    return target


def load_module(engine: wasmtime.Engine, sandbox: Sandbox) -> wasmtime.Module:
    """The interpreter module for ``engine``; a cache wasmtime rejects is rebuilt once."""
    import wasmtime

    try:
        return wasmtime.Module.deserialize_file(engine, str(sandbox.module_file))
    except wasmtime.WasmtimeError:
        with lock:
            ensure_module(sandbox.interpreter, force=True)
        return wasmtime.Module.deserialize_file(engine, str(sandbox.module_file))


# -- guest libraries ---------------------------------------------------------


def _package_sources(name: str) -> list[tuple[str, Path]]:
    """``(relative path, file)`` of every ``.py`` of top-level package/module ``name``."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return []
    if spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
        return sorted(
            (f"{name}/{p.relative_to(root).as_posix()}", p) for p in root.rglob("*.py") if "__pycache__" not in p.parts
        )
    if spec.origin and spec.origin.endswith(".py"):
        return [(f"{name}.py", Path(spec.origin))]
    return []


def guest_sources() -> list[tuple[str, Path]]:
    """Every file staged into ``lib-<hash>/``, by relative path."""
    from .. import guest

    sdk = Path(__file__).resolve().parent.parent
    files = [(f"pluginsdk/{m}", sdk / m) for m in guest.SHARED_MODULES]
    folder = sdk / "guest"  # the guest side is a folder: no list of its files to keep in step
    files += sorted((f"pluginsdk/guest/{p.name}", p) for p in folder.glob("*.py"))
    for name in GUEST_PACKAGES:
        found = _package_sources(name)
        if not found:
            raise BackendUnavailable(f"the sandbox needs the package {name!r}, which is not installed")
        files += found
    for name in OPTIONAL_GUEST_PACKAGES:
        files += _package_sources(name)
    return files


def stage_guest_lib() -> Path:
    """``lib-<hash>/`` holding :func:`guest_sources`, created if missing."""
    files = guest_sources()
    digest = hashlib.sha256()
    contents = []
    for rel, path in files:
        data = path.read_bytes()
        contents.append((rel, data))
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    final = wasm_cache_dir() / f"lib-{digest.hexdigest()[:16]}"
    if (final / _COMPLETE).exists():
        return final
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, data in contents:
        out = tmp / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    (tmp / _COMPLETE).write_text("")
    try:
        os.rename(tmp, final)
    except OSError:  # another process staged it first (or a stale partial copy is in the way)
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / _COMPLETE).exists():
            shutil.rmtree(final, ignore_errors=True)
            return stage_guest_lib()
    return final


def _used_stamp(entry: Path) -> Path:
    """The file whose mtime says when ``entry`` was last used."""
    return entry.with_suffix(".json") if entry.suffix == ".cwasm" else entry / _COMPLETE


def mark_used(sandbox: Sandbox) -> None:
    """Refresh the "used" stamps of ``sandbox``'s entries (at most daily: a stat each otherwise)."""
    now = time.time()
    for entry in (sandbox.module_file, sandbox.lib_dir, sandbox.pycache_dir):
        try:
            if now - _used_stamp(entry).stat().st_mtime > _STAMP_EVERY:
                os.utime(_used_stamp(entry))
        except OSError:  # a read-only cache still works; it is only never pruned
            pass


def prune(max_age_days: float = PRUNE_AFTER_DAYS, keep: Iterable[Sandbox] = ()) -> list[Path]:
    """Remove cache entries unused for ``max_age_days`` (never those of ``keep``); what was removed.

    Entries are compiled modules (with their ``.json``), staged libraries,
    their bytecode, staged plugin dependencies (``site-*``, see :mod:`.deps`)
    and temporary files left by an interrupted build.
    """
    root = wasm_cache_dir()
    cutoff = time.time() - max_age_days * 86400
    kept = {entry for s in keep for entry in (s.module_file, s.lib_dir, s.pycache_dir)}
    removed = []
    for entry in sorted(root.iterdir()):
        name = entry.name
        temporary = name.startswith(".") and name.endswith(".tmp")
        if entry in kept or not (temporary or entry.suffix == ".cwasm" or name.startswith(("lib-", "pyc-", "site-"))):
            continue
        try:
            used = entry.stat().st_mtime if temporary else _used_stamp(entry).stat().st_mtime
        except OSError:  # never completed: as old as the attempt
            used = entry.stat().st_mtime if entry.exists() else cutoff
        if used >= cutoff:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
            if entry.suffix == ".cwasm":
                entry.with_suffix(".json").unlink(missing_ok=True)
        removed.append(entry)
    return removed
