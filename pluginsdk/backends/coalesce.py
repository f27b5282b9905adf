"""Coalescing: concurrent calls to one plugin cross together, one write for many calls.

A sync call that finds an idle worker (or room to start one) takes it, as
ever: a lone caller never queues, and pays one attribute check for this
module.  A sync call that finds every worker busy, and every async call,
joins the plugin's queue.  The queue is served by *drivers*, threads of
this backend (one per worker at most, started as calls queue, gone when
idle): each takes a worker from the pool, then the calls queued at that
moment (up to :data:`MAX_ITEMS`, :data:`MAX_BYTES` encoded), and sends them
in one write: one crossing, one wake-up of the guest.  The guest answers them
in order, one reply frame each, so:

* every caller gets exactly its own outcome: replies echo request ids and
  each frame is checked (:mod:`pluginsdk.guest.protocol`); an error reply is
  its call's alone;
* every call keeps its own deadline: the worker's deadline is re-armed as
  each reply arrives, so a call is due ``timeout`` after the one before it
  was answered, as if it had had a worker of its own;
* a crash, a timeout or a bad frame belongs to the call the worker was
  running: the replies before it were delivered, and the calls after it
  never started (a guest runs requests one at a time), so they go back to
  the front of the queue for the next worker: none is lost, none runs twice.

Async calls are driven on their own event loop, one lane per loop
(:mod:`.loop_lane`): the loop sends them and reads their answers itself.  A
lane with no worker to be had without waiting hands its calls to this queue;
their callers are woken once per batch and event loop (one
``call_soon_threadsafe`` for all of them), not once per call.  A queued call waits at
most ``timeout`` for a worker (then :class:`~pluginsdk.PluginTimeout`),
re-counted when it goes back to the queue.  Cancelling an async call
withdraws it while it is queued; once sent, it runs to its end and its
result is dropped.  Streaming hooks are never queued (a stream holds its worker).
"""

from __future__ import annotations

import _thread
import asyncio
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .. import codec
from .._errors import PluginError, PluginTimeout
from ..guest import protocol as P
from .loop_lane import Item, LoopLane, LoopLanes, close_lane, resolve
from .replies import Replies

if TYPE_CHECKING:
    from collections.abc import Callable

    from .pooled import PooledBackend, _HookInfo
    from .worker import Worker

__all__ = ["MAX_BYTES", "MAX_ITEMS", "Coalescer"]

#: Calls that cross together at most (request ids cycle through 127: a window this size never repeats one).
MAX_ITEMS = 64
#: Encoded bytes that cross together at most: well inside a pipe's buffer, so the one
#: write never blocks while the guest's replies wait to be read.
MAX_BYTES = 32 * 1024
#: Seconds an idle driver waits for calls before its thread ends.
DRIVER_IDLE = 2.0

_monotonic = time.monotonic
_OK = P.OK
_check_reply = P.check_reply
_check_gathered = P.check_gathered
# A queued call: waiting; sent in a batch; answered (``value`` or ``error`` set); withdrawn.
_PENDING, _TAKEN, _DONE, _WITHDRAWN = 0, 1, 2, 3


class Slot:
    """One queued call, and once answered its outcome.

    A sync caller waits on ``lock`` (held until the call is answered); an
    async caller's ``future`` is resolved on its ``loop``.
    """

    __slots__ = ("args", "error", "future", "hook", "info", "lock", "loop", "since", "solo", "state", "value")

    def __init__(
        self,
        hook: str,
        args: tuple[Any, ...],
        info: _HookInfo,
        future: asyncio.Future[Any] | None = None,
    ) -> None:
        self.hook, self.args, self.info = hook, args, info
        self.state = _PENDING
        self.since = _monotonic()
        self.solo = False  # sent alone: it was in a gather whose worker died, and may be why
        self.value: Any = None
        self.error: BaseException | None = None
        self.future = future
        self.loop = None if future is None else future.get_loop()
        self.lock: Any = None
        if future is None:
            self.lock = _thread.allocate_lock()
            self.lock.acquire()


def _settle(items: list[tuple[Slot, Any, BaseException | None]]) -> None:
    """On an event loop: resolve its callers' futures (those not cancelled meanwhile)."""
    for slot, value, error in items:
        assert slot.future is not None
        resolve(slot.future, value, error)


_Settling = dict["asyncio.AbstractEventLoop", list[tuple[Slot, Any, "BaseException | None"]]]


def _finish(settling: _Settling, slot: Slot, value: Any = None, error: BaseException | None = None) -> None:
    """Answer ``slot``: a sync caller now; an async one's outcome joins ``settling`` for :func:`_flush`."""
    slot.value, slot.error, slot.state = value, error, _DONE
    if slot.lock is not None:
        slot.lock.release()
    else:
        assert slot.loop is not None
        settling.setdefault(slot.loop, []).append((slot, value, error))


