"""The one interface every isolation backend implements.

A backend runs one plugin: ``start`` loads it (imports it in-process, or
starts workers / sandbox instances that import it), ``call`` and
``call_batch`` run hooks, ``close`` releases everything.  The host builds one
backend per plugin, lazily, on the first call of one of its hooks.
"""

from __future__ import annotations

import _thread  # not threading: a host that never starts a backend need not import it (start-up time)
import abc
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

# The configuration vocabulary lives in ..config; re-exported for code that imports it from here.
from ..config import DEFAULT_LIMITS, ISOLATION_LEVELS, Incident, Limits

if TYPE_CHECKING:
    import logging

    from .._stats import Recorder
    from ..config import BackendOptions
    from ..spec import HookSpec

__all__ = ["DEFAULT_LIMITS", "ISOLATION_LEVELS", "Backend", "Incident", "Limits", "PluginTarget"]


class PluginTarget(NamedTuple):
    """Everything a backend needs to load and run one plugin.

    Attributes:
        name: The plugin's name (its entry point's name).
        dist: The distribution that provides it.
        module: The module named by the entry point.
        attr: The object inside ``module`` the entry point names, if any
            (``pkg.mod:obj``); its attributes are the hook implementations.
        package_dir: Directory of the plugin's top-level package.
        path_entry: The ``sys.path`` entry the package was found on.
        hooks: The hooks the plugin declares, each with the spec's argument
            names in call order (the order of ``args`` in :meth:`Backend.call`).
        limits: Resolved limits (every field set).
        spec: The host's spec.
        options: The host's settings for the backend (a :class:`~pluginsdk.config.BackendOptions`;
            a plain mapping of the same keys is accepted and checked).
    """

    name: str
    dist: str
    module: str
    attr: str | None
    package_dir: str
    path_entry: str
    hooks: Mapping[str, tuple[str, ...]]
    limits: Limits
    spec: HookSpec
    options: BackendOptions | Mapping[str, Any] = {}  # noqa: RUF012 - a named tuple field: never mutated


#: Incidents a backend remembers; older ones are dropped (their count is kept).
INCIDENTS_KEPT = 20


class Backend(abc.ABC):
    """Runs one plugin at one isolation level."""

    #: The isolation level this backend provides.
    isolation: ClassVar[str]
    #: Where the plugin's own reported times go (the host sets it when it measures the plugin).
    stats: Recorder | None = None

    def __init__(self, target: PluginTarget, *, log: logging.Logger) -> None:
        self.target = target
        self.log = log
        self._incidents: deque[Incident] = deque(maxlen=INCIDENTS_KEPT)
        self.incident_count = 0
        self._incident_lock = _thread.allocate_lock()

    @property
    def incidents(self) -> tuple[Incident, ...]:
        """The most recent incidents, oldest first (at most :data:`INCIDENTS_KEPT`)."""
        return tuple(self._incidents)

    def record_incident(self, kind: str, detail: str, hook: str | None = None) -> None:
        """Remember that the plugin misbehaved and was recovered from (any thread)."""
        with self._incident_lock:
            self._incidents.append(Incident(kind, hook, detail, time.time()))
            self.incident_count += 1

    @classmethod
    def unavailable_reason(cls, options: Mapping[str, Any] | None = None) -> str | None:
        """Why this backend cannot run here (a missing extra, say), or ``None``.

        ``options`` are the host's backend options (as in :attr:`PluginTarget.options`).
        """
        return None

    @abc.abstractmethod
    def start(self) -> None:
        """Load the plugin; raise :class:`~pluginsdk.PluginLoadError` if it cannot be.

        Idempotent: a second call on a started backend does nothing.
        """

    @abc.abstractmethod
    def call(self, hook: str, args: tuple[Any, ...], timed: bool = False) -> Any:
        """Call ``hook`` with positional ``args`` (spec order); return its result.

        A result that is an iterator is streamed: the returned object is an
        iterator that yields the plugin's items as they arrive.  ``timed``:
        the host's metrics want the plugin's own time for this request; a
        backend whose plugin reports it hands it to :attr:`stats` (``Recorder.inside``).
        """

    def call_batch(self, hook: str, items: Sequence[tuple[Any, ...]], timed: bool = False) -> list[Any]:
        """Call ``hook`` once per item, in as few crossings as the backend can (``timed``: as for :meth:`call`)."""
        return [self.call(hook, args) for args in items]

    @abc.abstractmethod
    def close(self) -> None:
        """Stop everything this backend started.  Idempotent."""

    def describe(self) -> str:
        """A short human description of where the plugin runs, for status output."""
        return self.isolation

    @property
    def impl_options(self) -> Mapping[str, Mapping[str, bool]]:
        """Each implementation's ordering options (``tryfirst``/``trylast``), once started.

        Isolated plugins are registered before their code is seen; the host
        uses this to put them where their code asks.
        """
        return {}

    @property
    def failed_reason(self) -> str | None:
        """Set once the backend gave up on the plugin (e.g. it crashes on every start)."""
        return None


#: Where each backend lives; imported only when a plugin needs it.
BACKENDS: dict[str, str] = {
    "inprocess": "pluginsdk.backends.inprocess:InProcessBackend",
    "process": "pluginsdk.backends.process:ProcessBackend",
    "wasm": "pluginsdk.backends.wasm:WasmBackend",
}
