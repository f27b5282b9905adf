"""Speed and footprint of the ``wasm`` backend, with in-process and ``process`` for scale.

Run from the repo root: ``python benchmarks/bench_wasm.py [--quick] [--json PATH]``.
Prints one table of medians and writes them, with verdicts against the
targets, to ``benchmarks/results/wasm.json`` (or PATH).  Needs the ``wasm`` extra (wasmtime + the interpreter).

Targets (issue): tiny call round trip <= 100 µs; 1,000 items through one
``call_batch`` <= 5 µs per item; instance start to first answered call
<= 150 ms.  Also reported: the cold compile of the interpreter, loading the
cached compiled module, and the host RSS each warm instance adds.

The descriptor gate (``pluginsdk._wasm.gate``) puts every file the guest
opens or closes through the host; what it costs is measured side by side: a
guest program opening and closing a file 2,000 times a round, timing itself,
on the interpreter as the SDK compiles it (gated) and on the same interpreter
compiled without the rewrite (ungated, built here only), with the same WASI
configuration; and the same loop in a plugin hook through the backend.
These run with the process pinned to one CPU: wasmtime does WASI file calls
on a helper thread, and across CPUs that hand-off alone makes an open+close
up to 2-3x slower, by an amount that changes from instance to instance,
which would drown the gate's share.

The cache directory is a fresh temporary one (``PLUGINSDK_CACHE_DIR``), so
the cold compile is real; everything after it uses that cache.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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

# A plugin whose hook opens and closes its own module file int(text) times.
OPENER = """
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    for _ in range(int(text)):
        open(__file__, "rb").close()
    return text
"""

#: Open+close pairs a round (a guest-program round, or one hook call): enough that
#: one call's overhead (~0.1 ms) is a few hundredths of a µs a pair.
PAIRS = 2000

# The guest program of the side-by-side: it times its own open/close loop.
OPEN_CLOSE = """
import time
path, pairs, rounds = {path!r}, {pairs}, {rounds}
out = []
for _ in range(rounds):
    t = time.perf_counter()
    for _ in range(pairs):
        open(path, "rb").close()
    out.append((time.perf_counter() - t) / pairs * 1e6)
print(" ".join(map(repr, out)))
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


@contextlib.contextmanager
def _one_cpu() -> Iterator[None]:
    """Run every thread of this process (and any it starts meanwhile) on one CPU."""
    everything = os.sched_getaffinity(0)

    def pin(cpus: set[int]) -> None:
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(tid), cpus)

    pin({min(everything)})
    try:
        yield
    finally:
        pin(everything)


