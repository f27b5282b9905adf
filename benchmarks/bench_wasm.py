"""Speed and footprint of the ``wasm`` backend, with in-process and ``process`` for scale.

Run from the repo root: ``python benchmarks/bench_wasm.py [--quick] [--json PATH]``.
Prints one table of medians and writes them, with verdicts against the
targets, to ``benchmarks/results/wasm.json`` (or PATH).  Needs the ``wasm`` extra (wasmtime + the interpreter).

Targets (issue): tiny call round trip <= 100 µs; 1,000 items through one
``call_batch`` <= 5 µs per item; instance start to first answered call
<= 150 ms.  Also reported: the cold compile of the interpreter, loading the
cached compiled module, and the host RSS each warm instance adds.

The cache directory is a fresh temporary one (``PLUGINSDK_CACHE_DIR``), so
the cold compile is real; everything after it uses that cache.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "wasm.json"
sys.path.insert(0, str(ROOT))
# Children (process workers) must run as users' would: no PYTHON* settings
# from this shell, such as PYTHONDONTWRITEBYTECODE.
for _name in [k for k in os.environ if k.startswith("PYTHON")]:
    del os.environ[_name]
sys.dont_write_bytecode = False

PLUGIN = """
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    return text.upper()
"""


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _per_call(fn: Callable[[], Any], calls: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean time of ``calls`` calls, in µs."""
    fn()
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t) / calls * 1e6)
    return statistics.median(samples)


