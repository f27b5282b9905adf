"""What per-plugin metrics cost: the same host with metrics on and off, side by side in one run.

Run from the repo root: ``python benchmarks/bench_stats.py [--quick] [--base REV]``.
Writes ``benchmarks/results/stats.json``.

One installed plugin (``add(a, b)``, one worker) is called through a real
:class:`~pluginsdk.Host` (discovery, policy, pluggy, the SDK's dispatch) in a
driver process, in blocks of tiny calls or one 1,000-item ``map``:

* ``on`` / ``off``: for an isolated plugin, the *same* host, worker and
  channel with the plugin's recorder attached or detached between blocks, so
  nothing but the recording differs (two processes differ by several percent
  on a small VM, depending on where the scheduler puts them and their
  workers); for an in-process plugin, two hosts in one driver,
  ``metrics="all"`` and ``"off"``.  Everything metrics cost is in ``on``:
  counting every request, the host's clock and bookkeeping on the 1 in
  ``SAMPLE_EVERY`` whose latency is timed, and the guest's own time on the
  1 in ``INSIDE_EVERY`` that asks for it (with ``off`` the guest reads no
  clock at all);
* the guest's time field: its parts timed apart (two clock reads and the
  encoding of the longer ``OK`` frame in the guest, its decoding on the host),
  per request that asks for it and per call (1 in ``INSIDE_EVERY``); and, for
  information, today's tree against ``--base`` (the last commit before
  metrics) in two processes, both copies outside the project.

The parent asks for the blocks in a new random order every round, so machine
noise hits all alike; a verdict uses the paired ratio, the median over rounds
of the ratio within each round.

Targets (issue 13, item 5): metrics (``on`` against ``off``, the time field
included) cost at most 2% of a tiny ``process`` or ``wasm`` call, and of a
1,000-item ``map``.  For an ``inprocess`` plugin the
ratio is reported, not judged: it is why metrics are opt-in there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "stats.json"
#: The last commit before per-plugin metrics (guests sent no time of their own).
BASE = "5b79d39"
TARGET = 1.02
sys.path.insert(0, str(ROOT))

from pluginsdk._stats import INSIDE_EVERY  # noqa: E402
from tests.plugin_factory import install_plugin  # noqa: E402

PLUGIN = """
from pluginsdk import hookimpl

@hookimpl
def add(a, b):
    return a + b
"""

# Runs in a child with one tree on sys.path: builds a Host, then answers "call N SIDE" and "map N SIDE" on stdin.
# SIDE "on"/"off" switches metrics for the next block (an isolated plugin: the same host, worker and
# channel, with its recorder attached or not; in-process: two hosts, metrics "all" and "off").
DRIVER = """
import json, sys, time
tree, site, level, metrics = sys.argv[1:5]
sys.path[:0] = [tree, site]
from pluginsdk import Host, HookSpec, Limits, Policy, hookspec

class Hooks:
    @hookspec
    def add(self, a: int, b: int) -> int: ...

spec = HookSpec("benchkit", version="1.0", hooks=Hooks)

def make(metrics):
    options = {} if metrics == "old" else {"metrics": metrics}
    host = Host(spec, policy=Policy(limits=Limits(workers=1, timeout=60.0)), path=[site], force_isolation=level,
                use_index=False, **options)
    assert host.hook.add(a=1, b=2) == [3]
    return host

host = make(metrics)
hosts = {"on": host, "off": host}
if metrics == "all" and level == "inprocess":
    hosts["off"] = make("off")
elif metrics == "all":
    plugin = host._plugins["adder"]
    recorder = plugin.stats
    assert recorder is not None and plugin.backend is not None
