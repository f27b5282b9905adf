"""What the host keeps of each plugin: the public :class:`PluginInfo`, and its private mutable record."""

from __future__ import annotations

import _thread
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from . import _stats
    from .backends.base import Backend
    from .config import Incident
    from .discovery import Candidate

__all__ = ["Placeholder", "PluginInfo", "PluginRecord"]


class PluginInfo(NamedTuple):
    """What the host knows of one plugin.

    Attributes:
        name: The plugin's name (its entry point's name).
        dist: The distribution providing it.
        version: The distribution's version.
        isolation: The level it runs (or would run) at, after policy.
        requested_isolation: The level its manifest asks for.
        requires: Its manifest's spec requirement.
        hooks: The hooks it declares.
        status: ``available`` (found, not loaded yet), ``loaded``,
            ``disabled``, ``incompatible``, ``failed`` or ``unavailable``.
        reason: Why, for every status but ``available`` and ``loaded``.
        runtime: Where it runs once loaded (workers, interpreter), else ``""``.
        manifest_path: The manifest read, if one was found.
        value: The entry point's value.
        incidents: What went wrong while it was loaded and was recovered from
            (a worker crashed, timed out or hit a resource cap), oldest first;
            only the last 20 are kept.  Empty unless loaded.
        incident_count: How many incidents there were in all, including
            those no longer in ``incidents``.
    """

    name: str
    dist: str
    version: str
    isolation: str | None
    requested_isolation: str | None
    requires: str | None
    hooks: tuple[str, ...]
    status: str
    reason: str
    runtime: str
    manifest_path: str | None
    value: str
    incidents: tuple[Incident, ...] = ()
    incident_count: int = 0


class PluginRecord:
    """The host's mutable record of one plugin."""

    __slots__ = ("backend", "candidate", "isolation", "lock", "placeholder", "reason", "stats", "status")

    def __init__(self, candidate: Candidate, isolation: str | None, status: str, reason: str) -> None:
        self.candidate = candidate
        self.isolation = isolation
        self.status = status
        self.reason = reason
        self.backend: Backend | None = None
        self.placeholder: object | None = None
        self.lock = _thread.allocate_lock()
        self.stats: _stats.Recorder | None = None  # set on its first load, when metrics measure its level

    def info(self) -> PluginInfo:
        """What the host shows of this plugin now."""
        cand = self.candidate
        backend = self.backend
        return PluginInfo(
            name=cand.name,
            dist=cand.dist,
            version=cand.version,
            isolation=self.isolation,
            requested_isolation=cand.isolation,
            requires=cand.requires,
            hooks=cand.hooks,
            status=self.status,
            reason=self.reason,
            runtime=backend.describe() if backend is not None else "",
            manifest_path=cand.manifest_path,
            value=cand.value,
            incidents=backend.incidents if backend is not None else (),
            incident_count=backend.incident_count if backend is not None else 0,
        )


class Placeholder:
    """Stands in pluggy for a plugin until it is loaded (or for good, if remote)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<pluginsdk placeholder for {self.name!r}>"
