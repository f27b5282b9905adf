"""Concurrent tiny calls, sync and async, against a bare per-call floor and the SDK without coalescing.

Run from the repo root: ``python benchmarks/bench_async.py [--quick]``.
Prints one table and writes medians, with verdicts, to
``benchmarks/results/async.json`` (the format of ``bench_process.py``).

Contenders, each driving ``N`` concurrent callers (1, 2, 8, 32) at a
``process`` plugin with 2 workers (this machine has 2 cores), measured as
aggregate µs per call (wall time / calls; lower is better), rounds
interleaved so machine noise hits all alike:

* ``floor``: N threads, each with a bare child of its own echoing frames
  (one round trip per call: ``bench_process``'s floor);
* ``handoff``: N threads handing each call to one answering thread and
  waiting for it, with no process, no encoding and no work at all: what any
  design in which a blocked thread is woken with its answer pays per call
  (reported, to read the threads' figures against);
* ``today``: N threads calling the SDK with coalescing off (``Host(coalesce=False)``);
* ``threads``: N threads calling the SDK (coalescing on, the default);
* ``tasks``: N asyncio tasks awaiting ``host.ahook`` on one event loop.

Targets (issue 14): with 8 or more callers, at least 3x the floor's best
figure and at least 5x today's SDK; a single sync caller within 1.05x of
today's.  Reported: event-loop lag (max and p99 lateness of a 1 ms
heartbeat) while a thousand awaited calls to a slow plugin run, and while the
same calls run blocking in the loop (what an async host gets without ``ahook``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_process  # noqa: E402  (the bare child, rows, the results format)

from pluginsdk import Host, Limits, Policy  # noqa: E402
from pluginsdk.spec import HookSpec, hookspec  # noqa: E402
from tests.plugin_factory import install_plugin  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "async.json"
CALLERS = (1, 2, 8, 32)


class Hooks:
    @hookspec
    def add(self, a: int, b: int) -> int:  # type: ignore[empty-body]
        """Add two ints."""

    @hookspec
    def nap(self, seconds: float) -> float:  # type: ignore[empty-body]
        """Sleep, then answer."""


SPEC = HookSpec("asyncbench", version="1.0", hooks=Hooks)
PLUGIN = """
import time
from pluginsdk import hookimpl

@hookimpl
def add(a, b):
    return a + b

@hookimpl
def nap(seconds):
    time.sleep(seconds)
    return seconds
