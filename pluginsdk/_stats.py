"""Per-plugin metrics: calls, items, errors, timeouts, crashes and latency, per plugin and hook.

The host keeps one :class:`Recorder` per plugin it measures (see
``Host(metrics=...)``).  A *request* is a single call, or one plugin's share
of ``map()`` (a batch).

Cost is what decides the layout (the target: at most 2% on a tiny ``process``
call, about 0.3 µs):

* every request is counted exactly, without a lock: ``next()`` on a
  per-hook iterator over :data:`SCHEDULE` (one C call, atomic under the GIL)
  takes the request's place in it and says what to time; the count is how
  far the iterators got (a new one starts, under a lock, each time one ends);
* 1 in :data:`SAMPLE_EVERY` requests has its latency timed by the host's
  clock, and 1 in :data:`INSIDE_EVERY` others asks the guest for its own time
  (a fifth field in the ``CALL``/``BATCH`` frame, see
  :mod:`pluginsdk.guest.protocol`), by their place in :data:`SCHEDULE`.  Not
  the same requests: the guest's clock reads would be in the host's
  measurement, and the latency sample slower than the requests it stands for.
  The figures are queued (one ``deque.append``) and filed in bulk into
  :class:`Histogram` s of fixed logarithmic buckets every :data:`FOLD_EVERY`
  of them or when asked: filing each one at once touches enough memory to
  slow the caller's next few calls by microseconds on a small VM;
* failed requests are rare: each one is counted under the lock.

:meth:`~pluginsdk.Host.stats` turns it all into :class:`HookStats` records.
"""

from __future__ import annotations

import _thread
from collections import deque
from operator import length_hint
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ._errors import PluginCrashed, PluginTimeout

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    import pluggy

__all__ = [
    "CYCLE",
    "INSIDE",
    "INSIDE_EVERY",
    "LATENCY",
    "METRICS_MODES",
    "SAMPLE_EVERY",
    "SCHEDULE",
    "WRAP",
    "HookStats",
    "Histogram",
    "Latency",
    "MetricsMode",
    "Recorder",
    "check_mode",
]

#: ``Host(metrics=...)``: which plugins are measured.
MetricsMode = Literal["off", "isolated", "all"]
METRICS_MODES: tuple[MetricsMode, ...] = ("off", "isolated", "all")

clock = perf_counter_ns

# Buckets: values below 16 ns are exact; above, each power of two is split into
# 8 equal buckets, so a bucket's midpoint is within 1/16 (6.25%) of any value
# in it.  Values from 2**37 ns (137 s) up share the last bucket (``max`` stays
# exact).  280 counters a histogram.
_SUB_BITS = 3
_SUB = 1 << _SUB_BITS
_TOP_BITS = 37
BUCKETS = (_TOP_BITS - _SUB_BITS - 1) * _SUB + 2 * _SUB
_LAST = BUCKETS - 1

#: One request in this many has its latency timed (per plugin and hook): exactly one in every
#: run of this many consecutive requests, a hook's first request included.
SAMPLE_EVERY = 64
#: One request in this many (never one whose latency is timed) asks the plugin for its own
#: time: a clock read in a process that just woke up costs microseconds on a small VM.
INSIDE_EVERY = 4 * SAMPLE_EVERY
#: :data:`SCHEDULE` flags: the host times the request; the host asks the guest for its own time.
LATENCY, INSIDE = 1, 2
#: The sampling schedule repeats every this many requests.
CYCLE = 4096
#: A recorder files its queued times into its histograms once it holds this many.
FOLD_EVERY = 256


