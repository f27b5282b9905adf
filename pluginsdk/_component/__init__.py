"""The ``component`` engine of the ``wasm`` level: each plugin built into a snapshot component.

Where the ``interpreter`` engine (:mod:`pluginsdk._wasm`) boots CPython in
every instance, this one builds each plugin, with its dependency closure and
the guest side, into a WebAssembly component with ``componentize-py``,
snapshotted after its imports; an instance starts from the snapshot in
milliseconds.  Submodules:

* :mod:`.build` builds, compiles and caches a plugin's component (keyed by content);
* :mod:`.instance` runs one instance: the engine's kind of worker;
* :mod:`.backend` is the ``wasm`` backend on this engine.

What runs inside is :mod:`pluginsdk.guest.component_app`.  Nothing here
imports ``wasmtime`` or ``componentize_py`` at module level.
"""

from __future__ import annotations

import importlib.util

__all__ = ["ENGINES", "unavailable_reason"]

#: The sandbox engines, the first the default (``wasm_engine`` / ``PLUGINSDK_WASM_ENGINE``).
ENGINES = ("interpreter", "component")
_HINT = "install the extra: pip install 'pluginsdk-isolated[wasm]'"


def unavailable_reason() -> str | None:
    """Why the component engine cannot run here, or ``None`` when it can."""
    from .._wasm.interpreter import WASMTIME_MAJOR, wasmtime_version
    from .build import tool_version

    ver = wasmtime_version()
    if ver is None or importlib.util.find_spec("wasmtime") is None:
        return f"wasmtime is not installed; {_HINT}"
    if ver.split(".")[0] != str(WASMTIME_MAJOR):
        return f"wasmtime {ver} is installed, but the sandbox needs wasmtime {WASMTIME_MAJOR}.x; {_HINT}"
    if tool_version() is None or importlib.util.find_spec("componentize_py") is None:
        return f"the component engine needs componentize-py, which is not installed; {_HINT}"
    return None
