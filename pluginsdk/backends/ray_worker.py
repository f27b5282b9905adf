"""The Ray kind of worker: a Ray actor running the plugin's guest on a cluster node.

``executor = "ray"`` (see :class:`~pluginsdk.Policy`) keeps a plugin's
isolation level and its pool (:mod:`.pool`) and protocol client
(:mod:`.pooled`) as they are, and swaps the worker: each worker of the pool
is an actor (:class:`pluginsdk._ray.actor.GuestActor`) that runs the same
guest the host would run locally, a worker process for ``process`` and a
sandbox instance for ``wasm``.  ``workers`` is the number of actors, so
``map`` spreads over them.

What crosses Ray is bytes: each request frame goes to the actor's
``exchange`` method, which writes it to the guest and returns the guest's
next frame in a small envelope (:func:`pluginsdk._ray.actor.envelope`).  The
host checks the envelope, the frame's size and the message exactly as it
checks a local worker's, so nothing a plugin shapes is ever unpickled.

Deadlines and faults are the pool's, as for every kind: while the host
waits, :meth:`RayWorker.recv` polls its reply in short slices and ends
with ``EOFError`` once the watchdog has called :meth:`RayWorker.signal_kill`,
which kills the actor (``ray.kill``; the guest's worker process dies with its
actor, see :mod:`pluginsdk._ray.actor`).  An actor that dies, or whose guest
dies, is reported as :class:`~pluginsdk.PluginCrashed` and replaced by a new
actor; the incident is recorded as for a local worker.  Ray never restarts
these actors by itself.
"""

from __future__ import annotations

import logging
import struct
import sys
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

from .. import codec
from .._errors import CodecError, PluginError, PluginLoadError, PluginResourceError
from .._ray.settings import RaySettings
from .os_worker import _PKG_ROOT
from .process import ProcessBackend
from .wasm import WasmBackend
from .worker import Worker

__all__ = ["RayProcessBackend", "RayWasmBackend", "RayWorker"]

#: Seconds one wait for a reply lasts before the worker checks whether it was killed.
SLICE = 0.2
#: Seconds an actor gets to answer BYE or say how its guest ended.
ANSWER_GRACE = 6.0
#: Seconds ``kill`` waits for Ray to report a killed actor dead.
KILL_GRACE = 5.0
#: A new actor's start (placement, its runtime_env, its guest process) is due within this, unless the
#: plugin has an environment to install (then ``[policy.environments] timeout``).
MIN_SETUP_TIMEOUT = 60.0
#: Characters of Ray's own error kept in a message.
DETAIL_MAX = 2000
_LEN = struct.Struct(">I")
_FRAME, _EOF, _OVERSIZE, _UNDECODABLE = b"F", b"E", b"R", b"C"
_TAGS = frozenset((_FRAME, _EOF, _OVERSIZE, _UNDECODABLE))
_STREAMS = {ord("o"): ("stdout", logging.INFO), ord("e"): ("stderr", logging.WARNING)}


