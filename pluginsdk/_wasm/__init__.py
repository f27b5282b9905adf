"""Host-side helpers of the ``wasm`` isolation level (see :mod:`pluginsdk.backends.wasm`).

Submodules:

* :mod:`.interpreter` finds the CPython-on-WASI interpreter and pins its hash;
* :mod:`.cache` keeps the compiled (AOT) interpreter, the staged guest
  libraries and their bytecode in the user cache directory;
* :mod:`.deps` stages a plugin's dependency closure (copied from what each
  distribution's ``RECORD`` lists) for the guest's ``/site``;
* :mod:`.store` runs the interpreter in a wasmtime store, and :mod:`.setup`
  prepares all of the above once per process;
* :mod:`.gate` counts and caps the descriptors a guest holds, and takes its sleeps;
* :mod:`.instance` runs one sandbox instance: the sandbox kind of worker.

What runs inside the sandbox is :mod:`pluginsdk.guest` (its folder is staged
into the sandbox, never the host's site-packages).

Nothing here imports ``wasmtime`` at module level, so the CLI and the host
can ask :func:`unavailable_reason` cheaply.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["prune_cache", "unavailable_reason", "warm_cache"]


def warm_cache(interpreter: str | None = None) -> Path:
    """Compile the sandbox interpreter (if not cached yet) and return the cached file.

    Also stages the guest libraries and compiles their bytecode, so the next
    sandbox start pays for neither.  ``interpreter`` is a ``python.wasm`` of
    the caller's own; ``None`` uses ``PLUGINSDK_WASM_PYTHON`` or the bundled one.
    """
    from . import setup

    return setup.warm(interpreter)


def prune_cache(max_age_days: float | None = None) -> list[Path]:
    """Remove cached entries unused for ``max_age_days`` (default: ``cache.PRUNE_AFTER_DAYS``); what went.

    Entries of sandboxes set up in this process are kept.
    """
    from . import cache, setup

    days = cache.PRUNE_AFTER_DAYS if max_age_days is None else max_age_days
    return cache.prune(days, keep=setup._sandboxes.values())


def unavailable_reason(interpreter: str | None = None) -> str | None:
    """Why sandboxed plugins cannot run here, or ``None`` when they can."""
    from .interpreter import unavailable_reason as reason

    return reason(interpreter)
