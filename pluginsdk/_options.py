"""``BackendOptions``: the host's settings for a backend (see :mod:`pluginsdk.config`, which exports it)."""

from __future__ import annotations

from typing import NamedTuple

from ._errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._ray.settings import RaySettings
    from .envs.settings import EnvironmentSettings

__all__ = ["BackendOptions"]


class BackendOptions(NamedTuple):
    """The host's settings for a backend, beyond the plugin's own target.

    Attributes:
        sys_path: The import path the plugin should see (default: the host's ``sys.path``).
        python: Interpreter for worker processes (default: ``sys.executable``).
        wasm_interpreter: A ``python.wasm`` to use instead of the bundled one.
        wasm_packages: Top-level packages the plugin's manifest asks to have
            mounted in the sandbox (``[wasm] packages``).
        wasm_allowed: Distributions or top-level packages the host's policy lets
            any sandboxed plugin have mounted, beyond its own dependencies.
        wasm_paths: Directories the host mounts in the sandbox (``/paths/N``).
        wasm_spin: Seconds a sandbox call spins before it sleeps (default: the backend's).
        prewarm: Start every worker or instance now, not as calls arrive.
        coalesce: Let calls that find every worker busy queue and cross together
            (see :mod:`pluginsdk.backends.coalesce`); ``False``: each waits for a worker.
        sys_path_tail: Directories a worker puts after its interpreter's own path.
        host_path: Whether a worker also sees the host: the plugin's path entry,
            ``sys_path`` (default the host's ``sys.path``) and the SDK's root in front
            of its own path.  ``False`` for a private environment: then ``sys_path``
            alone goes in front (see :mod:`pluginsdk.envs`).
        check_values: In-process, apply the value contract of the isolated levels
            (``Host(..., check_values=True)``; see :mod:`pluginsdk.backends.inprocess`).
        wasm_engine: The sandbox engine, ``"interpreter"`` or ``"component"``
            (default: ``PLUGINSDK_WASM_ENGINE``, else ``"interpreter"``).
        executor: Where the workers run: ``local`` or ``ray`` (Ray actors; see
            :mod:`pluginsdk.backends.ray_worker`).
        ray: The host's ``[policy.ray]`` settings, for ``executor="ray"``.
        environment: The plugin's ``[environment]`` dependencies, when Ray
            installs them on the node (its ``runtime_env``) rather than the host,
            or, at ``wasm``, those whose closure the sandbox gets from ``wasm_site``.
        environments: The host's ``[policy.environments]``: the index settings Ray installs with.
        wasm_site: At ``wasm``, the site-packages of the plugin's private environment: the
            closure of ``environment`` is resolved and staged from there, not from the host's path.
    """

    sys_path: tuple[str, ...] | None = None
    python: str | None = None
    wasm_interpreter: str | None = None
    wasm_packages: tuple[str, ...] = ()
    wasm_allowed: tuple[str, ...] = ()
    wasm_paths: tuple[str, ...] = ()
    wasm_spin: float | None = None
    prewarm: bool = False
    coalesce: bool = True
    sys_path_tail: tuple[str, ...] = ()
    host_path: bool = True
    check_values: bool = False
    # The sandbox engine (see pluginsdk.backends.wasm.wasm_engine).
    wasm_engine: str | None = None
    executor: str = "local"
    ray: RaySettings | None = None
    environment: tuple[str, ...] | None = None
    environments: EnvironmentSettings | None = None
    wasm_site: tuple[str, ...] | None = None

    @classmethod
    def from_mapping(cls, options: Mapping[str, object]) -> BackendOptions:
        """Options from the untyped mapping ``PluginTarget.options`` used to be; unknown keys are errors."""
        unknown = options.keys() - cls._fields
        if unknown:
            raise ConfigError(f"unknown backend option(s): {', '.join(sorted(unknown))}")
        values = dict(options)
        for key in (
            "sys_path",
            "wasm_packages",
            "wasm_allowed",
            "wasm_paths",
            "sys_path_tail",
            "environment",
            "wasm_site",
        ):
            if values.get(key) is not None:
                values[key] = tuple(str(v) for v in values[key])  # type: ignore[attr-defined]
        return cls(**values)  # type: ignore[arg-type]