class RayWorker(Worker):
    """One actor serving the plugin, and the host's end of its channel (see the module docstring)."""

    def __init__(
        self,
        ray: Any,
        actor_class: Any,
        options: Mapping[str, Any],
        config: bytes,
        code: Any,
        hello: bytes,
        *,
        max_message: int,
        setup_timeout: float,
        plugin: str,
    ) -> None:
        super().__init__()
        self._ray = ray
        self._max_message = max_message
        self._log = logging.getLogger(f"pluginsdk.plugin.{plugin}")
        self._plugin = plugin
        self._killed = False
        self._dead: str | None = None  # why the actor died, as Ray says
        self._retire: str | None = None
        self._pending: deque[Any] = deque()  # replies owed, oldest first
        self.pid = id(self)  # for log messages shared with the other kinds
        self.actor = actor_class.options(**options).remote(config, code)
        # Placement, the runtime_env and the guest process start here, off the handshake's deadline.
        try:
            self.node = str(ray.get(self.actor.node.remote(), timeout=setup_timeout))
        except ray.exceptions.GetTimeoutError:
            self.kill()
            raise PluginLoadError(
                f"its Ray actor did not start within {setup_timeout:g}s (the cluster may lack the resources it"
                f" asks for: {_resources(options)})",
                plugin=plugin,
            ) from None
        except ray.exceptions.RayError as exc:
            self.kill()
            raise PluginLoadError(f"its Ray actor could not start: {_ray_error(exc)}", plugin=plugin) from None
        self._pending.append(self.actor.exchange.remote(hello))

    # -- channel ---------------------------------------------------------
    def send(self, msg: list[Any]) -> None:
        frame = codec.encode_frame(msg, self._max_message)  # raises before anything is sent
        if not self._killed:
            self._pending.append(self.actor.exchange.remote(frame))

    def recv(self) -> Any:
        ref = self._pending.popleft() if self._pending else self.actor.exchange.remote(b"")
        tag, body = self._open(self._wait(ref))
        if tag == _FRAME:
            if len(body) > self._max_message:
                raise PluginResourceError(f"message of {len(body)} bytes exceeds the {self._max_message}-byte limit")
            return codec.decode(body)
        if tag == _EOF:
            raise EOFError("the guest closed its channel")
        if tag == _OVERSIZE:
            raise PluginResourceError(bytes(body).decode("utf-8", "replace"))
        raise CodecError(bytes(body).decode("utf-8", "replace"))

    def _wait(self, ref: Any) -> Any:
        """The actor's reply to ``ref``; ``EOFError`` once killed or dead."""
        ray = self._ray
        while True:
            if self._killed:
                raise EOFError("killed")
            try:
                return ray.get(ref, timeout=SLICE)
            except ray.exceptions.GetTimeoutError:
                continue
            except ray.exceptions.RayError as exc:
                if not self._killed:
                    self._dead = f"its Ray actor died: {_ray_error(exc)}"
                raise EOFError("the actor died") from None

    def _open(self, data: Any) -> tuple[bytes, memoryview]:
        """``(tag, body)`` of an envelope; its output lines are logged, a retirement noted."""
        if type(data) is not bytes or len(data) < 5 or data[:1] not in _TAGS:
            raise CodecError("the Ray actor sent something that is no reply envelope")
        (size,) = _LEN.unpack_from(data, 1)
        end = 5 + size
        if end > len(data):
            raise CodecError("the Ray actor sent a truncated reply envelope")
        view = memoryview(data)
        if end < len(data):
            self._lines(bytes(view[end:]))
        return data[:1], view[5:end]

    def _lines(self, output: bytes) -> None:
        for line in output.split(b"\n"):
            if not line:
                continue
            text = line[1:].decode("utf-8", "replace")
            if line[0] == ord("r"):
                self._retire = text
                continue
            stream, level = _STREAMS.get(line[0], ("stderr", logging.WARNING))
            self._log.log(level, "%s", text, extra={"plugin_stream": stream})

    def retire_reason(self) -> str | None:
        reason, self._retire = self._retire, None
        return reason

    # -- lifecycle -------------------------------------------------------
    def death_detail(self) -> str:
        """How the guest ended, or its actor (asks the actor, briefly)."""
        if self._dead is not None:
            return self._dead
        try:
            _, body = self._open(self._ray.get(self.actor.detail.remote(), timeout=ANSWER_GRACE))
        except self._ray.exceptions.GetTimeoutError:
            return "its Ray actor did not say how the guest ended"
        except self._ray.exceptions.RayError as exc:
            return f"its Ray actor died: {_ray_error(exc)}"
        except CodecError as exc:
            return exc.message
        return bytes(body).decode("utf-8", "replace")

    def signal_kill(self) -> None:
        """Kill the actor (and with it the guest), from any thread; a :meth:`recv` under way ends with EOFError."""
        if self._killed:
            return
        self._killed = True
        try:
            self._ray.kill(self.actor, no_restart=True)
        except Exception:  # already gone, or Ray shut down: nothing is left to kill
            pass

    def kill(self) -> None:
        """Kill the actor and wait (up to :data:`KILL_GRACE`) until Ray reports it dead.

        ``ray.kill`` only sends the order: a call made right after it may
        still be served.  Waiting here means a closed host has no actor left.
        """
        self.signal_kill()
        self._pending.clear()
        ray = self._ray
        deadline = time.monotonic() + KILL_GRACE
        while time.monotonic() < deadline:
            try:
                ray.get(self.actor.node.remote(), timeout=max(0.1, deadline - time.monotonic()))
            except ray.exceptions.RayActorError:
                return  # dead
            except Exception:  # timed out, or Ray shut down: nothing more to wait for
                return
            time.sleep(0.02)

    def stop(self) -> None:
        """Ask the guest to exit (BYE), then end the actor."""
        if not self._killed and self._dead is None:
            try:
                self._ray.get(self.actor.bye.remote(), timeout=ANSWER_GRACE)
            except Exception:  # dead, or too slow: the kill below settles it
                pass
        self.kill()


def _ray_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 3] + "..."


def _resources(options: Mapping[str, Any]) -> str:
    keys = ("num_cpus", "num_gpus", "memory", "resources")
    return ", ".join(f"{k}={options[k]!r}" for k in keys if options.get(k) is not None) or "nothing special"


