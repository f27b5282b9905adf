"""Per-plugin metrics: calls, items, errors, timeouts, crashes and latency, per plugin and hook.

The host keeps one :class:`Recorder` per plugin it measures (see
``Host(metrics=...)``) and records every request around its call: a single
call, or one plugin's share of ``map()`` (a batch).  An isolated plugin's
guest also reports the time its own code took (the fourth field of its
``OK``/``END`` replies, see :mod:`pluginsdk.guest.protocol`), which the
pooled backend hands to :meth:`Recorder.inside`.

Cost is what decides the layout: recording is one lock and a few integer
operations per request (no allocation, no clock but the host's own two
reads), and latencies go to a :class:`Histogram` of fixed logarithmic
buckets, so memory is bounded whatever the number of calls.
:meth:`~pluginsdk.Host.stats` turns it all into :class:`HookStats` records.
"""

from __future__ import annotations

import _thread
from collections import deque
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ._errors import PluginCrashed, PluginTimeout

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import pluggy

__all__ = ["METRICS_MODES", "HookStats", "Histogram", "Latency", "MetricsMode", "Recorder", "check_mode"]

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
#: A recorder folds its queue itself once it holds this many records.
FOLD_EVERY = 256


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

    Percentiles come from a histogram of logarithmic buckets: each is within
    about 7% of the exact figure (never outside the smallest and largest
    time recorded); ``samples``, ``total``, ``mean`` and ``max`` are exact.

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
        calls: Requests made, whatever their outcome.
        items: Items those requests carried (1 per call, a batch's size per batch).
        errors: Requests that failed, for any reason (the plugin raised, a value
            could not cross, a cap was hit, a timeout, a crash...).
        timeouts: Of those, the requests that timed out.
        crashes: Of those, the requests whose worker or sandbox instance died.
        latency: Each item's time as the caller saw it, crossing included, for
            requests that succeeded (for a streamed result, until its first items).
        inside: Each item's time inside the plugin's own code, as the plugin
            reports it (a worker or the sandbox measures it; for a stream, the
            time spent producing all its items).  For an ``inprocess`` plugin
            there is no crossing: it equals ``latency``.
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
    __slots__ = ("calls", "crashes", "errors", "inside", "items", "latency", "timeouts")

    def __init__(self) -> None:
        self.calls = self.items = self.errors = self.timeouts = self.crashes = 0
        self.latency = Histogram()
        self.inside = Histogram()


class Recorder:
    """One plugin's figures, per hook; safe to use from any thread.

    ``start = clock()`` before a request, then :meth:`ok` or :meth:`failed`
    after it; :meth:`inside` when the plugin reports its own time.

    What a request costs its caller is one append to a queue
    (``deque.append`` is atomic: no lock on the reply's path).  The queue is
    folded into the counters and histograms by :meth:`fold`, which the pooled
    backend calls while it waits for a worker's reply (time the caller spends
    blocked anyway), and every :data:`FOLD_EVERY` records or on a snapshot
    otherwise.
    """

    __slots__ = ("_hooks", "_lock", "_queue", "isolation", "plugin")

    def __init__(self, plugin: str, isolation: str) -> None:
        self.plugin = plugin
        self.isolation = isolation
        self._hooks: dict[str, _HookCounts] = {}
        self._lock = _thread.allocate_lock()
        # (hook, latency ns, items) of a request that succeeded, or (hook, -1 - own ns, items).
        self._queue: deque[tuple[str, int, int]] = deque()

    @property
    def pending(self) -> int:
        """Records waiting to be folded in."""
        return len(self._queue)

    def _counts(self, hook: str) -> _HookCounts:
        counts = self._hooks.get(hook)
        if counts is None:
            counts = self._hooks[hook] = _HookCounts()
        return counts

    def ok(self, hook: str, start: int, items: int = 1) -> None:
        """A request of ``items`` items, started at ``start`` (:func:`clock`), succeeded."""
        queue = self._queue
        queue.append((hook, clock() - start, items))
        if len(queue) >= FOLD_EVERY:  # nobody folded meanwhile (in-process plugins): memory stays bounded
            self.fold()

    def inside(self, hook: str, ns: int, items: int = 1) -> None:
        """The plugin reports ``ns`` nanoseconds in its own code for ``items`` items (already checked)."""
        self._queue.append((hook, -1 - ns, items))

    def failed(self, hook: str, start: int, error: BaseException, items: int = 1) -> None:
        """A request of ``items`` items, started at ``start``, failed with ``error``."""
        with self._lock:
            counts = self._counts(hook)
            counts.calls += 1
            counts.items += items
            counts.errors += 1
            if isinstance(error, PluginTimeout):
                counts.timeouts += 1
            elif isinstance(error, PluginCrashed):
                counts.crashes += 1

    def fold(self, wait: bool = True) -> None:
        """Move queued records into the counters and histograms (``wait=False``: not if another thread is at it)."""
        if not self._lock.acquire(wait):
            return
        try:
            queue, hooks = self._queue, self._hooks
            while queue:
                hook, ns, items = queue.popleft()
                counts = hooks.get(hook) or self._counts(hook)
                if ns >= 0:
                    counts.calls += 1
                    counts.items += items
                    histogram = counts.latency
                else:
                    ns = -1 - ns
                    histogram = counts.inside
                if items == 1:
                    histogram.add(ns)
                elif items > 1:
                    histogram.add(ns // items, items)
        finally:
            self._lock.release()

    def snapshot(self) -> list[HookStats]:
        """Every hook's figures so far, sorted by hook."""
        self.fold()
        with self._lock:
            rows = [
                (hook, c.calls, c.items, c.errors, c.timeouts, c.crashes, c.latency.latency(), c.inside.latency())
                for hook, c in self._hooks.items()
            ]
        out = []
        for hook, calls, items, errors, timeouts, crashes, latency, inside in sorted(rows, key=lambda r: r[0]):
            if self.isolation == "inprocess":
                inside = latency  # no boundary: the call is the plugin's own time
            out.append(
                HookStats(self.plugin, hook, self.isolation, calls, items, errors, timeouts, crashes, latency, inside)
            )
        return out


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

    from ._dispatch import make_impl_function

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

    def call(args: tuple[Any, ...]) -> Any:
        start = clock()
        try:
            result = function(*args)
        except Exception as exc:
            recorder.failed(hook, start, exc)
            raise hook_error(plugin, hook, exc) from exc
        recorder.ok(hook, start)
        return result

    return call
