"""Async calls driven on the caller's own event loop: no thread between a task and its worker.

One :class:`LoopLane` per plugin and event loop.  A task's call joins the
lane's queue; once per loop iteration (``call_soon``) the lane sends what is
queued, up to :data:`~.coalesce.MAX_ITEMS` calls, in one ``GATHER`` frame on
a worker it took from the pool *without waiting* (``take_idle``).  The
worker's channel is watched with ``loop.add_reader``: its ``GATHERED``
frames are read, checked and decoded in the reader callback, and each
task's future is resolved there, on the loop, directly.  A worker whose
gather is answered sends the calls queued meanwhile (the woken tasks' next
calls), or goes back to the pool once the queue has drained.

When no worker is idle and the lane has none in flight, its calls go to the
threads' queue (:class:`~.coalesce.Coalescer`), with the sync callers', as
they did before: this lane never waits for the pool.  Nor does it hold a
worker that sync callers are waiting for (``Pool.contended``) beyond the
gather in flight.  Workers of a kind with no channel to watch
(``Worker.channel_fd`` is ``None``) always take the threads' path.

The guarantees are the threads' path's: each call gets its own outcome (the
frames are checked as there); the worker's deadline is armed per answer (the
pool's watchdog kills a worker past it, and its closed channel is seen here);
a crash, a hang or a broken frame is handled on a short-lived thread (finding
out how a worker died may wait for it) by the same rules: the culprit gets
the error, the calls after it are queued again, and each call of a gather
that died in its first moments runs again alone.  Nothing here blocks the
loop: reads happen only when the channel is readable, and a frame not yet
whole waits for its rest.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from .. import codec
from .._errors import PluginError
from ..guest import protocol as P
from .replies import Replies

if TYPE_CHECKING:
    from .coalesce import Coalescer
    from .pooled import PooledBackend, _HookInfo
    from .worker import Worker

__all__ = ["LoopLane", "LoopLanes", "close_lane", "resolve"]

_running_loop = asyncio._get_running_loop

_monotonic = time.monotonic
_read = os.read
_unpack_header = codec.HEADER.unpack_from
_decode = codec.decode
_GATHER, _ERR = P.GATHER, P.ERR
_check_gathered = P.check_gathered

#: Seconds of calls one gather carries at most while other workers are idle (slow calls spread out).
SPREAD = 0.002

#: A queued call: its future, hook, arguments and result converter.
Item = tuple["asyncio.Future[Any]", str, tuple[Any, ...], "_HookInfo"]


class _Conn:
    """A worker the lane holds, its channel's unread bytes, and the gather in flight on it."""

    __slots__ = ("answered", "buf", "fd", "hook", "retire", "rid", "sent", "since", "stepwise", "w")

    def __init__(self, w: Worker, fd: int) -> None:
        self.w, self.fd = w, fd
        self.buf = bytearray()
        self.sent: list[Item] = []
        self.hook = ""  # the hook of the last call answered (for what giving the worker back reports)
        self.answered = 0
        self.rid = 0
        self.since = 0.0  # when the gather in flight was sent
        self.stepwise = False  # the guest answers call by call now: a failure is the next call's
        self.retire = False