"""
MANIFEST = """\
[plugin]
requires = "asyncbench>=1.0"
isolation = "process"
hooks = ["add", "nap"]
"""


def _threads(n: int, calls: int, call: Callable[[int], object]) -> float:
    """Seconds for ``n`` threads to make ``calls`` calls in all (``call(i)`` is thread ``i``'s)."""
    per = calls // n
    start = threading.Barrier(n + 1)

    def run(i: int) -> None:
        start.wait()
        for _ in range(per):
            call(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


class Handoff:
    """One thread answering the calls other threads hand it, in batches: the floor of a woken caller."""

    def __init__(self) -> None:
        self.queue: list[Any] = []
        self.cond = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.local = threading.local()

    def call(self) -> None:
        lock = getattr(self.local, "lock", None)
        if lock is None:
            lock = self.local.lock = threading.Lock()
        lock.acquire()
        with self.cond:
            self.queue.append(lock)
            self.cond.notify()
        with lock:  # released by the answering thread
            pass

    def _serve(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.stopped:
                    self.cond.wait(1.0)
                if self.stopped:
                    return
                batch, self.queue = self.queue, []
            for lock in batch:
                lock.release()

    def close(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()
        self.thread.join(5)


def _tasks(host: Host, n: int, calls: int) -> float:
    per = calls // n

    async def one() -> None:
        add = host.ahook.add
        for _ in range(per):
            await add(a=3, b=4)

    async def main() -> float:
        await host.ahook.add(a=1, b=2)
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - t0

    return asyncio.run(main())


def throughput(site: Path, rounds: int, calls: int) -> dict[int, dict[str, float]]:
    """{callers: {contender: µs per call, aggregate}}, medians over interleaved rounds."""
    policy = Policy(limits=Limits(workers=2))
    hosts = {
        "today": Host(SPEC, path=[str(site)], policy=policy, coalesce=False, use_index=False),
        "ours": Host(SPEC, path=[str(site)], policy=policy, use_index=False),
    }
    floors = [bench_process.BareChild() for _ in range(max(CALLERS))]
    handoff = Handoff()
    try:
        for host in hosts.values():
            host.hook.add.map([{"a": 1, "b": 2}] * 100)  # both workers up
        out: dict[int, dict[str, float]] = {}
        for n in CALLERS:
            fns: dict[str, Callable[[], float]] = {
                "floor": lambda n=n: _threads(n, calls, lambda i: floors[i].call()),
                "handoff": lambda n=n: _threads(n, calls, lambda i: handoff.call()),
                "today": lambda n=n: _threads(n, calls, lambda i: hosts["today"].hook.add(a=3, b=4)),
                "threads": lambda n=n: _threads(n, calls, lambda i: hosts["ours"].hook.add(a=3, b=4)),
                "tasks": lambda n=n: _tasks(hosts["ours"], n, calls),
            }
            samples: dict[str, list[float]] = {k: [] for k in fns}
            order = list(fns)
            for _ in range(rounds):
                for name in order:
                    samples[name].append(fns[name]() / calls * 1e6)
                order.reverse()
            out[n] = {k: statistics.median(v) for k, v in samples.items()}
            print(f"  {n:>2} callers: " + ", ".join(f"{k} {v:.1f} µs" for k, v in out[n].items()), flush=True)
        return out
    finally:
        for host in hosts.values():
            host.close()
        for floor in floors:
            floor.close()
        handoff.close()


def single(site: Path, rounds: int, n: int) -> dict[str, float]:
    """One sync caller, coalescing off and on (paired, alternating): µs per call."""
    policy = Policy(limits=Limits(workers=2))
    hosts = {
        "today": Host(SPEC, path=[str(site)], policy=policy, coalesce=False, use_index=False),
        "ours": Host(SPEC, path=[str(site)], policy=policy, use_index=False),
    }
    try:
        fns = {k: (lambda h=h: h.hook.add(a=3, b=4)) for k, h in hosts.items()}
        return bench_process.interleaved_us(fns, n, rounds=rounds)
    finally:
        for host in hosts.values():
            host.close()


def loop_lag(site: Path, calls: int, nap: float) -> dict[str, tuple[float, float]]:
    """Lateness of a 1 ms heartbeat (max, p99, in ms) while ``calls`` slow calls run: awaited, and blocking."""
    policy = Policy(limits=Limits(workers=4, timeout=60))
    out: dict[str, tuple[float, float]] = {}
    with Host(SPEC, path=[str(site)], policy=policy, use_index=False) as host:
        for mode in ("ahook", "blocking"):

            async def main(mode: str = mode) -> list[float]:
                late: list[float] = []
                stop = asyncio.Event()

                async def heartbeat() -> None:
                    while not stop.is_set():
                        t = time.perf_counter()
                        await asyncio.sleep(0.001)
                        late.append((time.perf_counter() - t - 0.001) * 1e3)

                beat = asyncio.create_task(heartbeat())
                await asyncio.sleep(0.01)
                if mode == "ahook":
                    tasks = []
                    for i in range(calls):  # requests arriving, 50 a tick (not 1,000 tasks' first steps in one)
                        tasks.append(asyncio.create_task(host.ahook.nap(seconds=nap)))
                        if i % 50 == 49:
                            await asyncio.sleep(0)
                    await asyncio.gather(*tasks)
                else:
                    for _ in range(calls // 10):  # a tenth: blocking calls run one after another
                        host.hook.nap(seconds=nap)
                        await asyncio.sleep(0)
                stop.set()
                await beat
                return late

            late = sorted(asyncio.run(main()))
            out[mode] = (late[-1], late[int(len(late) * 0.99)])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    opts = parser.parse_args()
    rounds = 3 if opts.quick else 7
    calls = 2000 if opts.quick else 8000
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        install_plugin(site, "b", PLUGIN, module="asyncbench_b", manifest=MANIFEST, group="asyncbench.plugins")
        sys.path.insert(0, str(site))
        print("aggregate µs per call (lower is better):", flush=True)
        tp = throughput(site, rounds, calls)
        one = single(site, rounds=9 if opts.quick else 15, n=500 if opts.quick else 3000)
        lag = loop_lag(site, calls=200 if opts.quick else 1000, nap=0.005)

    out: list[dict[str, Any]] = []
    row = bench_process.row
    out.append(row("single sync caller: coalescing on vs off", one["ours"], "us", one["today"], 1.05, "<= 1.05x"))
    for n in CALLERS:
        r = tp[n]
        best_floor = min(tp[k]["floor"] for k in CALLERS)  # the floor's best figure, over every caller count
        for kind in ("threads", "tasks"):
            if n >= 8:
                out.append(row(f"{n} {kind}: vs the floor's best", r[kind], "us", best_floor, 1 / 3, "<= 0.33x (3x)"))
                out.append(row(f"{n} {kind}: vs today's SDK", r[kind], "us", r["today"], 1 / 5, "<= 0.2x (5x)"))
            else:
                out.append(row(f"{n} {kind}: vs today's SDK", r[kind], "us", r["today"]))
        out.append(row(f"{n} threads: bare floor", r["floor"], "us"))
        # No target: read the threads' rows against it (a blocked caller woken per call pays at least this).
        best = min(tp[k]["floor"] for k in CALLERS)
        out.append(row(f"{n} threads: handoff floor (no crossing) vs the floor's best", r["handoff"], "us", best))
    for mode, (worst, p99) in lag.items():
        out.append(row(f"event-loop lag, max ({mode})", worst, "ms"))
        out.append(row(f"event-loop lag, p99 ({mode})", p99, "ms"))

    print()
    kinds = ("floor", "handoff", "today", "threads", "tasks")
    print(f"{'callers':>7}  " + "  ".join(f"{k:>8}" for k in kinds) + "   (aggregate µs per call)")
    for n in CALLERS:
        r = tp[n]
        print(f"{n:>7}  " + "  ".join(f"{r[k]:>8.2f}" for k in kinds))
    print(f"single sync caller: {one['ours']:.1f} µs vs {one['today']:.1f} µs ({one['ours'] / one['today']:.3f}x)")
    for mode, (worst, p99) in lag.items():
        print(f"event-loop lag with {mode}: max {worst:.2f} ms, p99 {p99:.2f} ms")
    for r in out:
        if r["verdict"] != "-":
            print(f"{r['case']}: {r['ratio']:.3f}x ({r['target']}) {r['verdict']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "async",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": opts.quick,
        "machine": bench_process.machine(),
        "rows": out,
    }
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"results written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
