"""Connecting to Ray, and what each plugin's actors ask of it.

* :func:`connect`: the cluster this process is connected to; else the
  policy's ``address``; else a local cluster, started once per process (Ray
  shuts it down at interpreter exit, not when a host closes).
* :func:`actor_options`: resources (the policy's CPUs, GPUs and custom
  resources, and the plugin's ``memory_mb`` as Ray's ``memory``) and the
  ``runtime_env`` (:func:`runtime_env`): a plugin's ``[environment]`` becomes
  Ray's ``pip`` (or ``uv``) field, with the host's index settings
  (``[policy.environments]``) as its install options.

Code reaches nodes that do not have it installed: the plugin's package
travels as zip bytes with its actors (:func:`package_zip`), and when this
process connects to a cluster at an ``address``, pluginsdk and pluggy
travel with its job (Ray's job-level ``py_modules``).  A process already
connected to Ray keeps its own job: its nodes need pluginsdk installed.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib.util
import io
import os
import threading
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

from .._errors import PluginLoadError
from .settings import RaySettings

__all__ = [
    "actor_class",
    "actor_options",
    "connect",
    "keep_signal_handlers",
    "package_zip",
    "runtime_env",
    "sdk_code",
    "unavailable_reason",
]

_lock = threading.Lock()
_actor_class: Any = None
#: Files never shipped with a plugin's code.
EXCLUDES = ["__pycache__", "*.pyc", ".git"]


def unavailable_reason() -> str | None:
    """Why plugins cannot run on Ray here (``ray`` is an optional extra), or ``None``; imports nothing."""
    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a broken or blocked install is no install
        found = False
    if not found:
        return 'executor "ray" needs Ray, which is not installed (pip install "pluginsdk-isolated[ray]")'
    return None


@contextlib.contextmanager
def keep_signal_handlers() -> Iterator[None]:
    """Around ``ray.init``: keep Ray's handlers off this process's fatal signals.

    Sandbox instances in the host trap through wasmtime's signal handlers
    (SIGILL, SIGSEGV), installed when the first one starts.  A handler
    installed later takes those signals first and turns a sandboxed plugin's
    trap into the host's death: Ray's crash handler (off through its
    variable, which Ray reads when it is first imported: enter this before
    ``import ray`` too) and Python's ``faulthandler``, which ``ray.init``
    turns on when the host has not (turned off again here, which puts
    wasmtime's back).
    """
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    enabled = faulthandler.is_enabled()
    try:
        yield
    finally:
        if not enabled and faulthandler.is_enabled():
            faulthandler.disable()


def connect(settings: RaySettings, *, plugin: str) -> Any:
    """The ``ray`` module, connected (see the module docstring); :class:`PluginLoadError` if it cannot be."""
    with keep_signal_handlers():  # before Ray is first imported: it reads its variable then
        import ray

    with _lock:
        if ray.is_initialized():
            return ray
        kwargs: dict[str, Any] = {"log_to_driver": False, "namespace": settings.namespace}
        if settings.address is None:  # a local cluster of this process's own
            kwargs.update(address="local", include_dashboard=False)
        else:  # nodes elsewhere: pluginsdk and pluggy travel with this process's job
            kwargs.update(address=settings.address, runtime_env={"py_modules": sdk_code(), "excludes": EXCLUDES})
        try:
            with keep_signal_handlers():
                ray.init(**kwargs)
        except Exception as exc:
            where = settings.address or "a local cluster"
            raise PluginLoadError(
                f"cannot connect to Ray ({where}): {type(exc).__name__}: {exc}", plugin=plugin
            ) from None
    return ray


def sdk_code() -> list[str]:
    """pluginsdk's and pluggy's directories (what an actor and its guest need beyond Ray's own packages)."""
    import pluggy

    import pluginsdk

    return [os.path.dirname(pluginsdk.__file__), os.path.dirname(pluggy.__file__)]


def actor_class() -> Any:
    """:class:`~pluginsdk._ray.actor.GuestActor` as a Ray actor class (made once)."""
    global _actor_class
    if _actor_class is None:
        import ray

        from .actor import GuestActor

        _actor_class = ray.remote(GuestActor)
    return _actor_class


def package_zip(package_dir: str, module: str) -> bytes | None:
    """The plugin's package as zip bytes, to travel with its actors; ``None`` for a single-module plugin.

    Bytes the host made, sent through the object store once per backend;
    each actor unpacks them on its node (see :func:`pluginsdk._ray.actor.unpack`).
    """
    top = module.split(".")[0]
    if os.path.basename(package_dir) != top or not os.path.isdir(package_dir):
        return None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for root, dirs, files in os.walk(package_dir):
            dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", ".git"))
            for name in sorted(files):
                if not name.endswith(".pyc"):
                    path = os.path.join(root, name)
                    z.write(path, os.path.join(top, os.path.relpath(path, package_dir)))
    return buf.getvalue()


def runtime_env(*, environment: Sequence[str] | None, install_options: Sequence[str], installer: str) -> dict[str, Any]:
    """The actors' ``runtime_env``: a plugin's ``[environment]`` as Ray's ``pip`` (or ``uv``) field."""
    if environment is None:
        return {}
    if installer == "uv":
        return {"uv": {"packages": list(environment), "uv_pip_install_options": ["--no-cache", *install_options]}}
    options = ["--disable-pip-version-check", "--no-cache-dir", *install_options]
    return {"pip": {"packages": list(environment), "pip_install_options": options}}


def actor_options(
    settings: RaySettings, *, memory_mb: int | None, runtime_env: dict[str, Any], name: str
) -> dict[str, Any]:
    """``.options(...)`` for one actor of plugin ``name``: resources, ``runtime_env``, no restarts.

    Ray never restarts these actors itself (``max_restarts=0``): the pool
    replaces a dead worker, records the incident and fails its call.
    """
    options: dict[str, Any] = {
        "runtime_env": runtime_env,
        "max_restarts": 0,
        "max_task_retries": 0,
        "name": None,
        "namespace": settings.namespace,
    }
    if memory_mb:
        options["memory"] = memory_mb * 2**20
    if settings.num_cpus is not None:
        options["num_cpus"] = settings.num_cpus
    if settings.num_gpus is not None:
        options["num_gpus"] = settings.num_gpus
    if settings.resources:
        options["resources"] = dict(settings.resources)
    return options