def _schedule(every: int, inside_every: int) -> tuple[int, ...]:
    """What to time of each request number (modulo :data:`CYCLE`): 0, :data:`LATENCY` or :data:`INSIDE`.

    One latency in each block of ``every`` consecutive numbers, at an offset
    that moves from block to block along the golden-ratio sequence (block
    0's at 0: a hook's first request is timed); one time inside the plugin in
    each block of ``inside_every``, placed the same way on another request.
    Not simply every ``every``-th request: a caller cycling through ``every``
    inputs (or a divisor of it) would then have the same input timed every
    time.  Never both on one request: the guest's clock reads would be in the
    host's measurement.  A tuple: indexing one is the cheapest lookup there
    is on the call path.
    """
    table = [0] * CYCLE
    for block in range(CYCLE // every):
        table[block * every + _golden(block, every)] = LATENCY
    for block in range(CYCLE // inside_every):
        at = block * inside_every + _golden(block, inside_every)
        if table[at]:  # half a latency block on: that block's latency is not there
            at = at - at % every + (at + every // 2) % every
        table[at] = INSIDE
    return tuple(table)


def _golden(block: int, size: int) -> int:
    """An offset in ``0..size-1`` for block number ``block``, spread along the golden-ratio sequence."""
    return (block * 0x9E3779B9 & 0xFFFFFFFF) * size // 2**32


#: What is timed of request number ``n`` of a hook: ``SCHEDULE[n % CYCLE]`` (flags).
SCHEDULE = _schedule(SAMPLE_EVERY, INSIDE_EVERY)
#: Every request timed both ways (the OpenTelemetry recorder reports each one).
EVERY_REQUEST = (LATENCY | INSIDE,) * CYCLE
#: What ``next(calls[hook], WRAP)`` gives once a hook's pass through the schedule is over (truthy: off the fast path).
WRAP = 4


def bucket_of(ns: int) -> int:
    """The bucket holding ``ns`` (a whole number of nanoseconds, >= 0)."""
    if ns < 2 * _SUB:
        return ns
    shift = ns.bit_length() - _SUB_BITS - 1
    return min(shift * _SUB + (ns >> shift), _LAST)


def bucket_bounds(index: int) -> tuple[int, int]:
    """``[low, high)`` in nanoseconds of bucket ``index``."""
    if index < 2 * _SUB:
        return index, index + 1
    shift = index // _SUB - 1
    low = (_SUB + index % _SUB) << shift
    return low, low + (1 << shift)


class Latency(NamedTuple):
    """A distribution of times, in seconds.

    The times are those of a sample of the requests: 1 in
    :data:`SAMPLE_EVERY` for a latency, 1 in :data:`INSIDE_EVERY` for the time
    inside the plugin (see ``docs/metrics.md``).  Percentiles come from a
    histogram of logarithmic buckets: each is within about 7% of the exact
    figure for the sample (never outside the smallest and largest time
    recorded); ``samples``, ``total``, ``mean`` and ``max`` are exact for it.

    Attributes:
        samples: How many items were timed.
        total: Their time, added up.
        mean: ``total / samples`` (0 when nothing was timed).
        p50: The median.
        p99: The 99th percentile.
        max: The longest.
    """

    samples: int = 0
    total: float = 0.0
    mean: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    max: float = 0.0


class HookStats(NamedTuple):
    """What one plugin's implementation of one hook did, from :meth:`~pluginsdk.Host.stats`.

    A *request* is one call of the plugin's implementation, or its share of
    ``host.hook.NAME.map([...])`` (a batch: one crossing for every item).
    Latencies are **per item**: a call is one item; a batch's time is shared
    equally among its items.

    Attributes:
        plugin: The plugin's name.
        hook: The hook's name.
        isolation: The level the plugin runs at.
        calls: Requests made, whatever their outcome (exact; counted as they start).
        items: Items those requests carried (1 per call, a batch's size per batch).
        errors: Requests that failed, for any reason (the plugin raised, a value
            could not cross, a cap was hit, a timeout, a crash...).
        timeouts: Of those, the requests that timed out.
        crashes: Of those, the requests whose worker or sandbox instance died.
        latency: Each item's time as the caller saw it, crossing included, for
            a sample of the requests that succeeded, 1 in :data:`SAMPLE_EVERY`
            (for a streamed result, until its first items).
        inside: Each item's time inside the plugin's own code, as the plugin
            reports it, for a sample of other requests, 1 in :data:`INSIDE_EVERY`
            (a worker or the sandbox measures it; for a stream, the time spent
            producing all its items).  For an ``inprocess`` plugin there is no
            crossing: it equals ``latency`` (one sample, 1 in :data:`SAMPLE_EVERY`).
    """

    plugin: str
    hook: str
    isolation: str
    calls: int
    items: int
    errors: int
    timeouts: int
    crashes: int
    latency: Latency
    inside: Latency

    @property
    def crossing(self) -> float | None:
        """Mean seconds per item spent crossing the boundary (``latency.mean - inside.mean``), or ``None``.

        ``None`` when the plugin reported no time of its own.  Never negative
        (a batch shared among several workers can spend less wall time than
        its workers together).
        """
        if not self.inside.samples or not self.latency.samples:
            return None
        return max(0.0, self.latency.mean - self.inside.mean)


class Histogram:
    """Counts of nanosecond values in fixed logarithmic buckets (bounded memory).

    Not locked: its owner (a :class:`Recorder`) holds the lock.
    """

    __slots__ = ("counts", "max", "total")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.total = 0
        self.max = 0

    @property
    def count(self) -> int:
        """How many values were recorded (added up when asked: one less thing to do per value)."""
        return sum(self.counts)

    def add(self, ns: int, weight: int = 1) -> None:
        """Record ``weight`` values of ``ns`` nanoseconds each (``ns`` >= 0)."""
        # bucket_of(), inlined: this runs on every request.
        if ns < 16:
            self.counts[ns] += weight
        else:
            shift = ns.bit_length() - 4
            index = shift * 8 + (ns >> shift)
            self.counts[index if index < _LAST else _LAST] += weight
        if ns > self.max:
            self.max = ns
        self.total += ns * weight

    def percentile(self, fraction: float) -> int:
        """The value (ns) below which ``fraction`` of the values lie: a bucket's midpoint (never above max)."""
        count = self.count
        if not count:
            return 0
        rank = fraction * count
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if n and seen >= rank:
                if index == _LAST:  # open-ended: the largest value is the one figure known
                    return self.max
                low, high = bucket_bounds(index)
                return min((low + high - 1) // 2, self.max)
        return self.max

    def latency(self) -> Latency:
        """The distribution in seconds."""
        count = self.count
        if not count:
            return Latency()
        return Latency(
            samples=count,
            total=self.total / 1e9,
            mean=self.total / count / 1e9,
            p50=self.percentile(0.5) / 1e9,
            p99=self.percentile(0.99) / 1e9,
            max=self.max / 1e9,
        )


class _HookCounts:
    """What a hook's requests did, besides their count (changed under the recorder's lock)."""

    __slots__ = ("crashes", "errors", "extra_items", "inside", "latency", "timeouts")

    def __init__(self) -> None:
        self.extra_items = self.errors = self.timeouts = self.crashes = 0
        self.latency = Histogram()
        self.inside = Histogram()


class Recorder:
    """One plugin's figures, per hook; safe to use from any thread.

    A request: ``timed = recorder.request(hook)`` as it starts (the host
    inlines it: ``next(calls[hook], WRAP)``, then :meth:`wrapped` if that
    says :data:`WRAP`); if ``timed & LATENCY``, ``start = clock()``, and
    :meth:`ok` once it succeeded; if ``timed & INSIDE``, the plugin is asked
    for its own time, handed to :meth:`inside`; whatever ``timed``,
    :meth:`failed` if it failed, and :meth:`items` for a batch's items
    beyond the first.

    ``calls`` holds an iterator over :data:`SCHEDULE` per hook of the spec
    (``hooks``), made at once so that the host's path never has to make one.
    Why an iterator and not a counter: its ``next()`` allocates nothing and
    touches one object, and on a loaded machine each cold cache line the call
    path touches costs about as much as a few dozen bytecodes.
    """

    __slots__ = ("_cycles", "_hooks", "_lock", "_queue", "calls", "isolation", "plugin", "schedule")

    #: Which requests are timed, by number modulo :data:`CYCLE`.
    SCHEDULE: tuple[int, ...] = SCHEDULE

    def __init__(self, plugin: str, isolation: str, hooks: Iterable[str] = ()) -> None:
        self.plugin = plugin
        self.isolation = isolation
        self.schedule = self.SCHEDULE
        self.calls: dict[str, Iterator[int]] = {hook: iter(self.schedule) for hook in hooks}
        self._cycles: dict[str, int] = {}  # passes through the schedule completed, per hook
        self._hooks: dict[str, _HookCounts] = {}
        self._lock = _thread.allocate_lock()
        # (hook, latency ns, items) of a timed request that succeeded, or (hook, -1 - own ns, items).
        self._queue: deque[tuple[str, int, int]] = deque()

    @property
    def pending(self) -> int:
        """Times queued, not filed yet."""
        return len(self._queue)

    def request(self, hook: str) -> int:
        """Count a request of ``hook``; what to time of it (:data:`LATENCY`, :data:`INSIDE` flags)."""
        timed = next(self.calls.get(hook) or self.track(hook), WRAP)
        return self.wrapped(hook) if timed == WRAP else timed

    def track(self, hook: str) -> Iterator[int]:
        """``hook``'s iterator, made for a hook the recorder was not told of."""
        with self._lock:
            return self.calls.setdefault(hook, iter(self.schedule))

    def wrapped(self, hook: str) -> int:
        """A request found ``hook``'s pass through the schedule over: start the next one; what to time of it."""
        with self._lock:
            it = self.calls[hook]
            if not length_hint(it):  # not renewed meanwhile by another thread that found it over
                it = self.calls[hook] = iter(self.schedule)
                self._cycles[hook] = self._cycles.get(hook, 0) + 1
        return self.request(hook)

    def _counts(self, hook: str) -> _HookCounts:
        counts = self._hooks.get(hook)
        if counts is None:
            counts = self._hooks[hook] = _HookCounts()
        return counts

    def items(self, hook: str, extra: int) -> None:
        """A batch carried ``extra`` items beyond the one a request counts for."""
        with self._lock:
            self._counts(hook).extra_items += extra

    def ok(self, hook: str, start: int, items: int = 1) -> None:
        """A timed request of ``items`` items, started at ``start`` (:func:`clock`), succeeded."""
        queue = self._queue
        queue.append((hook, clock() - start, items))  # atomic: no lock on the caller's path
        if len(queue) >= FOLD_EVERY:
            self.fold()

    def inside(self, hook: str, ns: int, items: int = 1) -> None:
        """The plugin reports ``ns`` nanoseconds in its own code for a timed request of ``items`` items (checked)."""
        queue = self._queue
        queue.append((hook, -1 - ns, items))
        if len(queue) >= FOLD_EVERY:
            self.fold()

    def fold(self) -> None:
        """File the queued times into the histograms."""
        with self._lock:
            queue, popleft = self._queue, self._queue.popleft
            while queue:
                hook, ns, items = popleft()
                counts = self._counts(hook)
                if ns >= 0:
                    _add(counts.latency, ns, items)
                else:
                    _add(counts.inside, -1 - ns, items)

    def failed(self, hook: str, start: int, error: BaseException, items: int = 1) -> None:
        """A request failed with ``error`` (``start``: when, if it was timed, else 0; ``items``: for reports)."""
        with self._lock:
            counts = self._counts(hook)
            counts.errors += 1
            if isinstance(error, PluginTimeout):
                counts.timeouts += 1
            elif isinstance(error, PluginCrashed):
                counts.crashes += 1

    def snapshot(self) -> list[HookStats]:
        """Every hook's figures so far (hooks with requests only), sorted by hook."""
        self.fold()
        with self._lock:
            rows = []
            for hook, it in self.calls.items():
                calls = self._cycles.get(hook, 0) * CYCLE + len(self.schedule) - length_hint(it)
                if not calls:
                    continue
                c = self._counts(hook)
                latency, inside = c.latency.latency(), c.inside.latency()
                rows.append((hook, calls, calls + c.extra_items, c.errors, c.timeouts, c.crashes, latency, inside))
        out = []
        for hook, calls, items, errors, timeouts, crashes, latency, inside in sorted(rows, key=lambda r: r[0]):
            if self.isolation == "inprocess":
                inside = latency  # no boundary: the call is the plugin's own time
            out.append(
                HookStats(self.plugin, hook, self.isolation, calls, items, errors, timeouts, crashes, latency, inside)
            )
        return out


def _add(histogram: Histogram, ns: int, items: int) -> None:
    """A request's time: a batch's is shared equally among its items."""
    if items == 1:
        histogram.add(ns)
    elif items > 1:
        histogram.add(ns // items, items)


def check_mode(metrics: object) -> MetricsMode:
    """``metrics`` if it is one of :data:`METRICS_MODES`; else ``ValueError`` saying what is."""
    if type(metrics) is str:
        for mode in METRICS_MODES:
            if metrics == mode:
                return mode
    raise ValueError(f"metrics must be one of {', '.join(map(repr, METRICS_MODES))}, got {metrics!r}")


def measures(mode: MetricsMode, isolation: str | None) -> bool:
    """Whether a plugin at ``isolation`` is measured under ``mode``."""
    return mode == "all" or (mode == "isolated" and isolation not in (None, "inprocess"))


def timed_impls(recorder: Recorder, impls: Mapping[str, pluggy.HookImpl]) -> dict[str, pluggy.HookImpl]:
    """An in-process plugin's implementations, each wrapped to be measured by ``recorder``.

    The wrapper has the implementation's own argument names (pluggy reads
    them), and turns an exception into :class:`~pluginsdk.PluginHookError`
    itself, as the host does for a call through a placeholder.
    """
    import pluggy

    from ._placeholders import make_impl_function

    out = {}
    for hook, impl in impls.items():
        if hasattr(impl.function, "__pluginsdk_coroutine__"):  # async def: awaited by host.ahook, not timed here
            out[hook] = impl
            continue
        function = make_impl_function(hook, impl.argnames, _timed(recorder, hook, impl.function))
        out[hook] = pluggy.HookImpl(impl.plugin, impl.plugin_name, function, impl.opts)
    return out


def _timed(recorder: Recorder, hook: str, function: Callable[..., Any]) -> Callable[[tuple[Any, ...]], Any]:
    from ._dispatch import hook_error

    plugin = recorder.plugin
    calls = recorder.calls
    recorder.track(hook)

    def call(args: tuple[Any, ...]) -> Any:
        timed = next(calls[hook], WRAP)
        if timed == WRAP:
            timed = recorder.wrapped(hook)
        timed &= LATENCY  # no boundary: no time inside to ask for
        start = clock() if timed else 0
        try:
            result = function(*args)
        except Exception as exc:
            recorder.failed(hook, start, exc)
            raise hook_error(plugin, hook, exc) from exc
        if timed:
            recorder.ok(hook, start)
        return result

    return call
