"""Turning what comes back from a worker into the SDK's errors (host side).

Three sources: an ``ERR`` frame (the plugin raised, a value could not
cross, a cap was hit), a channel that failed (the worker died, timed out, or
sent bytes that are no message), and a frame that broke the protocol.  Each
becomes one :class:`~pluginsdk.PluginError` naming the plugin and the hook;
what the SDK recovers from (the worker is replaced) is also recorded as an
incident.  A hook that raised, or a value that cannot cross, is the caller's
to handle and leaves the worker sound: not an incident.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .. import codec
from .._errors import (
    CodecError,
    PluginCrashed,
    PluginError,
    PluginHookError,
    PluginProtocolError,
    PluginResourceError,
    PluginTimeout,
)
from .._values import split_location
from ..config import Limits
from ..guest import protocol as P
from .base import PluginTarget
from .worker import Worker

__all__ = ["Replies"]


class Replies:
    """The error translation for one plugin (its name, limits and incident log)."""

    def __init__(
        self,
        target: PluginTarget,
        limits: Limits,
        record_incident: Callable[[str, str, str | None], None],
        closed: Callable[[], bool],
    ) -> None:
        self.plugin, self._hooks = target.name, target.hooks
        self.timeout, self.memory_mb = float(limits.timeout or 0), int(limits.memory_mb or 0)
        self._record, self._closed = record_incident, closed

    def error(self, hook: str, reply: list[Any], offset: int = 0) -> PluginError:
        """The SDK exception for a checked ``ERR`` frame (``offset``: the share's start in a batch)."""
        _, _, kind, exc_type, message, tb, index, argument = reply
        if index is not None:
            index += offset
        name = self.plugin
        where = f" (batch item {index})" if index is not None else ""
        if kind == P.HOOK:
            return PluginHookError(
                plugin=name, hook=hook, exc_type=exc_type, exc_message=message, traceback=tb, index=index
            )
        if kind == P.CODEC:  # the guest appends the path inside the value to the argument's name
            argument, path = split_location(argument)
            return CodecError(message, plugin=name, hook=hook, argument=argument, path=path, index=index)
        if kind == P.RESOURCE:
            if exc_type == "MemoryError":
                message = f"out of memory (the worker's cap is {self.memory_mb} MiB) {message}"
            err = PluginResourceError(f"hook {hook!r}{where}: {exc_type}: {message.strip()}", plugin=name, index=index)
            self._record("resource", err.message, hook)
            return err
        return PluginError(f"hook {hook!r}{where}: {exc_type}: {message}", plugin=name)

    @staticmethod
    def retires(reply: list[Any]) -> bool:
        """Whether the worker that sent this checked ``ERR`` frame must be replaced (it ran out of memory)."""
        return bool(reply[2] == P.RESOURCE and reply[3] == "MemoryError")

    def channel(self, w: Worker, hook: str, exc: BaseException) -> BaseException:
        """The SDK error for a failure to talk to ``w`` (anything unforeseen is returned as is).

        ``w`` is discarded after this, so a failure that is the plugin's doing is recorded.
        """
        name = self.plugin
        error: PluginError
        if isinstance(exc, (EOFError, BrokenPipeError)):
            if self._closed():
                return PluginError(f"backend closed during hook {hook!r}", plugin=name)
            if w.timed_out:
                kind = "timeout"
                error = PluginTimeout(
                    f"hook {hook!r} timed out after {self.timeout:g}s; worker replaced",
                    plugin=name,
                    timeout=self.timeout,
                )
            else:
                detail = w.death_detail()
                kind = "crashed"
                error = PluginCrashed(
                    f"worker crashed during hook {hook!r} ({detail}); worker replaced", plugin=name, detail=detail
                )
        elif isinstance(exc, PluginResourceError):
            kind, error = "resource", PluginResourceError(f"hook {hook!r}: reply: {exc.message}", plugin=name)
        elif isinstance(exc, CodecError):  # bytes that are no message: the channel is out of step
            kind, error = "replaced", CodecError(exc.message, plugin=name, hook=hook, argument="return value")
        elif isinstance(exc, P.ProtocolViolation):
            return self.violation(hook, str(exc))
        else:
            return exc
        self._record(kind, error.message, hook)
        return error

    def violation(self, hook: str | None, detail: str) -> PluginProtocolError:
        """The error for a worker that broke the protocol (it is replaced), recorded as an incident."""
        what = f"hook {hook!r}: " if hook else ""
        error = PluginProtocolError(
            f"{what}the worker broke the protocol ({detail}); worker replaced",
            plugin=self.plugin,
            hook=hook,
            detail=detail,
        )
        self._record("protocol", error.message, hook)
        return error

    def encode_error(self, hook: str, exc: Exception, arg_sets: Sequence[Sequence[Any]]) -> PluginError:
        """The error for a request that could not be encoded, naming the argument to blame."""
        if isinstance(exc, PluginResourceError):
            return PluginResourceError(f"hook {hook!r}: arguments: {exc.message}", plugin=self.plugin)
        names = self._hooks[hook]
        try:
            for args in arg_sets:
                codec.encode_args(args, names, hook)
        except CodecError as bad:
            bad.plugin = self.plugin
            return bad
        return CodecError(codec.describe_error(exc), plugin=self.plugin, hook=hook)