def _median_ms(fn: Callable[[], Any], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--json", default=str(RESULTS), help=f"write the results here (default {RESULTS})")
    args = parser.parse_args()
    rounds = 5 if args.quick else 15
    work = Path(tempfile.mkdtemp(prefix="bench-wasm-"))
    os.environ["PLUGINSDK_CACHE_DIR"] = str(work / "cache")

    from pluginsdk.backends.base import DEFAULT_LIMITS, Limits, PluginTarget
    from pluginsdk.backends.wasm import WasmBackend
    from tests.plugin_factory import install_plugin
    from tests.textkit import SPEC

    reason = WasmBackend.unavailable_reason()
    if reason is not None:
        print(f"wasm backend unavailable: {reason}")
        return 1
    site = work / "site"
    pkg = install_plugin(site, "upper", PLUGIN, isolation="wasm")
    sys.path.insert(0, str(site))
    log = logging.getLogger("bench")

    def target(workers: int = 1, **options: Any) -> PluginTarget:
        return PluginTarget(
            name="upper",
            dist="textkit-upper",
            module="textkit_upper",
            attr=None,
            package_dir=str(pkg),
            path_entry=str(site),
            hooks={"transform": ("text",)},
            limits=Limits(workers=workers).merged(DEFAULT_LIMITS),
            spec=SPEC,
            options=options,
        )

    # (case, median, unit, target text, highest passing median or None)
    rows: list[tuple[str, float, str, str, float | None]] = []

    # -- cold compile, cached load ------------------------------------------------
    import wasmtime

    from pluginsdk._wasm import cache
    from pluginsdk._wasm.interpreter import locate

    interp = locate()
    t = time.perf_counter()
    cache.warm()
    rows.append(("cold start: compile + stage + bytecode warm-up", (time.perf_counter() - t) * 1e3, "ms", "", None))
    if not args.quick:  # the cold start above already includes it
        t = time.perf_counter()
        cache.compile_module(interp, work / "again.cwasm")
        rows.append(("cold compile of the interpreter alone", (time.perf_counter() - t) * 1e3, "ms", "", None))
    sandbox = cache.prepare()
    load = _median_ms(
        lambda: wasmtime.Module.deserialize_file(wasmtime.Engine(cache.engine_config()), str(sandbox.module_file)),
        rounds * 2,
    )
    rows.append(("cached module load (new engine + deserialize_file)", load, "ms", "", None))

    # -- start to first call -------------------------------------------------------
    def bring_up() -> float:
        """ms from a new backend to its first answer (closing it is not counted)."""
        t = time.perf_counter()
        b = WasmBackend(target(), log=log)
        b.call("transform", ("x",))
        elapsed = (time.perf_counter() - t) * 1e3
        b.close()
        return elapsed

    bring_up()
    start = statistics.median(bring_up() for _ in range(rounds * 2))
    rows.append(("instance start to first answered call", start, "ms", "<= 150 ms", 150.0))

    # -- tiny calls and batches ------------------------------------------------------
    import textkit_upper

    direct = textkit_upper.transform
    rows.append(("tiny call, in-process direct", _per_call(lambda: direct("hello"), 20000, rounds), "µs", "", None))
    items = [(f"item {i}",) for i in range(1000)]
    wasm = WasmBackend(target(), log=log)
    wasm.start()
    rows.append(
        (
            "tiny call, wasm",
            _per_call(lambda: wasm.call("transform", ("hello",)), 500, rounds),
            "µs",
            "<= 100 µs",
            100.0,
        )
    )
    rows.append(
        (
            "1,000-item call_batch per item, wasm",
            _per_call(lambda: wasm.call_batch("transform", items), 1, rounds) / 1000,
            "µs",
            "<= 5 µs",
            5.0,
        )
    )
    wasm.close()
    nospin = WasmBackend(target(wasm_spin=0.0), log=log)
    nospin.start()
    rows.append(
        (
            "tiny call, wasm, no spinning (poll only)",
            _per_call(lambda: nospin.call("transform", ("hello",)), 500, rounds),
            "µs",
            "",
            None,
        )
    )
    nospin.close()
    try:
        from pluginsdk.backends.process import ProcessBackend
    except ImportError:
        ProcessBackend = None  # type: ignore[assignment,misc]
    if ProcessBackend is not None:
        proc = ProcessBackend(target(), log=log)
        proc.start()
        rows.append(
            ("tiny call, process", _per_call(lambda: proc.call("transform", ("hello",)), 500, rounds), "µs", "", None)
        )
        rows.append(
            (
                "1,000-item call_batch per item, process",
                _per_call(lambda: proc.call_batch("transform", items), 1, rounds) / 1000,
                "µs",
                "",
                None,
            )
        )
        proc.close()

    # -- footprint -------------------------------------------------------------------
    n = 8
    gc.collect()
    before = _rss_mb()
    pool = WasmBackend(target(workers=n, prewarm=True), log=log)
    pool.start()
    pool.call_batch("transform", items)
    gc.collect()
    rows.append((f"host RSS per warm instance ({n} instances)", (_rss_mb() - before) / n, "MiB", "", None))
    pool.close()

    width = max(len(r[0]) for r in rows)
    runtime = f"{interp.name}, wasmtime {wasmtime_version()}"
    print(f"wasm backend: {runtime}, host Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"{'measure'.ljust(width)}  {'median':>10}  unit  target")
    for name, value, unit, goal, _ in rows:
        print(f"{name.ljust(width)}  {value:10.1f}  {unit:<4}  {goal}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "wasm",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "runtime": runtime,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "executable": sys.executable,
            "cpus": os.cpu_count(),
            "loadavg": list(os.getloadavg()),
        },
        "rows": [_row(*r) for r in rows],
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"results written to {out}")
    return 0


def _row(case: str, median: float, unit: str, goal: str, limit: float | None) -> dict[str, Any]:
    """A result row; targets are absolute, so the anchor is the target's limit itself."""
    key = {"µs": "median_us", "ms": "median_ms", "MiB": "median_mib"}[unit]
    ratio = median / limit if limit else None
    verdict = "-" if ratio is None else ("PASS" if ratio <= 1.0 else "MISS")
    return {"case": case, key: median, "anchor": limit, "ratio": ratio, "target": goal, "verdict": verdict}


def wasmtime_version() -> str | None:
    from pluginsdk._wasm.interpreter import wasmtime_version as version

    return version()


if __name__ == "__main__":
    sys.exit(main())
