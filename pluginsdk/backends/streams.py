"""Streamed results: a worker's chunks handed out item by item, with back-pressure and cancellation.

A mixin of :class:`~.pooled.PooledBackend` (the protocol client), kept apart
because a stream is the one request that holds its worker *between* the
caller's reads: the worker is asked for the next chunk (MORE) while the
current one is consumed, is told to stop (CANCEL) when the consumer leaves
early, and is reclaimed if the consumer stops reading for ``timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from .._errors import PluginTimeout
from ..guest import protocol as P
from .replies import Replies

if TYPE_CHECKING:
    from .base import PluginTarget
    from .pool import Pool
    from .worker import Worker

__all__ = ["Streams"]

_monotonic = time.monotonic
_CHUNK, _END = P.CHUNK, P.END


class Streams:
    """The streaming half of the protocol client (see the module docstring)."""

    # Provided by PooledBackend.
    _timeout: float
    pool: Pool
    replies: Replies
    target: PluginTarget

    if TYPE_CHECKING:

        def _done(self, w: Worker, hook: str, *, retire: bool = False) -> None: ...
        def _inside(self, hook: str, reply: list[Any], items: int = 1) -> None: ...
        def _reply(self, w: Worker, hook: str, rid: int, *, items: int | None = None, stream: bool = False) -> Any: ...

    def _stream(
        self,
        worker: Worker,
        hook: str,
        rid: int,
        reply: list[Any],
        item: Callable[[Any], Any] | None,
        timed: bool = False,
    ) -> Generator[Any, None, None]:
        """Items of a streamed result as they arrive; holds ``w`` until the stream ends.

        Its first ``next()`` yields a placeholder (see :meth:`call`), so that
        a stream dropped unread still gives its worker back.
        """
        owed = reply[0] == _CHUNK  # the worker waits for MORE or CANCEL
        more_sent = False  # the worker is producing the next chunk
        timeout = self._timeout
        w: Worker | None = worker  # None once given back
        try:
            worker.deadline, worker.held = _monotonic() + timeout, True  # read within the deadline, or reclaimed
            yield None
            self._resumed(worker, hook)
            while w is not None:
                kind = reply[0]
                if kind == P.ERR:
                    self._done(w, hook, retire=Replies.retires(reply))
                    w = None
                    raise self.replies.error(hook, reply)
                if kind == _CHUNK:
                    # Ask for the next chunk now, so the worker fills it while we hand these out.
                    try:
                        w.send([P.MORE, rid])
                    except BrokenPipeError:
                        pass  # the worker died: reading its next reply reports the crash
                    owed, more_sent = False, True
                for value in reply[2] if item is None else map(item, reply[2]):
                    # The consumer holds the worker: it must read on within the deadline.
                    w.deadline, w.held = _monotonic() + timeout, True
                    yield value
                    self._resumed(w, hook)
                w.deadline = 0.0
                if kind == _END:
                    self._done(w, hook)
                    if timed:
                        self._inside(hook, reply)
                    w = None
                    return
                reply = self._reply(w, hook, rid, stream=True)
                owed, more_sent = reply[0] == _CHUNK, False
        except GeneratorExit:
            if w is not None:
                self._cancel_stream(w, hook, rid, owed, more_sent)
            raise
        except BaseException:
            if w is not None:
                self.pool.discard(w)
            raise

    def _resumed(self, w: Worker, hook: str) -> None:
        """The consumer came back for the next item: the worker is still its own, unless reclaimed."""
        w.held = False
        if w.timed_out:
            raise PluginTimeout(
                f"hook {hook!r}: the stream was not read for {self._timeout:g}s; its worker was reclaimed",
                plugin=self.target.name,
                timeout=self._timeout,
            )

    def _cancel_stream(self, w: Worker, hook: str, rid: int, owed: bool, more_sent: bool) -> None:
        """The consumer stopped early: tell the worker, or replace it if it won't listen."""
        w.deadline, w.held = 0.0, False
        try:
            if w.timed_out:
                raise EOFError("reclaimed")
            if more_sent:  # let the chunk in production arrive first
                owed = self._reply(w, hook, rid, stream=True)[0] == _CHUNK
            if owed:
                w.send([P.CANCEL, rid])
                if self._reply(w, hook, rid, stream=True)[0] != _END:
                    raise self.replies.violation(hook, "it did not end the stream when asked to")
            self._done(w, hook)
        except BaseException:
            self.pool.discard(w)