print("ready", flush=True)
for line in sys.stdin:
    what, n, side = line.split()
    n = int(n)
    if metrics == "all" and level != "inprocess":
        plugin.stats = plugin.backend.stats = recorder if side == "on" else None
    add = hosts[side].hook.add
    if what == "call":
        t = time.perf_counter()
        for i in range(n):
            add(a=i, b=1)
        per = (time.perf_counter() - t) / n
    else:
        kwargs = [{"a": i, "b": 1} for i in range(n)]
        t = time.perf_counter()
        out = add.map(kwargs)
        per = (time.perf_counter() - t) / n
        assert out[-1] == [n]
    print(json.dumps(per * 1e6), flush=True)
if metrics == "all":
    if level != "inprocess":
        plugin.stats = plugin.backend.stats = recorder  # the last block may have detached it
    (row,) = host.stats()
    assert row.calls > 0 and 0 < row.latency.samples <= row.items, row
    if level != "inprocess":
        assert row.inside.samples > 0, row
for h in set(hosts.values()):
    h.close()
"""


class Driver:
    def __init__(self, tree: Path, site: Path, level: str, metrics: str, cache: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PLUGINSDK_CACHE_DIR"] = str(cache)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(tree), str(site), level, metrics],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"driver for {tree} ({level}, metrics {metrics}) did not start: {line!r}")

    def ask(self, what: str, n: int, side: str) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{what} {n} {side}\n")
        self.proc.stdin.flush()
        return float(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        if self.proc.wait(timeout=60):
            raise RuntimeError(f"a driver failed (exit {self.proc.returncode})")


def old_tree(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "archive", rev, "pluginsdk"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def wasm_available() -> bool:
    from pluginsdk.testing import isolation_unavailable

    return isolation_unavailable("wasm") is None


def row(case: str, median: float, anchor: float, ratio: float, judged: bool, note: str) -> dict[str, Any]:
    return {
        "case": case,
        "median_us": median,
        "anchor": anchor,
        "ratio": ratio,
        "target": f"<= {TARGET:.2f}x" if judged else "reported",
        "verdict": ("PASS" if ratio <= TARGET else "MISS") if judged else "INFO",
        "note": note,
    }


Contender = tuple[Driver, str]  # a driver, and the side it runs ("on": metrics on)


def measure(contenders: dict[str, Contender], what: str, n: int, rounds: int) -> dict[str, list[float]]:
    """``rounds`` samples of each contender, asked in a new random order every round."""
    for d, side in contenders.values():
        d.ask(what, n, side)  # warm-up: every worker and thread is up
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        order = list(contenders)
        random.shuffle(order)
        for name in order:
            d, side = contenders[name]
            samples[name].append(d.ask(what, n, side))
    return samples


def field_cost(rounds: int) -> dict[str, float]:
    """µs the time field adds to one timed request, by its parts: the guest's two clock reads and encoding
    (msgpack's C encoder in a worker; the sandbox's pure-Python one, timed here on the host's
    CPython, which runs it faster than the sandbox does), and the host's decoding of the larger frame.
    """
    from time import perf_counter, perf_counter_ns

    from pluginsdk import codec
    from pluginsdk.guest.fastcodec import make_fast_pack

    fast_pack = make_fast_pack(lambda obj: bytes(codec.make_packer()(obj)))
    n = 20_000

    def per_call(encode: Any, timed: bool) -> float:
        t = perf_counter()
        for i in range(n):
            if timed:
                start = perf_counter_ns()
                msg = [11, 5, i, perf_counter_ns() - start]
            else:
                msg = [11, 5, i]
            codec.decode(encode(msg))
        return (perf_counter() - t) / n * 1e6

    out: dict[str, list[float]] = {"process": [], "wasm": []}
    for _ in range(rounds):
        out["process"].append(per_call(codec.encode, True) - per_call(codec.encode, False))
        out["wasm"].append(per_call(fast_pack, True) - per_call(fast_pack, False))
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--base", default=BASE, help="the code before metrics (default: %(default)s)")
    args = parser.parse_args()
    rounds = 31 if args.quick else 201
    calls = 100 if args.quick else 200
    rows = []
    # (level, what, n, (measured, anchor), judged?, label)
    cases = [
        ("process", "call", calls, ("on", "off"), True, "tiny call, metrics on vs off"),
        ("process", "map", 1000, ("on", "off"), True, "1,000-item map, per item, metrics on vs off"),
        ("process", "call", calls, ("copy", "old"), False, f"tiny call, today's tree vs {args.base} (two processes)"),
        ("wasm", "call", calls // 2, ("on", "off"), True, "tiny call, metrics on vs off"),
        ("wasm", "call", calls // 2, ("copy", "old"), False, f"tiny call, today's tree vs {args.base} (two processes)"),
        ("inprocess", "call", calls * 10, ("on", "off"), False, 'tiny call, metrics="all" vs off (opt-in)'),
    ]
    levels = ["process", "inprocess"] + (["wasm"] if wasm_available() else [])
    tiny_call: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pluginsdk-bench-stats-") as tmp:
        work = Path(tmp)
        (work / "old").mkdir()
        shutil.copytree(ROOT / "pluginsdk", work / "copy" / "pluginsdk", ignore=shutil.ignore_patterns("__pycache__"))
        site = work / "site"
        site.mkdir()
        manifest = '[plugin]\nrequires = "benchkit>=1.0"\nhooks = ["add"]\n'
        install_plugin(site, "adder", textwrap.dedent(PLUGIN), module="benchkit_adder", dist="benchkit-adder",
                       group="benchkit.plugins", hooks=("add",), manifest=manifest)  # fmt: skip
        trees = {"old": old_tree(args.base, work / "old"), "copy": work / "copy", "new": ROOT}
        for level in levels:
            level_cases = [c for c in cases if c[0] == level]
            wanted = {s for c in level_cases for s in c[3]}
            drivers = {
                name: Driver(trees[name], site, level, mode, work / f"cache-{name}")
                for name, mode in (("new", "all"), ("copy", "off"), ("old", "old"))
                if name == "new" or name in wanted
            }
            contenders: dict[str, Contender] = {"on": (drivers["new"], "on"), "off": (drivers["new"], "off")}
            contenders.update((name, (drivers[name], "off")) for name in ("copy", "old") if name in drivers)
            try:
                done: dict[tuple[str, int], dict[str, list[float]]] = {}
                for _, what, n, (measured, anchor), judged, label in level_cases:
                    samples = done.get((what, n))
                    if samples is None:
                        samples = done[(what, n)] = measure(contenders, what, n, rounds)
                    new, base = samples[measured], samples[anchor]
                    if (what, measured) == ("call", "on"):
                        tiny_call[level] = statistics.median(base)
                    paired = statistics.median(b / a for a, b in zip(base, new))
                    note = f"paired ratio over {rounds} rounds of {n}; {anchor} median {statistics.median(base):.2f} µs"
                    rows.append(row(f"{level}: {label}", statistics.median(new), statistics.median(base), paired,
                                    judged, note))  # fmt: skip
                    print(f"{rows[-1]['case']}: {statistics.median(new):.2f} µs vs {statistics.median(base):.2f} µs,"
                          f" paired {paired:.4f}x")  # fmt: skip
            finally:
                for d in drivers.values():
                    d.close()
    added = field_cost(9 if args.quick else 31)
    for level, extra in added.items():
        if level not in tiny_call:
            continue
        call = tiny_call[level]
        per_call = extra / INSIDE_EVERY  # only those requests ask for it
        where = " (the guest's pure-Python encoder, on the host's CPython)" if level == "wasm" else ""
        note = (
            f"+{extra:.3f} µs a request that asks for it (two clock reads, the encoding and decoding of the"
            f" longer OK frame{where}), 1 request in {INSIDE_EVERY}; part of the on/off row above"
        )
        case = f"{level}: the guest's time field, per call (its parts, timed apart)"
        rows.append(row(case, call + per_call, call, (call + per_call) / call, False, note))
        print(f"{rows[-1]['case']}: +{extra:.3f} µs a request asking, +{per_call:.4f} µs a call, on {call:.2f} µs")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "stats",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg": list(os.getloadavg()),
        },
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"results written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
