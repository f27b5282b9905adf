"""pluginsdk: plugins found by entry points, loaded lazily, run in-process,
in worker processes or in a WebAssembly sandbox.

The package root is guest-safe: plugin code runs ``from pluginsdk import
hookimpl`` inside worker processes and the sandbox, where the host side (and
its dependencies) is absent.  So only the marker and the exceptions are
imported eagerly; host-side names load on first access.
"""

from __future__ import annotations

from ._errors import (
    BackendUnavailable,
    CodecError,
    ConfigError,
    HookCallError,
    IncompatiblePlugin,
    ManifestError,
    PluginCrashed,
    PluginError,
    PluginHookError,
    PluginLoadError,
    PluginProtocolError,
    PluginResourceError,
    PluginTimeout,
    SpecError,
    UnknownPlugin,
)
from ._markers import hookimpl

# typing is not imported at run time: the sandbox's start-up pays for every import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._dispatch import PluginResult
    from ._stats import HookStats, Latency
    from .config import Incident, Limits
    from .host import Host, PluginInfo
    from .policy import Policy
    from .spec import HookSpec, hookspec

__all__ = [
    "BackendUnavailable",
    "CodecError",
    "ConfigError",
    "HookCallError",
    "HookSpec",
    "HookStats",
    "Host",
    "Incident",
    "IncompatiblePlugin",
    "Latency",
    "Limits",
    "ManifestError",
    "PluginCrashed",
    "PluginError",
    "PluginHookError",
    "PluginInfo",
    "PluginLoadError",
    "PluginProtocolError",
    "PluginResourceError",
    "PluginResult",
    "PluginTimeout",
    "Policy",
    "SpecError",
    "UnknownPlugin",
    "__version__",
    "hookimpl",
    "hookspec",
]

_LAZY = {
    "Host": ".host",
    "PluginInfo": ".host",
    "PluginResult": "._dispatch",
    "HookStats": "._stats",
    "Latency": "._stats",
    "HookSpec": ".spec",
    "hookspec": ".spec",
    "Policy": ".policy",
    "Limits": ".config",
    "Incident": ".config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if name == "__version__":
        from importlib.metadata import version

        return version("pluginsdk-isolated")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
