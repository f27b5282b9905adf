"""The pooled backend: the host half of the protocol, over a pool of workers of one kind.

``process`` and ``wasm`` are two factories of this one backend
(:class:`~pluginsdk.backends.process.ProcessBackend`,
:class:`~pluginsdk.backends.wasm.WasmBackend`): each supplies its kind of
:class:`~.worker.Worker`; the pool (:mod:`.pool`) hands workers out; this
class calls, batches, streams and cancels, checks every frame that comes
back against :mod:`pluginsdk.guest.protocol`, and turns failures into the
SDK's errors (:mod:`.replies`).

Requests carry an id and replies must echo it, so a worker that answers
twice, or writes to its channel, can never hand one caller's result to
another: any frame that is not the expected reply is a protocol violation,
and the worker is replaced and the incident recorded.

Deadlines: a reply, or the next chunk of a stream, is due within ``timeout``
of the request (the watchdog kills a worker that overruns); a stream whose
consumer stops reading holds its worker for at most ``timeout`` between two
items, then the worker is reclaimed and the next read raises
:class:`~pluginsdk.PluginTimeout`.  Waiting for a free worker: see :mod:`.pool`.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .. import codec
from .._errors import PluginError, PluginLoadError
from ..config import DEFAULT_LIMITS, BackendOptions, Limits
from ..guest import protocol as P
from . import pool as _pool
from .base import Backend, PluginTarget
from .coalesce import Coalescer
from .pool import Pool, StartFailed
from .replies import Replies
from .streams import Streams
from .worker import Worker

if TYPE_CHECKING:
    import asyncio

__all__ = ["PooledBackend"]

_monotonic = time.monotonic
_CALL, _BATCH, _OK, _CHUNK, _END = P.CALL, P.BATCH, P.OK, P.CHUNK, P.END
_check_reply = P.check_reply


class _HookInfo:
    """Per-hook result converters (``None``: values pass as they are)."""

    __slots__ = ("convert", "item", "plain", "stream")

    def __init__(
        self,
        convert: Callable[[Any], Any] | None,
        item: Callable[[Any], Any] | None,
        plain: frozenset[type] | None,
        stream: bool,
    ) -> None:
        self.convert = convert
        self.item = item
        # Result types that pass unconverted; None always does (pluggy drops it).
        self.plain = (plain or frozenset()) | {type(None)}
        self.stream = stream


class PooledBackend(Streams, Backend):
    """Runs a plugin in a pool of workers of one kind (see the module docstring)."""

    isolation: ClassVar[str]

    def __init__(self, target: PluginTarget, *, log: logging.Logger) -> None:
        super().__init__(target, log=log)
        # Every default applied here, in one place; a target built by hand is checked as a policy is.
        limits = Limits.checked(target.limits.merged(DEFAULT_LIMITS), where=f"plugin {target.name!r}: limits")
        assert limits.timeout is not None and limits.max_message_mb is not None and limits.workers is not None
        self._timeout = float(limits.timeout)
        self._max_message = int(limits.max_message_mb * 2**20)
        # The most a guest may say it spent on one request (its deadline, and a second for the watchdog's tick).
        self._inside_limit = int((self._timeout + 1.0) * 1e9)
        self.limits = limits
        options = target.options
        self.options = options if isinstance(options, BackendOptions) else BackendOptions.from_mapping(options)
        self.replies = Replies(target, limits, self.record_incident, lambda: self.pool.closed)
        self.pool = Pool(
            name=target.name,
            log=log,
            limits=limits,
            spawn=self._new_worker,
            handshake=self._handshake,
            record_incident=lambda kind, detail: self.record_incident(kind, detail),
        )
        # Calls finding every worker busy queue and cross together (see .coalesce); a host may opt out.
        self._coalescer = Coalescer(self)
        self._coalesce = self.options.coalesce
        self._queued = self._coalescer.pending
        self._lanes = self._coalescer.lanes  # event loops whose awaited calls may hold workers (see .loop_lane)
        self._start_lock = threading.Lock()
        self._started = False
        self._hooks: dict[str, _HookInfo] = {}
        self._impl_options: dict[str, dict[str, bool]] = {}
        self.streams = tuple(h for h in target.hooks if _may_stream(target.spec.types(h)[1]))

    # -- what a kind supplies ----------------------------------------------------
    @abc.abstractmethod
    def _new_worker(self) -> Worker:
        """Start one worker with HELLO sent; raise :class:`PluginError` if it cannot start."""

    def _prepare(self) -> None:
        """One-off set-up before the first worker starts (a kind may compile or stage here)."""

    def hello(self, path: Sequence[str]) -> dict[str, Any]:
        """HELLO's config for this plugin, with ``path`` for the guest's ``sys.path``."""
        t = self.target
        return P.hello(
            module=t.module, attr=t.attr, hooks=t.hooks, path=path, max_message=self._max_message, streams=self.streams
        )

    # -- Backend API -----------------------------------------------------------
    @property
    def failed_reason(self) -> str | None:
        return self.pool.failed

    @property
    def started(self) -> bool:
        return self._started

    @property
    def call_timeout(self) -> float:
        """Seconds a call may take, from its request (or the reply before it) to its reply."""
        return self._timeout

    @property
    def max_message(self) -> int:
        """The largest frame either side accepts, in bytes."""
        return self._max_message

    @property
    def impl_options(self) -> dict[str, dict[str, bool]]:
        """Each implementation's ``tryfirst``/``trylast``, as the worker reported (after start)."""
        return dict(self._impl_options)

    def describe(self) -> str:
        return f"{self.isolation} ({self.pool.occupancy()} workers)"

    def start(self) -> None:
        """Start one worker and wait for its READY; more start as calls need them (see ``prewarm``)."""
        with self._start_lock:
            if self._started:
                return
            self.pool.check_usable()
            self._prepare()
            pool = self.pool
            pool.start_watchdog()  # first: it also enforces the handshake deadline
            # ``prewarm`` (the host's option, never a manifest's): the whole pool now, started in parallel.
            count = pool.size if self.options.prewarm else 1
            workers = [w for w in (pool.try_take() for _ in range(count)) if w is not None]
            ready: list[Worker] = []
            try:
                for w in workers or [pool.take()]:
                    ready.append(w if w.ready or pool.ensure_ready(w) else pool.take())
            finally:
                for w in ready:
                    pool.release(w, used=False)
            self._started = True

    def close(self) -> None:
        self._coalescer.close()
        self.pool.close()
        self._coalescer.join()

    # -- the handshake (the pool calls it for each new worker) -------------------
    def _handshake(self, w: Worker) -> None:
        w.deadline = _monotonic() + max(self._timeout, _pool.MIN_START_TIMEOUT)
        try:
            msg = w.recv()
        except EOFError:
            w.deadline = 0.0
            if w.timed_out:
                raise StartFailed("timeout", "did not start in time") from None
            raise StartFailed("crashed", w.death_detail()) from None
        except PluginError as exc:  # bytes that are no message, or too many of them
            w.deadline = 0.0
            raise StartFailed("protocol", f"sent something that is no READY: {exc.message}") from None
        w.deadline = 0.0
        try:
            if P.is_load_error(msg):
                _, _, _, exc_type, message, tb, _, _ = P.check_error(msg, P.HANDSHAKE_ID)
                raise PluginLoadError(
                    f"cannot load plugin: {exc_type}: {message}", plugin=self.target.name, traceback=tb
                )
            self._impl_options = P.check_ready(msg, list(self.target.hooks))
        except P.ProtocolViolation as exc:
            self.replies.violation(None, str(exc))
            raise StartFailed("protocol", str(exc)) from None

    # -- calls -----------------------------------------------------------------
    def _hook_info(self, hook: str) -> _HookInfo:
        """How to convert ``hook``'s results (built once per hook)."""
        if hook not in self.target.hooks:
            raise PluginError(f"does not implement hook {hook!r}", plugin=self.target.name)
        tp = self.target.spec.types(hook)[1]
        if hook not in self.streams:
            info = _HookInfo(codec.converter(tp, hook=hook), None, codec.plain_types(tp), False)
        else:  # items stream; a plain list answer is converted item by item
            item_tp = codec.item_type(tp)
            item = None if item_tp is Any else codec.converter(item_tp, hook=hook)
            info = _HookInfo(None if item is None else _list_of(item), item, None, True)
        self._hooks[hook] = info
        return info

    def call(self, hook: str, args: tuple[Any, ...], timed: bool = False) -> Any:
        if not self._started:
            self.start()
        info = self._hooks.get(hook) or self._hook_info(hook)
        pool = self.pool
        # Behind calls already queued, or with every worker busy, a call queues (see .coalesce).
        w = None if self._queued else pool.take_idle()
        if w is None and self._lanes and self._coalescer.free_this_loop():  # on a loop whose lane held workers
            w = None if self._queued else pool.take_idle()
        if w is None or not w.ready:
            if w is not None:  # a replacement whose handshake is unfinished
                if not pool.ensure_ready(w):
                    w = pool.take()
            elif self._coalesce and not info.stream and not pool.can_grow():
                pool.check_usable()
                return self._coalescer.call(hook, args, info)
            else:
                w = pool.take()
        rid = w.rid = w.rid % 127 + 1  # one byte on the wire (see guest.protocol)
        try:
            w.send([_CALL, rid, hook, args, 1] if timed else [_CALL, rid, hook, args])  # 1: "your time too"
        except BrokenPipeError:
            pass  # the worker died: reading its reply reports it
        except Exception as exc:  # nothing was written: the worker is sound
            pool.release(w, used=False)
            raise self.replies.encode_error(hook, exc, [args]) from None
        w.deadline = _monotonic() + self._timeout
        try:
            reply = w.recv()
        except BaseException as exc:
            w.deadline = 0.0
            error = self.replies.channel(w, hook, exc)  # before the kill, so the detail says how it died
            pool.discard(w)
            raise error from None
        w.deadline = 0.0
        # The common reply, checked inline: OK, this request's id, one value (and if timed, the guest's time).
        if (
            type(reply) is list
            and (len(reply) == 3 or (timed and len(reply) == 4 and type(reply[3]) is int))
            and reply[0] == _OK
            and reply[1] == rid
            and type(reply[1]) is int
        ):
            if self._queued and not w.surplus() and self._coalescer.serve_with(w):
                pass  # calls queued meanwhile went on this worker, which is given back
            elif not (pool.plain_release and not w.surplus() and pool.release_fast(w)):
                self._done(w, hook)
            if timed and len(reply) == 4 and self.stats is not None and 0 <= reply[3] <= self._inside_limit:
                self.stats.inside(hook, reply[3])
            value = reply[2]
            return value if info.convert is None or type(value) in info.plain else info.convert(value)
        try:
            reply = _check_reply(reply, rid, stream=info.stream)
        except P.ProtocolViolation as exc:
            pool.discard(w)
            raise self.replies.violation(hook, str(exc)) from None
        kind = reply[0]
        if kind == _OK:
            self._done(w, hook)
            if timed:  # a time the host did not ask for is ignored
                self._inside(hook, reply)
            value = reply[2]
            return value if info.convert is None or type(value) in info.plain else info.convert(value)
        if kind in (_CHUNK, _END):
            stream = self._stream(w, hook, rid, reply, info.item, timed)
            next(stream)  # primed: closing or dropping it now always reaches its cleanup
            return stream
        self._done(w, hook, retire=Replies.retires(reply))
        raise self.replies.error(hook, reply)

    def submit(self, hook: str, args: tuple[Any, ...], future: asyncio.Future[Any]) -> None:
        """An async call: queued (see :mod:`.coalesce`); ``future`` gets its outcome.

        The backend must be started, and ``hook`` must not stream (see :attr:`streams`).
        """
        info = self._hooks.get(hook) or self._hook_info(hook)
        assert not info.stream, f"hook {hook!r} streams: call it on a thread"
        self.pool.check_usable()
        self._coalescer.submit(hook, args, info, future)

    def async_entry(self, hook: str) -> tuple[Coalescer, _HookInfo] | None:
        """For ``host.ahook``'s direct path: the queue async calls of ``hook`` join, and its converters.

        ``None`` for a hook that streams.  The backend must be started.
        """
        info = self._hooks.get(hook) or self._hook_info(hook)
        return None if info.stream else (self._coalescer, info)

    def _inside(self, hook: str, reply: list[Any], items: int = 1) -> None:
        """Hand the time a checked OK/END frame reports to the host's metrics, if it measures this plugin."""
        if self.stats is not None:
            ns = P.inside_ns(reply, self._inside_limit)
            if ns >= 0:
                self.stats.inside(hook, ns, items)

    def _done(self, w: Worker, hook: str, *, retire: bool = False) -> None:
        """Give ``w`` back after a reply to ``hook``, unless it sent too much or must be retired."""
        if w.surplus():
            self.replies.violation(hook, "it sent more than the one reply asked for")
            self.pool.discard(w)
            return
        reason = w.retire_reason()
        if reason is not None:
            self.log.warning("plugin %r: %s", self.target.name, reason)
            self.record_incident("resource", reason, hook)
            self.pool.discard(w)
            return
        self.pool.release(w, retire=retire)

    def _reply(self, w: Worker, hook: str, rid: int, *, items: int | None = None, stream: bool = False) -> Any:
        """``w``'s checked reply to request ``rid``; any failure becomes the SDK's error.

        After any exception the worker is out of step and must be discarded.
        """
        w.deadline = _monotonic() + self._timeout
        try:
            msg = w.recv()
        except BaseException as exc:
            w.deadline = 0.0
            raise self.replies.channel(w, hook, exc) from None
        w.deadline = 0.0
        try:
            return _check_reply(msg, rid, items=items, stream=stream)
        except P.ProtocolViolation as exc:
            raise self.replies.violation(hook, str(exc)) from None

    def call_batch(self, hook: str, items: Sequence[tuple[Any, ...]], timed: bool = False) -> list[Any]:
        """Split ``items`` into one contiguous share per free worker; results in order."""
        if not items:
            return []
        if not self._started:
            self.start()
        info = self._hooks.get(hook) or self._hook_info(hook)
        pool = self.pool
        if self._lanes:
            self._coalescer.free_this_loop()
        workers = [pool.take()]
        pending: list[Worker] = []  # taken, handshake maybe unfinished
        try:
            while len(workers) + len(pending) < min(pool.size, len(items)):
                more = pool.try_take()
                if more is None:
                    break
                pending.append(more)
            # Idle workers may be replacements whose READY is still unread: finish every
            # handshake before a share is sent (new workers came up in parallel meanwhile).
            while pending:
                w = pending.pop(0)
                if w.ready or pool.ensure_ready(w):
                    workers.append(w)
        except BaseException:
            for w in workers + pending:
                pool.release(w, used=False)
            raise
        parts = _split(len(items), len(workers))
        sent: list[tuple[Worker, int, int, int]] = []  # worker, request id, share start, share size
        error: BaseException | None = None
        for w, (start, stop) in zip(workers, parts):
            if error is not None:
                pool.release(w, used=False)
                continue
            rid = w.rid = w.rid % 127 + 1  # one byte on the wire (see guest.protocol)
            try:
                w.send([_BATCH, rid, hook, items[start:stop], 1] if timed else [_BATCH, rid, hook, items[start:stop]])
            except BrokenPipeError:
                pass  # the worker is dead: reading its reply reports it
            except Exception as exc:
                pool.release(w, used=False)
                error = self.replies.encode_error(hook, exc, items[start:stop])
                continue
            sent.append((w, rid, start, stop - start))
        values = self._collect(hook, sent, error, timed)
        if info.convert is None or {type(v) for v in values} <= info.plain:
            return values
        return [info.convert(v) for v in values]

    def _collect(
        self, hook: str, sent: list[tuple[Worker, int, int, int]], error: BaseException | None, timed: bool = False
    ) -> list[Any]:
        """Every share's reply, in order (every channel stays in step); the first error is raised."""
        values: list[Any] = []
        inside = 0  # the guests' time for the whole batch, -1 once one share has none
        for w, rid, start, size in sent:
            try:
                reply = self._reply(w, hook, rid, items=size)
            except BaseException as exc:
                self.pool.discard(w)
                error = error or exc
                continue
            if reply[0] == _OK:
                self._done(w, hook)
                values.extend(reply[2])
                ns = P.inside_ns(reply, self._inside_limit)
                inside = inside + ns if ns >= 0 and inside >= 0 else -1
                continue
            self._done(w, hook, retire=Replies.retires(reply))
            failure = self.replies.error(hook, reply, offset=start)  # always: it records a cap hit
            error = error or failure
        if error is not None:
            raise error
        if timed and inside >= 0 and self.stats is not None and values:
            self.stats.inside(hook, inside, len(values))
        return values


def _may_stream(annotation: Any) -> bool:
    """Whether a hook returning ``annotation`` may stream: an iterator type, or no type to go by.

    A hook whose spec names another type (``-> list[str]``) gets an iterator
    result whole, so an ordinary ``return map(...)`` never holds a worker.
    """
    return annotation is Any or annotation is object or codec.is_stream_type(annotation)


def _list_of(item: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: [item(x) for x in v] if isinstance(v, list) else v


def _split(n: int, k: int) -> list[tuple[int, int]]:
    """``n`` items in ``k`` contiguous, near-equal parts, as (start, stop)."""
    base, extra = divmod(n, k)
    bounds, start = [], 0
    for i in range(k):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds
