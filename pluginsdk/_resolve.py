"""Shared look-ups for the host side: ``module:attr`` references, host specs, backend availability.

The command line, ``pluginsdk check``, the host and the pytest kit each
need these; one implementation means one set of error messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import ConfigError

if TYPE_CHECKING:
    from .backends.base import Backend
    from .spec import HookSpec

__all__ = ["backend_class", "isolation_unavailable", "load_spec", "resolve", "sandbox_description", "split_ref"]


def split_ref(ref: str, *, what: str = "reference") -> tuple[str, str | None]:
    """``"pkg.mod:obj.attr"`` as ``("pkg.mod", "obj.attr")`` (``attr`` ``None`` if absent).

    Raises :class:`~pluginsdk.ConfigError` naming ``ref`` if it is not dotted
    Python names.
    """
    module, sep, attr = (part.strip() for part in ref.partition(":"))
    names = [module, *([attr] if sep else [])]
    if not all(name and all(p.isidentifier() for p in name.split(".")) for name in names):
        raise ConfigError(f"{what} must look like module:OBJECT (dotted Python names), not {ref!r}")
    return module, attr or None


def resolve(module: str, attr: str | None = None) -> Any:
    """Import ``module`` and walk to ``attr`` (``a.b``), as an entry point would.

    Whatever the import raises propagates: callers decide whose fault it is.
    """
    import importlib

    obj: Any = importlib.import_module(module)
    for part in (attr or "").split("."):
        if part:
            obj = getattr(obj, part)
    return obj


def load_spec(ref: str) -> HookSpec:
    """The host's :class:`~pluginsdk.HookSpec` named by ``"module:OBJECT"`` (host code, never plugin code).

    Every failure is a :class:`~pluginsdk.ConfigError` naming ``ref``.
    """
    from .spec import HookSpec

    module, attr = split_ref(ref, what="a spec")
    if attr is None:
        raise ConfigError(f"a spec must look like module:OBJECT, not {ref!r}")
    try:
        obj = resolve(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load spec {ref!r}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # the host's module body raised
        raise ConfigError(f"cannot load spec {ref!r}: importing {module} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, HookSpec):
        raise ConfigError(f"spec {ref!r} is a {type(obj).__name__}, not a pluginsdk.HookSpec")
    return obj


#: The backends of isolated levels whose workers are Ray actors (``executor = "ray"``).
RAY_BACKENDS = {
    "process": "pluginsdk.backends.ray_worker:RayProcessBackend",
    "wasm": "pluginsdk.backends.ray_worker:RayWasmBackend",
}


def backend_class(isolation: str, executor: str = "local") -> type[Backend]:
    """The backend class for ``isolation`` with its workers on ``executor`` (imported on first use)."""
    from .backends.base import BACKENDS

    ref = RAY_BACKENDS[isolation] if executor == "ray" and isolation in RAY_BACKENDS else BACKENDS[isolation]
    module, _, name = ref.partition(":")
    found: type[Backend] = resolve(module, name)
    return found


# (level, interpreter, executor) -> reason: a missing extra or interpreter does not
# appear while the process runs, and the wasm check costs tens of milliseconds.
_availability: dict[tuple[str, str | None, str], str | None] = {}


def isolation_unavailable(
    isolation: str, *, wasm_interpreter: str | None = None, executor: str = "local"
) -> str | None:
    """Why ``isolation`` cannot run here (a missing extra, say), or ``None`` if it can.

    ``executor="ray"``: with its workers on Ray, which needs the ``ray`` extra
    (found, not imported: importing Ray takes a second).  Checked once per
    process for each ``(isolation, wasm_interpreter, executor)``.
    """
    from .config import ISOLATION_LEVELS

    if isolation not in ISOLATION_LEVELS:
        raise ValueError(f"unknown isolation level {isolation!r} (expected one of {', '.join(ISOLATION_LEVELS)})")
    key = (isolation, wasm_interpreter, executor)
    if key not in _availability and executor == "ray" and isolation != "inprocess":
        from ._ray.cluster import unavailable_reason

        _availability[key] = unavailable_reason() or isolation_unavailable(isolation, wasm_interpreter=wasm_interpreter)
    if key not in _availability:
        import importlib.util

        from .backends.base import BACKENDS

        if importlib.util.find_spec(BACKENDS[isolation].partition(":")[0]) is None:
            reason: str | None = f"the {isolation!r} isolation backend is not available in this version of pluginsdk"
        else:
            reason = backend_class(isolation).unavailable_reason({"wasm_interpreter": wasm_interpreter})
        _availability[key] = reason
    return _availability[key]


def sandbox_description(wasm_interpreter: str | None = None) -> str:
    """Which interpreter a sandboxed plugin would run under, or why none can (imports no wasmtime)."""
    reason = isolation_unavailable("wasm", wasm_interpreter=wasm_interpreter)
    if reason is not None:
        return f"unavailable: {reason}"
    from ._wasm.interpreter import locate, wasmtime_version

    found = locate(wasm_interpreter)
    origin = "bundled, pinned" if found.bundled else "user-supplied"
    return f"{found.path} ({origin}, sha256 {found.sha256[:16]}..., wasmtime {wasmtime_version()})"
