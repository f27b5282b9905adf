"""The worker interface: what the pool needs of one guest serving one plugin.

Kinds: an OS process (:class:`pluginsdk.backends.os_worker.ProcessWorker`)
and a sandbox instance (:class:`pluginsdk._wasm.instance.Instance`).  The
pool (:mod:`.pool`) hands workers out; the protocol client
(:mod:`.pooled`) talks to them; only this interface sits between.

The contract:

* A worker is created by its kind's factory with HELLO already sent; the
  pool reads READY itself, so a new worker is not :attr:`ready` until then.
* :meth:`send` encodes one request (each kind owns its encoding) and writes
  it; an encoding failure raises before anything is written (the worker is
  still sound).  A dead guest may raise ``BrokenPipeError`` or pass
  silently: the next :meth:`recv` reports it.
* :meth:`recv` returns the guest's next message, decoded but *unchecked*
  (the client checks it against :mod:`pluginsdk.guest.protocol`).  It
  raises ``EOFError`` once the guest is gone or killed,
  :class:`~pluginsdk.PluginResourceError` for a frame over the size limit
  and :class:`~pluginsdk.CodecError` for bytes that are no message.  It
  blocks without a deadline of its own: while the host waits,
  :attr:`deadline` holds the monotonic time by which the wait must end, and
  the pool's watchdog sets :attr:`timed_out` and calls :meth:`signal_kill`
  when it passes, which ends the wait with ``EOFError``.  This is the one
  deadline mechanism for every kind.
* Used by one thread at a time (the pool hands it out exclusively), apart
  from the watchdog: :meth:`signal_kill` and :meth:`exited` must be safe from
  another thread.
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Iterator
from typing import Any

from .._errors import PluginError, PluginLoadError

__all__ = ["Worker", "start_errors"]


class Worker(abc.ABC):
    """One guest serving the plugin over a frame channel (see the module docstring)."""

    pid: int  # for log messages

    def __init__(self) -> None:
        self.deadline = 0.0  # armed (monotonic time) while the host waits on this worker
        self.timed_out = False
        self.ready = False  # READY was read
        self.calls = 0
        self.rid = 0  # the last request id sent (they cycle through 1 to 127)
        self.held = False  # a stream's consumer holds it between two items
        self.last_used = time.monotonic()

    @abc.abstractmethod
    def send(self, msg: list[Any]) -> None:
        """Encode and send one request (see the module docstring)."""

    @abc.abstractmethod
    def recv(self) -> Any:
        """The guest's next message (see the module docstring)."""

    def exited(self) -> bool:
        """Whether the guest has ended, for a guest whose channel may stay open after it ends.

        The watchdog asks this of busy workers and kills those that ended.
        """
        return False

    def channel_fd(self) -> int | None:
        """The descriptor the guest's replies arrive on, for an event loop to watch; ``None``: none to watch.

        Its owner (the one thread holding the worker) may then read the replies
        from it itself, frame by frame, instead of :meth:`recv`.
        """
        return None

    def surplus(self) -> bool:
        """Whether bytes beyond the last reply are already buffered (the guest sent more than asked)."""
        return False

    def retire_reason(self) -> str | None:
        """After a call: why this worker must be replaced although it answered, or ``None``."""
        return None

    @abc.abstractmethod
    def death_detail(self) -> str:
        """How the guest ended, for error messages (may wait briefly for it to end)."""

    @abc.abstractmethod
    def signal_kill(self) -> None:
        """Stop the guest now, from any thread; a :meth:`recv` in progress then raises ``EOFError``."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop the guest and release everything it holds.  Idempotent."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Ask the guest to exit (BYE), killing it if it does not."""


@contextlib.contextmanager
def start_errors(plugin: str, what: str) -> Iterator[None]:
    """Around a kind's factory: an unexpected failure to start ``what`` becomes :class:`~pluginsdk.PluginLoadError`."""
    try:
        yield
    except PluginError:
        raise
    except Exception as exc:
        raise PluginLoadError(f"cannot start {what}: {type(exc).__name__}: {exc}", plugin=plugin) from exc
