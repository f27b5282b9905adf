"""Speed and footprint of the ``wasm`` backend, with in-process and ``process`` for scale.

Run from the repo root: ``python benchmarks/bench_wasm.py [--quick] [--json PATH]``.
Prints one table of medians.  Needs the ``wasm`` extra (wasmtime + the interpreter).

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
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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
    parser.add_argument("--json", help="also write the results here")
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

    rows: list[tuple[str, float, str, str]] = []

    # -- cold compile, cached load ------------------------------------------------
    import wasmtime

    from pluginsdk._wasm import cache
    from pluginsdk._wasm.interpreter import locate

    interp = locate()
    t = time.perf_counter()
    cache.warm()
    rows.append(("cold start: compile + stage + bytecode warm-up", (time.perf_counter() - t) * 1e3, "ms", ""))
    t = time.perf_counter()
    cache.compile_module(interp, work / "again.cwasm")
    rows.append(("cold compile of the interpreter alone", (time.perf_counter() - t) * 1e3, "ms", ""))
    sandbox = cache.prepare()
    load = _median_ms(
        lambda: wasmtime.Module.deserialize_file(wasmtime.Engine(cache.engine_config()), str(sandbox.module_file)),
        rounds * 2,
    )
    rows.append(("cached module load (new engine + deserialize_file)", load, "ms", ""))

    # -- start to first call -------------------------------------------------------
    def bring_up() -> None:
        b = WasmBackend(target(), log=log)
        b.call("transform", ("x",))
        b.close()

    bring_up()
    rows.append(("instance start to first answered call", _median_ms(bring_up, rounds), "ms", "<= 150 ms"))

    # -- tiny calls and batches ------------------------------------------------------
    import textkit_upper

    direct = textkit_upper.transform
    rows.append(("tiny call, in-process direct", _per_call(lambda: direct("hello"), 20000, rounds), "µs", ""))
    items = [(f"item {i}",) for i in range(1000)]
    wasm = WasmBackend(target(), log=log)
    wasm.start()
    rows.append(
        ("tiny call, wasm", _per_call(lambda: wasm.call("transform", ("hello",)), 500, rounds), "µs", "<= 100 µs")
    )
    rows.append(
        (
            "1,000-item call_batch per item, wasm",
            _per_call(lambda: wasm.call_batch("transform", items), 1, rounds) / 1000,
            "µs",
            "<= 5 µs",
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
            ("tiny call, process", _per_call(lambda: proc.call("transform", ("hello",)), 500, rounds), "µs", "")
        )
        rows.append(
            (
                "1,000-item call_batch per item, process",
                _per_call(lambda: proc.call_batch("transform", items), 1, rounds) / 1000,
                "µs",
                "",
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
    rows.append((f"host RSS per warm instance ({n} instances)", (_rss_mb() - before) / n, "MiB", ""))
    pool.close()

    width = max(len(r[0]) for r in rows)
    runtime = f"{interp.name}, wasmtime {wasmtime_version()}"
    print(f"wasm backend: {runtime}, host Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"{'measure'.ljust(width)}  {'median':>10}  unit  target")
    for name, value, unit, goal in rows:
        print(f"{name.ljust(width)}  {value:10.1f}  {unit:<4}  {goal}")
    if args.json:
        Path(args.json).write_text(
            json.dumps([dict(zip(("measure", "median", "unit", "target"), r)) for r in rows], indent=1)
        )
    return 0


def wasmtime_version() -> str | None:
    from pluginsdk._wasm.interpreter import wasmtime_version as version

    return version()


if __name__ == "__main__":
    sys.exit(main())
