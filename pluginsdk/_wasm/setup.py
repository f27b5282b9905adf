"""Setting up the sandbox once per interpreter and process: verify, compile, stage, warm up.

Above :mod:`.cache` (what is kept on disk) and :mod:`.store` (running the
interpreter): the bytecode warm-up runs a program, so it cannot live in the
cache module without an import cycle.
"""

from __future__ import annotations

from pathlib import Path

from .cache import _COMPLETE, Sandbox, ensure_module, lock, mark_used, prune, stage_guest_lib
from .interpreter import Interpreter, locate, wasm_cache_dir
from .store import run_program

__all__ = ["prepare", "warm"]

_sandboxes: dict[str, Sandbox] = {}


def _ensure_bytecode(interp: Interpreter, module: Path, lib: Path) -> Path:
    """``pyc-…/`` for ``lib``, compiled by a warm-up instance if missing."""
    out = wasm_cache_dir() / f"pyc-{interp.sha256[:12]}-{lib.name[4:]}"
    if (out / _COMPLETE).exists():
        return out
    out.mkdir(exist_ok=True)
    partial = Sandbox(interpreter=interp, module_file=module, lib_dir=lib, pycache_dir=out)
    # Importing what every instance imports also caches the stdlib modules
    # involved (the interpreter ships their sources only).
    code = (
        "import sys; sys.pycache_prefix = '/pycache'; sys.path.insert(0, '/lib'); "
        "import compileall; ok = compileall.compile_dir('/lib', quiet=2); "
        "import json, marshal, importlib.util, io, pluginsdk.guest.loop, pluginsdk.guest.fastcodec, msgpack\n"
        "for name in ('pluggy', 'cattrs', 'inspect', 'traceback', 'typing'):\n"
        " try:\n  __import__(name)\n except Exception:\n  pass\n"
        "sys.exit(0 if ok else 1)"
    )
    if run_program(partial, ["-c", code], writable_pycache=True) == 0:
        (out / _COMPLETE).write_text("")
    return out


def prepare(explicit: str | None = None) -> Sandbox:
    """Verify the interpreter, compile/stage what is missing; cached per process."""
    interp = locate(explicit)
    with lock:
        module = ensure_module(interp)  # a stat when already checked: catches a cache changed under us
        found = _sandboxes.get(interp.path)
        if found is not None and found.interpreter == interp and found.module_file == module:
            mark_used(found)
            return found
        lib = stage_guest_lib()
        pyc = _ensure_bytecode(interp, module, lib)
        sandbox = Sandbox(interpreter=interp, module_file=module, lib_dir=lib, pycache_dir=pyc)
        _sandboxes[interp.path] = sandbox
        mark_used(sandbox)
        prune(keep=_sandboxes.values())
        return sandbox


def warm(explicit: str | None = None) -> Path:
    """Build every cache entry :func:`prepare` needs; return the compiled module's path."""
    return prepare(explicit).module_file