class _OnRay:
    """What the two Ray backends share: the connection, the actors' options, starting a worker."""

    isolation: ClassVar[str]
    _ray: Any
    _actor_options: dict[str, Any]
    _config: bytes
    _code: Any  # an ObjectRef of the plugin's package as zip bytes, or None
    _setup_timeout: float

    @classmethod
    def unavailable_reason(cls, options: Mapping[str, Any] | None = None) -> str | None:
        from .._ray.cluster import unavailable_reason

        return unavailable_reason()

    def _connect(self, config: dict[str, Any], *, environment: tuple[str, ...] | None, ship: bool) -> None:
        """Connect; build the actors' options, their config and (``ship``) the plugin's code to send them."""
        from .._ray import cluster

        backend: Any = self
        target, options, limits = backend.target, backend.options, backend.limits
        settings = options.ray if isinstance(options.ray, RaySettings) else RaySettings.checked(options.ray)
        self._ray = cluster.connect(settings, plugin=target.name)
        settings = settings.for_plugin(target.name)  # what this plugin's actors ask for (the host's word alone)
        envs = options.environments
        code = cluster.package_zip(target.package_dir, target.module) if ship else None
        self._code = None if code is None else self._ray.put(code)  # once: every actor gets the same object
        env = cluster.runtime_env(
            environment=environment,
            install_options=envs.installer_args() if envs is not None else [],
            installer=settings.installer,
        )
        self._actor_options = cluster.actor_options(
            settings, memory_mb=limits.memory_mb, runtime_env=env, name=target.name
        )
        build = float(envs.timeout) if environment is not None and envs is not None else 0.0
        self._setup_timeout = max(build, MIN_SETUP_TIMEOUT, float(limits.timeout or 0))
        self._config = codec.encode(
            {
                **config,
                "plugin": target.name,
                "max_message": backend.max_message,
                "memory_mb": int(limits.memory_mb or 0),
                "open_files": int(limits.open_files or 0),
            }
        )

    def _ray_worker(self, hello: dict[str, Any]) -> Worker:
        from .._ray.cluster import actor_class
        from ..guest import protocol as P

        backend: Any = self
        try:
            return RayWorker(
                self._ray,
                actor_class(),
                self._actor_options,
                self._config,
                self._code,
                codec.encode_frame([P.HELLO, hello], backend.max_message),
                max_message=backend.max_message,
                setup_timeout=self._setup_timeout,
                plugin=backend.target.name,
            )
        except PluginError:
            raise
        except Exception as exc:  # Ray refused the actor's options, say
            raise PluginLoadError(
                f"cannot start a Ray actor: {type(exc).__name__}: {exc}", plugin=backend.target.name
            ) from exc


class RayProcessBackend(_OnRay, ProcessBackend):
    """Isolation ``process`` with each worker a Ray actor (see the module docstring)."""

    def _prepare(self) -> None:
        o = self.options
        host = [self.target.path_entry, *(o.sys_path or sys.path), _PKG_ROOT]
        private = o.environment is not None
        self._connect({"kind": "process", "path": host, "private": private}, environment=o.environment, ship=True)

    def _new_worker(self) -> Worker:
        return self._ray_worker(self.hello(()))  # the actor puts its node's path in (see pluginsdk._ray.actor)

    def describe(self) -> str:
        return f"process on Ray ({self.pool.occupancy()} actors)"


class RayWasmBackend(_OnRay, WasmBackend):
    """Isolation ``wasm`` with each sandbox instance in a Ray actor (see the module docstring).

    The mounts are the host's directories (the plugin, its staged dependency
    closure, the guest libraries): the actors' nodes must see them at the
    same paths (this machine, or a shared file system).
    """

    def _prepare(self) -> None:
        super()._prepare()  # the sandbox and the mounts, as for a local sandbox
        m = self._mounts
        mounts = {
            "dirs": [list(d) for d in m.dirs],
            "packages": dict(m.packages),
            "modules": dict(m.modules),
            "sys_path": list(m.sys_path),
        }
        from .._wasm.instance import DEFAULT_SPIN

        spin = DEFAULT_SPIN if self.options.wasm_spin is None else self.options.wasm_spin
        config = {"kind": "wasm", "interpreter": self.options.wasm_interpreter, "mounts": mounts, "spin": spin}
        self._connect(config, environment=None, ship=False)  # the sandbox mounts the host's directories

    @classmethod
    def unavailable_reason(cls, options: Mapping[str, Any] | None = None) -> str | None:
        return _OnRay.unavailable_reason(options) or WasmBackend.unavailable_reason(options)

    def _new_worker(self) -> Worker:
        return self._ray_worker(self.hello(self._guest_path))

    def describe(self) -> str:
        return f"wasm on Ray ({self.pool.occupancy()} actors)"