class LoopLane:
    """One event loop's calls to one plugin (see the module docstring).  Used on its loop's thread only."""

    def __init__(self, coalescer: Coalescer, loop: asyncio.AbstractEventLoop, max_items: int) -> None:
        backend = coalescer.backend
        self.co = coalescer
        self.pool = backend.pool
        self.replies = backend.replies
        self.timeout = backend.call_timeout
        self.max_message = backend.max_message
        self.max_items = max_items
        self.loop = loop
        self.queue: deque[Item] = deque()
        self.free: list[_Conn] = []  # held, nothing in flight
        self.busy: set[_Conn] = set()  # a gather in flight
        self.scheduled = False
        self.closed = False
        self.per_call = 0.0  # seconds a call of the last gathers took, send to answer (a moving average)

    # -- callers (on the loop) ------------------------------------------------
    def submit(self, future: asyncio.Future[Any], hook: str, args: tuple[Any, ...], info: _HookInfo) -> None:
        if self.closed:
            raise PluginError("backend is closed", plugin=self.pool.name)
        self.queue.append((future, hook, args, info))
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._pump)

    def _schedule(self) -> None:
        if not self.scheduled and not self.closed:
            self.scheduled = True
            self.loop.call_soon(self._pump)

    def _pump(self) -> None:
        """Send what is queued on the workers held or idle; give back those left with nothing to do."""
        self.scheduled = False
        if self.closed:
            return
        queue, free = self.queue, self.free
        if free and self.pool.contended():  # sync callers wait for a worker: the lane joins their queue
            while free:
                self._give_back(free.pop())
        most = self.max_items
        if self.per_call * most > SPREAD:  # slow calls: spread over the idle workers, rather than in a row
            most = max(1, int(SPREAD / self.per_call))
        while queue:
            conn = free.pop() if free else self._take()
            if conn is None:
                break
            self._send(conn, most)
        if queue and not self.busy:  # no worker to be had: the threads' path (it waits for one)
            self.co.requeue_items(list(queue))
            queue.clear()
        while free:
            self._give_back(free.pop())

    def _take(self) -> _Conn | None:
        """An idle worker of the pool, now, or ``None`` (none idle, or not one this lane can watch)."""
        if not self.co.lanes_usable or self.pool.contended():
            return None
        w = self.pool.take_idle()
        if w is None:
            return None
        fd = w.channel_fd() if w.ready and not w.surplus() else None
        if fd is None:
            if w.ready and not w.surplus():  # a kind with no channel to watch: its calls take the threads' path
                self.co.lanes_usable = False
            self.pool.release(w, used=False)  # a handshake to finish: the threads' path does that
            return None
        conn = _Conn(w, fd)
        self.loop.add_reader(fd, self._readable, conn)
        return conn

    def _send(self, conn: _Conn, most: int) -> None:
        batch: list[Item] = []
        queue = self.queue
        while queue and len(batch) < most:
            item = queue.popleft()
            if not item[0].done():  # a cancelled task's call is withdrawn
                batch.append(item)
        if not batch:
            self.free.append(conn)
            return
        w = conn.w
        rid = w.rid = w.rid % 127 + 1  # one byte on the wire (see guest.protocol)
        try:
            w.send([_GATHER, rid, [[item[1], item[2]] for item in batch]])
        except BrokenPipeError:
            pass  # the worker died: its channel's end reports it
        except Exception:
            # Some call cannot be encoded, or together they are too large: the threads' path sorts it out.
            self.co.requeue_items(batch)
            self.free.append(conn)
            return
        conn.sent, conn.answered, conn.rid, conn.stepwise, conn.retire = batch, 0, rid, False, False
        conn.since = now = _monotonic()
        w.deadline = now + self.timeout
        self.busy.add(conn)
        self.co.gathers += 1
        self.co.gathered += len(batch)

    # -- replies (the reader callback) -----------------------------------------
    def _readable(self, conn: _Conn) -> None:
        try:
            data = _read(conn.fd, 65536)
        except OSError as exc:
            self._fail(conn, EOFError(f"channel unreadable: {exc}"))
            return
        if not data:
            self._fail(conn, EOFError("channel closed"))
            return
        buf = conn.buf
        buf += data
        while len(buf) >= 4:
            (size,) = _unpack_header(buf)
            if size > self.max_message:
                self._fail(conn, _frame_error(bytes(buf), self.max_message))
                return
            end = 4 + size
            if len(buf) < end:
                return  # its rest is on its way (within the deadline)
            body = bytes(buf[4:end])
            del buf[:end]
            try:
                msg = _decode(body)
            except Exception as exc:  # bytes that are no message
                self._fail(conn, exc)
                return
            if not conn.sent:
                self._fail(conn, P.ProtocolViolation("it sent more than the one reply asked for"))
                return
            if not self._answer(conn, msg):
                return

    def _answer(self, conn: _Conn, msg: Any) -> bool:
        """Resolve the calls ``msg`` answers; ``False`` once the gather is over (answered, or failed)."""
        sent, answered, replies = conn.sent, conn.answered, self.replies
        try:
            if type(msg) is list and msg and msg[0] == _ERR:  # the whole gather refused
                reply = P.check_reply(msg, conn.rid)
                for item in sent[answered:]:
                    resolve(item[0], None, replies.error(item[1], reply))
                answered = len(sent)
            else:
                values, errors, last = _check_gathered(msg, conn.rid, len(sent) - answered)
                conn.stepwise = conn.stepwise or not last
                for i, value in enumerate(values, answered):
                    future, hook, _, info = sent[i]
                    failure = errors.get(i - answered) if errors else None
                    if failure is not None:
                        conn.retire = conn.retire or Replies.retires(failure)
                        resolve(future, None, replies.error(hook, failure))
                    elif future.done():
                        continue  # its task was cancelled: the result is dropped
                    elif info.convert is None or type(value) in info.plain:
                        future.set_result(value)
                    else:
                        try:
                            value = info.convert(value)
                        except Exception as exc:
                            future.set_exception(exc)
                        else:
                            future.set_result(value)
                answered += len(values)
        except P.ProtocolViolation as exc:
            self._fail(conn, exc)
            return False
        conn.answered = answered
        w = conn.w
        if answered < len(sent):
            w.deadline = _monotonic() + self.timeout  # re-armed by each answer
            return True
        w.deadline = 0.0
        if conn.buf:
            self._fail(conn, P.ProtocolViolation("it sent more than the one reply asked for"))
            return False
        w.calls += len(sent) - 1  # the pool counts one
        self.per_call = (self.per_call + (_monotonic() - conn.since) / len(sent)) / 2
        conn.hook = sent[-1][1]
        conn.sent = []
        self.busy.discard(conn)
        self.free.append(conn)
        self._schedule()  # after the woken tasks' steps: their next calls go in the next gather
        return False

    def drain(self) -> None:
        """Answer the gathers in flight with blocking reads, then give every worker back.

        For a sync call made on this loop's own thread (see
        :meth:`~.coalesce.Coalescer.free_this_loop`): it blocks the loop, so
        the reader callbacks cannot run, and it may need these workers.  Each
        read ends within its worker's deadline (the watchdog kills a worker
        past it, which closes its channel).
        """
        for conn in list(self.busy):
            while conn in self.busy:
                self._readable(conn)  # blocks until the worker writes (its channel is a blocking pipe)
        while self.free:
            self._give_back(self.free.pop())

    # -- giving workers back ---------------------------------------------------
    def _give_back(self, conn: _Conn) -> None:
        self.loop.remove_reader(conn.fd)
        w, pool = conn.w, self.pool
        if not conn.retire and not w.surplus():
            if pool.plain_release:
                if pool.release_fast(w):
                    return
            elif not (w.timed_out or (pool.recycle_after and w.calls + 1 >= pool.recycle_after)):
                pool.release(w)
                return
        # Retired, recycled or timed out: stopping it waits for the process, so a thread does it.
        self.co.helper(self.co.backend._done, w, conn.hook, retire=conn.retire)

    def _fail(self, conn: _Conn, exc: BaseException) -> None:
        """The channel failed or broke the protocol: a thread settles it (see the module docstring)."""
        self.loop.remove_reader(conn.fd)
        self.busy.discard(conn)
        if conn in self.free:
            self.free.remove(conn)
        conn.w.deadline = 0.0
        sent, conn.sent = conn.sent, []
        self.co.helper(self.co.lane_failed, conn.w, sent[conn.answered :], conn.stepwise, exc)
        self._schedule()  # the queue may need another worker, or the threads' path

    # -- closing -----------------------------------------------------------------
    def shutdown(self, *, replace: bool) -> None:
        """Fail every call of this lane and drop its workers (on its loop's thread, or with the loop stopped)."""
        self.closed = True
        error = PluginError("backend is closed", plugin=self.pool.name)
        pending = list(self.queue)
        self.queue.clear()
        for conn in self.free:
            self.loop.remove_reader(conn.fd)
            self.pool.release(conn.w, used=False)
        self.free.clear()
        for conn in self.busy:  # its gather is lost with its loop: nobody reads its channel any more
            self.loop.remove_reader(conn.fd)
            pending += conn.sent[conn.answered :]
            conn.w.deadline = 0.0
            self.pool.discard(conn.w, replace=replace)
        self.busy.clear()
        if self.loop.is_closed():
            return
        for item in pending:
            try:
                resolve(item[0], None, error)
            except RuntimeError:  # its loop closed meanwhile
                pass


def resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    """Give ``future`` its outcome, unless it has one (its task was cancelled meanwhile)."""
    if future.done():
        return
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


def _frame_error(head: bytes, max_message: int) -> BaseException:
    """The error a frame reader gives for a header announcing ``head``'s oversized frame."""
    chunks = [head, b""]
    try:
        codec.FrameReader(lambda n: chunks.pop(0), max_message).read()
    except BaseException as exc:
        return exc
    return EOFError("channel closed")


class LoopLanes:
    """The coalescer's lanes, one per event loop, and the helper threads that do their slow chores.

    A mixin of :class:`~.coalesce.Coalescer`, which holds the state.
    """

    # Provided by Coalescer.
    backend: PooledBackend
    cond: threading.Condition
    closed: bool
    max_items: int
    _lanes: dict[asyncio.AbstractEventLoop, LoopLane]
    _helpers: set[threading.Thread]

    def free_this_loop(self) -> bool:
        """Before a sync caller waits for a worker: if it runs on an event loop's thread, that loop's lane gives
        back the workers it holds (see :meth:`.loop_lane.LoopLane.drain`); ``True`` if it held any.

        Without this, a sync call made on the loop's own thread while that loop's awaited calls hold every
        worker would wait for its whole timeout: the blocked loop could never read their answers.
        """
        loop = _running_loop()
        lane = self._lanes.get(loop) if loop is not None else None
        if lane is None or not (lane.busy or lane.free):
            return False
        lane.drain()
        return True

    def submit(self, hook: str, args: tuple[Any, ...], info: _HookInfo, future: asyncio.Future[Any]) -> None:
        """An async call: ``future`` gets its outcome; cancelling it withdraws the call while queued.

        Called on ``future``'s loop: its lane drives it there (see :mod:`.loop_lane`).
        """
        loop = future.get_loop()
        lane = self._lanes.get(loop)
        if lane is None:
            lane = self._new_lane(loop)
        # A cancelled one is skipped when its turn comes: no callback per call.
        lane.submit(future, hook, args, info)

    def lane(self, loop: asyncio.AbstractEventLoop) -> LoopLane:
        """``loop``'s lane (made on first use): its ``submit`` takes async calls (see :mod:`.loop_lane`)."""
        return self._lanes.get(loop) or self._new_lane(loop)

    def _new_lane(self, loop: asyncio.AbstractEventLoop) -> LoopLane:
        if any(other.is_closed() for other in list(self._lanes)):
            self.helper(self._reap)  # replacing their workers waits for processes: not on this loop
        with self.cond:
            if self.closed:
                raise PluginError("backend is closed", plugin=self.backend.pool.name)
            lane = self._lanes[loop] = LoopLane(cast("Coalescer", self), loop, self.max_items)
        return lane

    def _reap(self) -> None:
        """Lanes whose loop has closed: their workers in flight are lost with it, and replaced."""
        with self.cond:
            dead = [lane for loop, lane in self._lanes.items() if loop.is_closed()]
            for lane in dead:
                del self._lanes[lane.loop]
        for lane in dead:
            lane.shutdown(replace=True)

    def helper(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``function`` on a thread of its own (a lane's slow chore), joined at close."""
        t = threading.Thread(
            target=self._help,
            args=(function, args, kwargs),
            daemon=True,
            name=f"pluginsdk-{self.backend.pool.name}-lane",
        )
        with self.cond:
            self._helpers.add(t)
        t.start()

    def _help(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            function(*args, **kwargs)
        except Exception:
            self.backend.log.exception("plugin %r: coalescing error", self.backend.pool.name)
        finally:
            with self.cond:
                self._helpers.discard(threading.current_thread())


def close_lane(lane: LoopLane, timeout: float = 5.0) -> None:
    """Shut ``lane`` down on its loop's thread (or here, if its loop is not running)."""
    loop = lane.loop
    if loop.is_closed() or not loop.is_running() or _running_loop() is loop:
        lane.shutdown(replace=False)
        return
    done = threading.Event()

    def run() -> None:
        try:
            lane.shutdown(replace=False)
        finally:
            done.set()

    try:
        loop.call_soon_threadsafe(run)
    except RuntimeError:  # closed meanwhile
        lane.shutdown(replace=False)
        return
    done.wait(timeout)