def _flush(settling: _Settling) -> None:
    """Wake the event loops whose callers' outcomes are in: once per loop, not once per call."""
    for loop, items in settling.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:  # that loop is closed: nobody awaits these any more
            pass
    settling.clear()


class Coalescer(LoopLanes):
    """The queue of one plugin's calls waiting for a worker, and its drivers (see the module docstring)."""

    max_items = MAX_ITEMS

    def __init__(self, backend: PooledBackend) -> None:
        self.backend = backend
        self.pending: deque[Slot] = deque()
        self.cond = threading.Condition(threading.Lock())
        self.closed = False
        self._drivers: set[threading.Thread] = set()
        self._idle_drivers = 0
        self.gathers = self.gathered = 0  # GATHER frames sent, and the calls they carried
        # Async calls are driven on their own loop, one lane per loop (see .loop_lane).
        self._lanes: dict[asyncio.AbstractEventLoop, LoopLane] = {}
        self.lanes = self._lanes  # the same dict, for the backend's cheap "any lane?" before a sync caller waits
        self.lanes_usable = True  # False once a worker had no channel to watch: the threads' path only
        self._helpers: set[threading.Thread] = set()  # a lane's slow chores (a worker died, or retires)

    # -- callers ---------------------------------------------------------------
    def _enqueue(self, slot: Slot) -> None:
        with self.cond:
            if self.closed:
                raise PluginError("backend is closed", plugin=self.backend.pool.name)
            self.pending.append(slot)
            self._wake()

    def _wake(self) -> None:
        """A driver for the queue: an idle one woken, or a new one (under ``cond``)."""
        if self._idle_drivers:
            self.cond.notify()
        elif len(self._drivers) < self.backend.pool.size:
            t = threading.Thread(target=self._drive, daemon=True, name=f"pluginsdk-{self.backend.pool.name}-driver")
            self._drivers.add(t)
            t.start()

    def call(self, hook: str, args: tuple[Any, ...], info: _HookInfo) -> Any:
        """A sync call made while every worker is busy: queued, answered by a driver."""
        slot = Slot(hook, args, info)
        self._enqueue(slot)
        pool = self.backend.pool
        while True:
            if slot.state == _TAKEN:  # on its way: each reply's deadline bounds the wait
                if slot.lock.acquire(timeout=pool.timeout):
                    break
                continue
            left = slot.since + pool.timeout - _monotonic()
            if left <= 0:
                with self.cond:
                    if slot.state == _PENDING:
                        self.pending.remove(slot)
                        slot.state = _WITHDRAWN
                        raise self._no_worker(hook)
                continue
            if slot.lock.acquire(timeout=left):
                break
        if slot.error is not None:
            raise slot.error
        return slot.value

    def requeue_items(self, items: list[Item]) -> None:
        """A lane's calls for the threads' path (no worker to be had on its loop, or a failure to settle)."""
        self.enqueue_slots([Slot(hook, args, info, future) for future, hook, args, info in items if not future.done()])

    def enqueue_slots(self, slots: list[Slot], *, front: bool = False) -> None:
        if not slots:
            return
        with self.cond:
            if not self.closed:
                if front:
                    self.pending.extendleft(reversed(slots))
                else:
                    self.pending.extend(slots)
                self._wake()
                return
        settling: _Settling = {}
        for s in slots:
            _finish(settling, s, error=PluginError("backend is closed", plugin=self.backend.pool.name))
        _flush(settling)

    def lane_failed(self, w: Worker, rest: list[Item], stepwise: bool, exc: BaseException) -> None:
        """A lane's worker failed mid-gather (on a helper thread): as :meth:`_run` settles it."""
        backend = self.backend
        replies, pool = backend.replies, backend.pool
        slots = [Slot(hook, args, info, future) for future, hook, args, info in rest]
        hook = slots[0].hook if slots else None
        settling: _Settling = {}
        if isinstance(exc, P.ProtocolViolation) or hook is None:
            error: BaseException = replies.violation(hook, str(exc)) if isinstance(exc, P.ProtocolViolation) else exc
            if hook is None and not isinstance(exc, P.ProtocolViolation):
                replies.channel(w, "gather", exc)  # it died between gathers: recorded, nobody to tell
            pool.discard(w)
            for s in slots:
                _finish(settling, s, error=error)
        else:
            error = replies.channel(w, hook, exc)  # before the kill, so it says how it died
            pool.discard(w)
            if stepwise or len(slots) == 1 or not isinstance(error, PluginError):
                _finish(settling, slots[0], error=error)
                self.enqueue_slots(slots[1:], front=True)
            else:  # which call it was in is unknown: each runs again on its own, to find out
                for s in slots:
                    s.solo = True
                self.enqueue_slots(slots, front=True)
        _flush(settling)

    def _no_worker(self, hook: str) -> PluginTimeout:
        pool = self.backend.pool
        return PluginTimeout(
            f"hook {hook!r}: no worker became free within {pool.timeout:g}s "
            f"(all {pool.size} busy, {len(self.pending)} more calls queued)",
            plugin=pool.name,
            timeout=pool.timeout,
        )

    # -- drivers ---------------------------------------------------------------
    def _drive(self) -> None:
        """A driver: take a worker, then the queued calls; send them; repeat until idle."""
        me = threading.current_thread()
        pool = self.backend.pool
        settling: _Settling = {}
        try:
            while True:
                with self.cond:
                    while not self.pending and not self.closed:
                        self._idle_drivers += 1
                        try:
                            woken = self.cond.wait(DRIVER_IDLE)
                        finally:
                            self._idle_drivers -= 1
                        if not woken and not self.pending:
                            return
                    if self.closed:
                        return
                if self._lanes:
                    self._reap()
                try:
                    w = pool.take()
                except PluginTimeout:
                    self._expire()
                    continue
                except BaseException as exc:  # the plugin failed for good, or the pool closed
                    self._fail_all(exc)
                    continue
                batch = self._take_batch()
                if not batch:
                    pool.release(w, used=False)
                    continue
                try:
                    self._run(w, batch, settling)
                finally:
                    for s in batch:  # a bug in _run must still not leave a caller waiting
                        if s.state == _TAKEN:
                            _finish(settling, s, error=PluginError("the queued call was lost", plugin=pool.name))
                    _flush(settling)
        finally:
            with self.cond:
                self._drivers.discard(me)
                if self.pending and not self.closed and not self._drivers:
                    # Calls queued as this driver left: another one takes them.
                    t = threading.Thread(target=self._drive, daemon=True, name=me.name)
                    self._drivers.add(t)
                    t.start()

    def _take_batch(self) -> list[Slot]:
        """The calls to send next: those queued, up to MAX_ITEMS; a call re-run alone goes alone."""
        batch: list[Slot] = []
        with self.cond:
            pending = self.pending
            while pending and len(batch) < MAX_ITEMS and not (batch and (batch[0].solo or pending[0].solo)):
                s = pending.popleft()
                if s.future is not None and s.future.cancelled():  # its task was cancelled: withdrawn
                    s.state = _WITHDRAWN
                    continue
                s.state = _TAKEN
                batch.append(s)
        return batch

    def serve_with(self, w: Worker) -> bool:
        """A sync caller done with ``w`` sends the calls queued meanwhile on it before giving it back.

        ``False`` if there were none (``w`` is still the caller's to give
        back); else ``w`` was given back (or replaced).  The caller's own
        call is answered already: this spares the queued calls a driver's
        wake-up and a wait for the pool, at the price of this caller's time.
        """
        batch = self._take_batch()
        if not batch:
            return False
        settling: _Settling = {}
        try:
            self._run(w, batch, settling)
        finally:
            for s in batch:
                if s.state == _TAKEN:
                    _finish(settling, s, error=PluginError("the queued call was lost", plugin=self.backend.pool.name))
            _flush(settling)
        return True

    def _expire(self) -> None:
        """No worker came free within ``timeout``: calls queued that long fail; the rest wait on."""
        now, timeout = _monotonic(), self.backend.pool.timeout
        with self.cond:
            late = [s for s in self.pending if now - s.since >= timeout]
            for s in late:
                self.pending.remove(s)
                s.state = _TAKEN
        settling: _Settling = {}
        for s in late:
            _finish(settling, s, error=self._no_worker(s.hook))
        _flush(settling)

    def _fail_all(self, exc: BaseException) -> None:
        with self.cond:
            slots = list(self.pending)
            self.pending.clear()
        settling: _Settling = {}
        for s in slots:
            _finish(settling, s, error=exc)
        _flush(settling)

    def _run(self, w: Worker, batch: list[Slot], settling: _Settling) -> None:
        """Send ``batch`` to ``w`` as one ``GATHER``; answer each call; re-queue those left unanswered."""
        backend = self.backend
        pool, replies, timeout = backend.pool, backend.replies, backend.call_timeout

        def finish(s: Slot, value: Any = None, error: BaseException | None = None) -> None:
            _finish(settling, s, value, error)

        sent = self._send(w, batch, finish, settling)
        if not sent:
            backend._done(w, batch[0].hook)
            return
        rid = w.rid
        self.gathers += 1
        self.gathered += len(sent)
        answered, retire = 0, False
        stepwise = False  # the guest answers call by call now (see guest.protocol): a failure is the next call's
        worker: Worker | None = w
        try:
            while answered < len(sent):
                if settling and not w.surplus():
                    _flush(settling)  # about to wait: deliver what is in
                w.deadline = _monotonic() + timeout
                try:
                    reply = w.recv()
                except BaseException as exc:
                    w.deadline = 0.0
                    s = sent[answered]
                    error = replies.channel(w, s.hook, exc)  # before the kill, so it says how it died
                    pool.discard(w)
                    worker = None
                    if stepwise or answered == len(sent) - 1 or not isinstance(error, PluginError):
                        answered += 1
                        finish(s, error=error)
                    else:  # which call it was in is unknown: each runs again on its own, to find out
                        for later in sent[answered:]:
                            later.solo = True
                    break
                w.deadline = 0.0
                try:
                    if type(reply) is list and reply and reply[0] == P.ERR:  # the whole gather refused
                        reply = _check_reply(reply, rid)
                        for s in sent[answered:]:
                            finish(s, error=replies.error(s.hook, reply))
                        answered = len(sent)
                        break
                    values, errors, last = _check_gathered(reply, rid, len(sent) - answered)
                    stepwise = stepwise or not last
                except P.ProtocolViolation as exc:
                    pool.discard(w)
                    worker = None
                    error = replies.violation(sent[answered].hook, str(exc))
                    for s in sent[answered:]:  # a guest that breaks the protocol answers none of them
                        finish(s, error=error)
                    answered = len(sent)
                    break
                for i, value in enumerate(values):
                    s = sent[answered + i]
                    failure = errors.get(i) if errors else None
                    if failure is not None:
                        retire = retire or Replies.retires(failure)
                        finish(s, error=replies.error(s.hook, failure))
                        continue
                    info = s.info
                    if info.convert is None or type(value) in info.plain:
                        finish(s, value)
                        continue
                    try:
                        finish(s, info.convert(value))
                    except Exception as exc:
                        finish(s, error=exc)
                answered += len(values)
        finally:
            # Calls a worker did not answer before it died go back to the front, for the next worker.
            self._requeue(sent[answered:], settling)
            if worker is not None:
                if answered < len(sent):  # interrupted mid-gather: the channel is out of step
                    pool.discard(worker)
                else:
                    worker.calls += len(sent) - 1  # release counts one
                    backend._done(worker, batch[0].hook, retire=retire)

    def _send(self, w: Worker, batch: list[Slot], finish: Callable[..., None], settling: _Settling) -> list[Slot]:
        """Write ``batch`` to ``w`` as one ``GATHER``: the calls sent (one that cannot be encoded is answered)."""
        rid = w.rid = w.rid % 127 + 1  # one byte on the wire (see guest.protocol)
        try:
            w.send([P.GATHER, rid, [[s.hook, s.args] for s in batch]])
            return batch
        except BrokenPipeError:
            return batch  # the worker died: reading its answer reports it
        except Exception:
            pass
        # Some call cannot be encoded, or together they are too large: find out call by call.
        replies, sent = self.backend.replies, []
        for s in batch:
            try:
                codec.encode_frame([P.GATHER, rid, [[s.hook, s.args]]], self.backend.max_message)
            except Exception as exc:
                finish(s, error=replies.encode_error(s.hook, exc, [s.args]))
            else:
                sent.append(s)
        if len(sent) < len(batch):
            return self._send(w, sent, finish, settling) if sent else []
        self._requeue(sent[len(sent) // 2 :], settling)  # each fits, not all together: half now, half next
        return self._send(w, sent[: len(sent) // 2], finish, settling)

    def _requeue(self, slots: list[Slot], settling: _Settling) -> None:
        """Put ``slots`` back at the front of the queue (or fail them, once the backend is closing)."""
        if not slots:
            return
        now = _monotonic()
        with self.cond:
            if not self.closed:
                for s in reversed(slots):
                    s.state, s.since = _PENDING, now
                    self.pending.appendleft(s)
                return
        for s in slots:
            _finish(settling, s, error=PluginError("backend is closed", plugin=self.backend.pool.name))

    def close(self) -> None:
        """Fail every queued call and let the drivers go: the backend is closing (its pool next)."""
        with self.cond:
            self.closed = True
            lanes = list(self._lanes.values())
            self._lanes.clear()
            self.cond.notify_all()
        for lane in lanes:
            close_lane(lane)
        self._fail_all(PluginError("backend is closed", plugin=self.backend.pool.name))

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the drivers to end (after the pool closed: one mid-gather sees its worker killed)."""
        with self.cond:
            drivers = list(self._drivers | self._helpers)
        deadline = _monotonic() + timeout
        for t in drivers:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - _monotonic()))
