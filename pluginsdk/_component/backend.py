"""The ``wasm`` level on the ``component`` engine: the same pooled backend, another kind of worker.

:class:`ComponentEngine` holds what ``pluginsdk.backends.wasm.ComponentBackend``
(the :class:`~pluginsdk.backends.wasm.WasmBackend` that ``wasm_engine =
"component"`` selects) does differently; it does not import that module, so
the two do not import each other.  Preparing it resolves the
plugin's dependency closure for the guest's Python (the markers evaluated
as CPython 3.14 on WASI sees them), builds or finds the plugin's snapshot
component (:mod:`.build`), and keeps engines with it loaded
(:class:`.instance.Runtime`); its workers are
:class:`.instance.ComponentInstance`.  Calls, batches, streams, errors and
limits go through :class:`~pluginsdk.backends.pooled.PooledBackend` as at
every other level.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from .._errors import PluginError
from .._native import package_extensions, refuse_extensions
from ..backends.base import PluginTarget
from ..backends.pooled import PooledBackend
from ..backends.worker import Worker, start_errors

__all__ = ["ComponentEngine", "prepare_target", "warm_components"]


class ComponentEngine(PooledBackend):
    """Runs a plugin in a pool of snapshot-component instances (see the module docstring).

    Mixed in before ``WasmBackend``, whose start-up and clean-up it keeps.
    """

    engine: ClassVar[str] = "component"
    _prepare_lock: threading.Lock
    _plugin_log: logging.Logger
    _guest_path: list[str]

    def __init__(self, target: PluginTarget, *, log: logging.Logger) -> None:
        super().__init__(target, log=log)
        self._runtime: Any = None
        self.built: Any = None  # the build.Built, once prepared
        # No descriptor gate to ask after each call (WasmBackend's reason to turn the fast release off).
        self.pool.plain_release = not self.pool.recycle_after and not self.pool.idle_timeout

    @classmethod
    def unavailable_reason(cls, options: Mapping[str, Any] | None = None) -> str | None:
        from . import unavailable_reason

        return unavailable_reason()

    def describe(self) -> str:
        from .._wasm.interpreter import wasmtime_version
        from .build import tool_version

        python = self.built.python if self.built is not None else "not built"
        return (
            f"wasm (component, Python {python}, componentize-py {tool_version()}, wasmtime {wasmtime_version()},"
            f" {self.pool.occupancy()} instances)"
        )

    @property
    def guest_python(self) -> str:
        """The Python version the plugin runs under (known before the build: the tool's)."""
        from .build import guest_python

        return self.built.python if self.built is not None else guest_python()

    def _prepare(self) -> None:
        name = self.target.name
        reason = self.unavailable_reason()
        if reason is not None:
            from .._errors import BackendUnavailable

            raise BackendUnavailable(reason, plugin=name)
        refuse_extensions(name, self.target.package_dir)
        with self._prepare_lock:
            if self._runtime is not None:
                return
            try:
                self.built = prepare_target(self.target, self.options, log=self.log)
            except PluginError as exc:
                exc.plugin = name
                raise
            from .instance import Runtime

            self._runtime = Runtime.acquire(str(self.built.cwasm), self.built.mounts)
            extra = [(path, f"/paths/{i}") for i, path in enumerate(self.options.wasm_paths)]
            self._extra_mounts = tuple(extra)
            self._guest_path = [guest for _, guest in extra]

    def _build_mounts(self) -> Any:
        return None

    def _new_worker(self) -> Worker:
        from .instance import ComponentInstance

        with start_errors(self.target.name, "a sandbox instance"):
            return ComponentInstance(
                self._runtime,
                self.hello(self._guest_path),
                self._extra_mounts,
                max_message=self.max_message,
                memory_mb=int(self.limits.memory_mb or 0),
                log=self._plugin_log,
            )

    def close(self) -> None:
        super().close()
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.release()


def prepare_target(target: PluginTarget, options: Any, *, log: logging.Logger, progress: Any = None) -> Any:
    """Resolve ``target``'s closure for the guest and build (or find) its component."""
    return _prepare(
        target.name,
        target.dist,
        target.module,
        target.package_dir,
        target.path_entry,
        target.spec.group,
        options,
        log=log,
        progress=progress,
    )


def warm_components(path: Sequence[str] | None = None, progress: Any = None) -> list[dict[str, Any]]:
    """Build (or find) the component of every installed plugin whose manifest asks for ``wasm``.

    Every entry-point group on ``path`` (default ``sys.path``) is searched
    (a host given ``path=`` finds the same plugins);
    one record per such plugin: ``name``, ``group``, ``dist``, ``outcome``
    (``built``, ``cached``, ``skipped`` or ``failed``), ``detail`` and
    ``seconds``.  A plugin with a private ``[environment]`` is skipped: its
    component is built with that environment, by the host that makes it.
    The build uses the settings a host with a default policy passes (a
    policy's ``wasm_packages`` make another component, built at first start).
    """
    import time

    from .._survey import entry_point_groups
    from ..config import AVAILABLE, BackendOptions
    from ..discovery import discover

    log = logging.getLogger("pluginsdk.wasm")
    search = list(sys.path if path is None else path)
    records: list[dict[str, Any]] = []
    for group in sorted(entry_point_groups(search)):
        for cand in discover(None, group=group, path=search, use_index=False):
            if cand.isolation != "wasm" or cand.package_dir is None or cand.path_entry is None:
                continue
            record: dict[str, Any] = {"name": cand.name, "group": group, "dist": cand.dist, "seconds": 0.0}
            records.append(record)
            if cand.status != AVAILABLE:
                record.update(outcome="failed", detail=cand.reason)
                continue
            if cand.environment is not None:
                record.update(outcome="skipped", detail="has a private [environment]: built when a host starts it")
                continue
            if package_extensions(cand.package_dir):
                record.update(outcome="failed", detail="isolation 'wasm' cannot load C extensions")
                continue
            # The import path a host gives its backends (Host(path=...) puts its directories first).
            sys_path = tuple(sys.path if path is None else [*path, *sys.path])
            options = BackendOptions(sys_path=sys_path, wasm_packages=cand.wasm_packages, wasm_engine="component")
            started = time.monotonic()
            try:
                built = _prepare(
                    cand.name,
                    cand.dist,
                    cand.module,
                    cand.package_dir,
                    cand.path_entry,
                    group,
                    options,
                    log=log,
                    progress=progress,
                )
            except PluginError as exc:
                record.update(outcome="failed", detail=exc.message)
                continue
            finally:
                record["seconds"] = time.monotonic() - started
            record.update(outcome="built" if built.built else "cached", detail=str(built.entry))
    return records


def _prepare(
    name: str,
    dist: str,
    module: str,
    package_dir: str,
    path_entry: str,
    group: str,
    options: Any,
    *,
    log: logging.Logger,
    progress: Any = None,
) -> Any:
    from .._closure import guest_environment, resolve, resolve_environment
    from .._deps import wasm_package_dirs
    from .._wasm.cache import GUEST_PACKAGES, OPTIONAL_GUEST_PACKAGES
    from .._wasm.deps import _files
    from .build import ensure, guest_python

    search = [path_entry, *(options.sys_path or sys.path)]
    env = guest_environment(f"python-{guest_python()}")
    provided = ("pluginsdk", *GUEST_PACKAGES, *OPTIONAL_GUEST_PACKAGES)
    if options.wasm_site is not None:  # a private environment: its pins, never the host's packages
        closure = resolve_environment(
            name,
            dist,
            search,
            options.environment or (),
            options.wasm_site,
            env=env,
            group=group,
            provided=provided,
        )
    else:
        closure = resolve(name, dist, search, env=env, group=group, provided=provided)
    top = module.split(".")[0]
    files, _left_out = _files(name, closure)
    site = [(rel, Path(host)) for rel, host, _ in files if rel.split("/")[0] != top]
    on_site = {rel.split("/")[0].split(".")[0] for rel, _ in site}
    # The manifest only asks; the host's dependency closure and policy decide (see _deps).
    for dep, host_path, single_file in wasm_package_dirs(
        name, dist, options.wasm_packages, options.wasm_allowed, search, group=group
    ):
        if dep in on_site:
            continue
        if single_file:
            site.append((f"{dep}.py", Path(host_path)))
        else:
            root = Path(host_path)
            site += [
                (f"{dep}/{p.relative_to(root).as_posix()}", p)
                for p in sorted(root.rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts
            ]

    def report(text: str) -> None:
        log.info("plugin %r: %s (once; then cached)", name, text)
        if progress is not None:
            progress(text)

    return ensure(module=module, package_dir=package_dir, site_files=site, progress=report)
