"""Isolation level ``wasm``: the plugin runs in CPython compiled to WASI, inside the host process.

One of the two factories of :class:`~.pooled.PooledBackend`: its workers are
sandbox instances (:class:`pluginsdk._wasm.instance.Instance`), each a
wasmtime store running the pinned interpreter (see :mod:`pluginsdk._wasm`)
with the guest loop (:mod:`pluginsdk.guest`), so calls, batches, streams,
errors and limits behave exactly as at the ``process`` level.

What the guest can see, all read-only: the guest libraries (``/lib``: pluggy,
msgpack, attrs/cattrs and pluginsdk's guest side), their
bytecode (``/pycache``), the plugin's package (``/plugin/NAME``), its
distribution's dependency closure with their metadata (``/site``, staged
by :mod:`pluginsdk._wasm.deps`; for a plugin with ``[environment]``, what
its declared dependencies need, from its private environment), the extra pure-Python packages its
manifest lists under ``[wasm] packages`` that the host's policy allows
(``/deps/NAME``) and any directories the host passes as
``BackendOptions.wasm_paths`` (``/paths/N``).  No host environment variables,
no sockets, no subprocesses, nothing else of the file system.

Limits: ``memory_mb`` caps the instance's linear memory (allocations past it
raise MemoryError in the guest, reported as :class:`PluginResourceError`;
the instance is replaced); ``timeout`` traps the guest through the engine
epoch (:class:`PluginTimeout`; the instance is replaced); ``open_files`` caps
the files the guest holds open, which are the host's own descriptors (an open
past it fails with ``EMFILE`` in the guest, and the instance is replaced
after the call; see :mod:`pluginsdk._wasm.gate`).  A guest asleep
(``time.sleep``) is stopped on time too: the gate sleeps for it in slices.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from .._component.backend import ComponentEngine
from .._errors import PluginError, PluginLoadError
from .._native import package_extensions, refuse_extensions
from .base import PluginTarget
from .pooled import PooledBackend
from .worker import Worker, start_errors

__all__ = ["ComponentBackend", "WasmBackend", "wasm_engine"]

#: Chooses the sandbox engine when the host's options do not (see :func:`wasm_engine`).
ENV_ENGINE = "PLUGINSDK_WASM_ENGINE"


def wasm_engine(options: Any = None) -> str:
    """The sandbox engine ``options`` ask for: ``interpreter`` (CPython booted per instance) or
    ``component`` (a snapshot component per plugin, :mod:`pluginsdk._component`).

    ``options`` is a ``BackendOptions`` or a mapping; unset, ``PLUGINSDK_WASM_ENGINE`` decides.
    """
    from .._component import ENGINES
    from .._errors import ConfigError

    found = options.get("wasm_engine") if isinstance(options, Mapping) else getattr(options, "wasm_engine", None)
    engine = found or os.environ.get(ENV_ENGINE) or ENGINES[0]
    if engine not in ENGINES:
        raise ConfigError(f"wasm_engine: {engine!r} is not an engine; expected one of {', '.join(ENGINES)}")
    return str(engine)


class WasmBackend(PooledBackend):
    """Runs a plugin in a pool of WebAssembly sandbox instances (see the module docstring)."""

    isolation: ClassVar[str] = "wasm"
    engine: ClassVar[str] = "interpreter"

    def __new__(cls, target: PluginTarget, *, log: logging.Logger) -> WasmBackend:
        if cls is WasmBackend and wasm_engine(target.options) == "component":
            return super().__new__(ComponentBackend)
        return super().__new__(cls)

    def __init__(self, target: PluginTarget, *, log: logging.Logger) -> None:
        super().__init__(target, log=log)
        self._sandbox: Any = None
        self._mounts: Any = None
        self._guest_path: list[str] = []
        self._staging: str | None = None
        self._left_out: tuple[str, ...] = ()
        self._plugin_log = logging.getLogger(f"pluginsdk.plugin.{target.name}")
        self._prepare_lock = threading.Lock()
        self.pool.plain_release = False  # every release asks the instance about its descriptors

    @classmethod
    def unavailable_reason(cls, options: Mapping[str, Any] | None = None) -> str | None:
        if cls is WasmBackend and wasm_engine(options) == "component":
            from .._component import unavailable_reason as component_unavailable

            return component_unavailable()
        from .._wasm.interpreter import unavailable_reason

        return unavailable_reason((options or {}).get("wasm_interpreter"))

    def describe(self) -> str:
        from .._wasm.interpreter import wasmtime_version

        name = self._sandbox.interpreter.name if self._sandbox is not None else "interpreter not loaded"
        return f"wasm ({name}, wasmtime {wasmtime_version()}, {self.pool.occupancy()} instances)"

    # -- start -----------------------------------------------------------------
    def start(self) -> None:
        try:
            super().start()
        except PluginLoadError as exc:
            raise self._explain_load_error(exc) from None

    def _prepare(self) -> None:
        """Check the plugin can run here, compile or load the interpreter, build the mounts."""
        name = self.target.name
        reason = self.unavailable_reason({"wasm_interpreter": self.options.wasm_interpreter})
        if reason is not None:
            from .._errors import BackendUnavailable

            raise BackendUnavailable(reason, plugin=name)
        refuse_extensions(name, self.target.package_dir)
        with self._prepare_lock:
            if self._sandbox is None:
                from .._wasm.setup import prepare

                try:
                    sandbox = prepare(self.options.wasm_interpreter)
                except PluginError as exc:
                    exc.plugin = name
                    raise
                self._mounts = self._build_mounts()
                self._sandbox = sandbox

    def _build_mounts(self) -> Any:
        """The plugin's package, its dependency closure, its declared packages and extra paths, read-only.

        The closure (``Requires-Dist``, recursively, markers evaluated for the
        guest; see :mod:`pluginsdk._closure`) is staged as one directory at
        ``/site`` (see :mod:`pluginsdk._wasm.deps`); for a plugin with a private
        environment, the closure of its ``[environment]`` dependencies, from
        that environment's site-packages (``BackendOptions.wasm_site``).
        ``[wasm] packages`` adds packages the policy allows beyond it, each
        mounted by itself.
        """
        from .._closure import guest_environment, resolve, resolve_environment
        from .._deps import wasm_package_dirs
        from .._wasm.cache import GUEST_PACKAGES, OPTIONAL_GUEST_PACKAGES
        from .._wasm.deps import GUEST_OWN, GUEST_SITE, stage
        from .._wasm.instance import Mounts
        from .._wasm.setup import prepare

        t = self.target
        top = t.module.split(".")[0]
        dirs = [(t.package_dir, f"/plugin/{top}")]
        packages = {top: f"/plugin/{top}"}
        modules: dict[str, str] = {}
        search = [t.path_entry, *(self.options.sys_path or sys.path)]
        sandbox = prepare(self.options.wasm_interpreter)  # cached: the one _prepare has just set up
        env = guest_environment(sandbox.interpreter.name)
        provided = ("pluginsdk", *GUEST_PACKAGES, *OPTIONAL_GUEST_PACKAGES)
        if self.options.wasm_site is not None:  # a private environment: its pins, never the host's packages
            closure = resolve_environment(
                t.name,
                t.dist,
                search,
                self.options.environment or (),
                self.options.wasm_site,
                env=env,
                group=t.spec.group,
                provided=provided,
            )
        else:
            closure = resolve(t.name, t.dist, search, env=env, group=t.spec.group, provided=provided)
        staged = stage(t.name, closure, sandbox)
        self._left_out = staged.left_out
        dirs += [
            (str(staged.site), GUEST_SITE),
            (str(staged.pycache), f"/pycache{GUEST_SITE}"),
            (str(staged.own), GUEST_OWN),
        ]
        on_site = {p.name.split(".")[0] for p in staged.site.iterdir()}

        # The manifest only asks; the host's dependency closure and policy decide (see _deps).
        for dep, host_path, single_file in wasm_package_dirs(
            t.name,
            t.dist,
            self.options.wasm_packages,
            self.options.wasm_allowed,
            search,
            group=t.spec.group,
        ):
            if dep in on_site:
                continue  # staged with its distribution already
            if not single_file:
                dirs.append((host_path, f"/deps/{dep}"))
                packages[dep] = f"/deps/{dep}"
                continue
            # A single-file module: only that file is copied into a private dir.
            if self._staging is None:
                self._staging = tempfile.mkdtemp(prefix="pluginsdk-wasm-deps-")
                dirs.append((self._staging, "/deps-files"))
            shutil.copyfile(host_path, os.path.join(self._staging, f"{dep}.py"))
            modules[dep] = f"/deps-files/{dep}.py"
        sys_path = [GUEST_SITE, GUEST_OWN]
        for i, path in enumerate(self.options.wasm_paths):
            dirs.append((path, f"/paths/{i}"))
            sys_path.append(f"/paths/{i}")
        self._guest_path = sys_path
        return Mounts(dirs=tuple(dirs), packages=packages, modules=modules, sys_path=tuple(sys_path))

    def _explain_load_error(self, exc: PluginLoadError) -> PluginLoadError:
        """Name C extensions when an import failed because the sandbox cannot load them."""
        if "ImportError" not in exc.message and "ModuleNotFoundError" not in exc.message:
            return exc
        if self._mounts is None:
            return exc
        native = [f for host, _ in self._mounts.dirs for f in package_extensions(host)] + list(self._left_out)
        if not native:
            return exc
        message = (
            f"{exc.message} (isolation 'wasm' cannot load C extensions; left out of the sandbox: {', '.join(native)})"
        )
        self.pool.give_up(message)
        return PluginLoadError(message, plugin=exc.plugin, traceback=exc.traceback)

    # -- the pool's worker ---------------------------------------------------------
    def _new_worker(self) -> Worker:
        """A sandbox instance in place of a worker process (see :class:`Worker`)."""
        from .._wasm.instance import DEFAULT_SPIN, Instance

        with start_errors(self.target.name, "a sandbox instance"):
            return Instance(
                self._sandbox,
                self.hello(self._guest_path),
                self._mounts,
                max_message=self.max_message,
                memory_mb=int(self.limits.memory_mb or 0),
                open_files=int(self.limits.open_files or 0),
                log=self._plugin_log,
                spin=DEFAULT_SPIN if self.options.wasm_spin is None else self.options.wasm_spin,
            )

    def close(self) -> None:
        super().close()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None


class ComponentBackend(ComponentEngine, WasmBackend):
    """The ``wasm`` level on the ``component`` engine (see :mod:`pluginsdk._component.backend`)."""