def _guest_open_close(sandbox: Any, *, gated: bool, rounds: int) -> list[float]:
    """Run :data:`OPEN_CLOSE` in a fresh instance of ``sandbox``'s interpreter: µs per pair, a round each.

    Built as the SDK builds an instance (its store, WASI configuration and
    argv); ``gated`` instantiates through the gate, otherwise ``sandbox``
    holds the module compiled without the rewrite and is instantiated plainly.
    """
    import wasmtime

    from pluginsdk._wasm.cache import GUEST_MAIN
    from pluginsdk._wasm.gate import OpenFiles, instantiate
    from pluginsdk._wasm.store import BASE_ARGV as _BASE_ARGV
    from pluginsdk._wasm.store import new_store as _new_store
    from pluginsdk._wasm.store import wasi_config as _wasi_config

    engine, module, linker, store = _new_store(sandbox, 0)
    code = OPEN_CLOSE.format(path=f"/lib/{GUEST_MAIN}", pairs=PAIRS, rounds=rounds)
    wasi = _wasi_config(sandbox, [*_BASE_ARGV, "-c", code], (), writable_pycache=False)
    with tempfile.TemporaryDirectory(prefix="bench-wasm-gate-") as tmp:
        output = Path(tmp) / "output"
        wasi.stdout_file = str(output)
        wasi.stderr_file = str(output)
        store.set_wasi(wasi)
        files = OpenFiles(0)
        try:
            instance = instantiate(engine, linker, store, module, files) if gated else linker.instantiate(store, module)
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as exc:
            if exc.code:
                raise RuntimeError(f"guest exited with {exc.code}: {output.read_text()[-2000:]}") from None
        finally:
            store.close()
            files.release_all()  # as run_program does: the process-wide count stays right
        text = output.read_text()
    return [float(x) for x in text.split()]


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

    opener = install_plugin(site, "opener", OPENER, isolation="wasm")

    def target(workers: int = 1, plugin: str = "upper", **options: Any) -> PluginTarget:
        return PluginTarget(
            name=plugin,
            dist=f"textkit-{plugin}",
            module=f"textkit_{plugin}",
            attr=None,
            package_dir=str(opener if plugin == "opener" else pkg),
            path_entry=str(site),
            hooks={"transform": ("text",)},
            limits=Limits(workers=workers).merged(DEFAULT_LIMITS),
            spec=SPEC,
            options=options,
        )

    # (case, median, unit, target text, highest passing median or None[, baseline, note]):
    # a baseline is what a reported-only row is compared with (its anchor and ratio).
    rows: list[tuple[Any, ...]] = []

    # -- cold compile, cached load ------------------------------------------------
    import wasmtime

    from pluginsdk._wasm import cache, setup
    from pluginsdk._wasm.interpreter import locate

    interp = locate()
    t = time.perf_counter()
    setup.warm()
    rows.append(("cold start: compile + stage + bytecode warm-up", (time.perf_counter() - t) * 1e3, "ms", "", None))
    if not args.quick:  # the cold start above already includes it
        t = time.perf_counter()
        cache.compile_module(interp, work / "again.cwasm")
        rows.append(("cold compile of the interpreter alone", (time.perf_counter() - t) * 1e3, "ms", "", None))
    sandbox = setup.prepare()
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
    rows.append(
        (
            "instance start to first answered call",
            start,
            "ms",
            "<= 150 ms",
            150.0,
            None,
            "with the descriptor gate: the files the guest opens at start pass it",
        )
    )

    # -- the descriptor gate: open+close, gated against ungated ------------------------
    import attrs

    ungated = attrs.evolve(sandbox, module_file=work / "ungated.cwasm")
    engine = wasmtime.Engine(cache.engine_config())
    ungated.module_file.write_bytes(wasmtime.Module(engine, Path(interp.path).read_bytes()).serialize())
    per_program = max(3, rounds // 3)
    samples: dict[bool, list[float]] = {True: [], False: []}
    hook: list[float] = []
    opener_backend = WasmBackend(target(plugin="opener"), log=log)
    opener_backend.start()
    opener_backend.call("transform", ("10",))
    with _one_cpu():
        for _ in range(max(1, rounds // per_program)):  # interleaved, so drift hits both alike
            for gated in (True, False):
                samples[gated] += _guest_open_close(sandbox if gated else ungated, gated=gated, rounds=per_program)
        for _ in range(rounds):
            t = time.perf_counter()
            opener_backend.call("transform", (str(PAIRS),))
            hook.append((time.perf_counter() - t) / PAIRS * 1e6)
    opener_backend.close()
    ungated.module_file.unlink()  # 27 MB, and only this measurement uses it
    gated_pair, ungated_pair = statistics.median(samples[True]), statistics.median(samples[False])
    rows.append(
        (
            "open+close in the guest, ungated interpreter (one CPU)",
            ungated_pair,
            "µs",
            "report",
            None,
            None,
            f"guest-timed, {PAIRS:,} pairs a round; the interpreter compiled without the gate's rewrite",
        )
    )
    rows.append(
        (
            "open+close in the guest, gated vs ungated interpreter (one CPU)",
            gated_pair,
            "µs",
            "report",
            None,
            ungated_pair,
            f"gated/ungated {gated_pair / ungated_pair:.2f}x: the gate adds {gated_pair - ungated_pair:.1f} µs a pair",
        )
    )
    rows.append(
        (
            "open+close in a plugin hook, wasm backend, vs ungated guest (one CPU)",
            statistics.median(hook),
            "µs",
            "report",
            None,
            ungated_pair,
            f"host-timed hook call of {PAIRS:,} pairs, per pair: what a plugin pays, gated",
        )
    )

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
    for name, value, unit, goal, *extra in rows:
        baseline = extra[1] if len(extra) > 1 else None
        versus = f"{value / baseline:.2f}x of {baseline:.1f}" if baseline else ""
        print(f"{name.ljust(width)}  {value:10.1f}  {unit:<4}  {' '.join(filter(None, (goal, versus)))}")
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


def _row(
    case: str,
    median: float,
    unit: str,
    goal: str,
    limit: float | None,
    baseline: float | None = None,
    note: str = "",
) -> dict[str, Any]:
    """A result row; targets are absolute, so the anchor is the target's limit itself.

    A row without a target may have a ``baseline`` instead: then that is its
    anchor, and the ratio is reported only.
    """
    key = {"µs": "median_us", "ms": "median_ms", "MiB": "median_mib"}[unit]
    anchor = limit or baseline
    ratio = median / anchor if anchor else None
    verdict = "-" if not limit or ratio is None else ("PASS" if ratio <= 1.0 else "MISS")
    row = {"case": case, key: median, "anchor": anchor, "ratio": ratio, "target": goal, "verdict": verdict}
    if note:
        row["note"] = note
    return row


def wasmtime_version() -> str | None:
    from pluginsdk._wasm.interpreter import wasmtime_version as version

    return version()


if __name__ == "__main__":
    sys.exit(main())
