"""Per-item cost of a hook call by isolation level, from one small call to a 10,000-item batch.

Run from the repo root: ``python benchmarks/bench_scaling.py [--quick] [--rounds N]``.
Writes ``benchmarks/results/scaling.json`` (read by ``benchmarks/report.py``).

One real plugin distribution (``tests/plugin_factory.py``) whose hook is a
small string transform, ``text.upper()``, is run through a real ``Host``
three times, ``Host(SPEC, force_isolation=LEVEL, prewarm=True)``: the same
code in-process, in one worker process and in one WebAssembly instance
(``workers = 1``, so a batch measures the crossing, not parallelism).
Cases, per level: a single ``host.hook.transform(text=...)`` call, and
``host.hook.transform.map(items)`` with 1, 10, 100, 1,000 and 10,000 items.
Each sample times a block of repetitions (at least ``--block-ms``) and
divides by the items in it; every round runs all (level, case) cells in a
new random order, so load on a shared machine hits all of them alike.

Anchors, measured in the same rounds:

* **bare pluggy call**: a plain ``pluggy.PluginManager`` with the same plugin
  module registered, ``pm.hook.transform(text=...)``.  The in-process call is
  compared with it pairwise (timed back to back in each round).
* **bare socketpair round trip**: an 8-byte echo to a child Python over a
  ``socket.socketpair`` (blocking reads, no codec, no pool): the floor of
  any call that crosses into another process.
* **raw wasmtime export call**: a hand-written WAT identity function
  called through wasmtime-py: the floor of entering WebAssembly from Python.
* **raw wasmtime WASI echo**: a hand-written WAT ``_start`` loop that copies
  its stdin to its stdout, over FIFOs, on a thread, with the host spinning
  then polling on the reply, which is the channel the ``wasm`` backend uses
  but without CPython in the guest or a codec: the floor of a round trip
  into a WASI guest.

Targets checked here (from the issue; the backend benchmarks check them on
the bare backends, these rows go through the whole ``Host``):
in-process call <= 1.05x bare pluggy; ``process``: a 1,000-item batch >= 30x
cheaper per item than single calls; ``wasm``: a tiny call <= 100 µs and
<= 5 µs per item in a 1,000-item batch.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import random
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.plugin_factory import install_plugin  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "scaling.json"
LEVELS = ("inprocess", "process", "wasm")
BATCHES = (1, 10, 100, 1000, 10000)
CASES = ("call", *(f"map{n}" for n in BATCHES))

PLUGIN = """
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    return text.upper()
"""

MANIFEST = """
[plugin]
requires = "textkit>=1.0,<2"
isolation = "inprocess"
hooks = ["transform"]

[limits]
workers = 1
"""

ECHO_CHILD = """
import os, sys
fd = int(sys.argv[1])
while True:
    data = os.read(fd, 65536)
    if not data:
        break
    os.write(fd, data)
"""

# The identity function: the least work a call into WebAssembly can do.
WAT_IDENTITY = '(module (func (export "id") (param i32) (result i32) local.get 0))'

# _start: read stdin into a 4 KiB buffer, write what was read to stdout, until EOF.
# Memory layout: iovec for reading at 0, iovec for writing at 8, counts at 16/20, buffer at 64.
WAT_ECHO = """
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $n i32)
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 4096))
    (block $done
      (loop $again
        (br_if $done (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
        (local.set $n (i32.load (i32.const 16)))
        (br_if $done (i32.eqz (local.get $n)))
        (i32.store (i32.const 8) (i32.const 64))
        (i32.store (i32.const 12) (local.get $n))
        (br_if $done (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 20)))
        (br $again)))))
"""

SPIN = 0.0005  # seconds the WASI echo host spins before polling: what the wasm backend does


# -- machine ------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "loadavg": list(os.getloadavg()),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--", "pluginsdk")),
    }


# -- anchors ---------------------------------------------------------------------------


@contextlib.contextmanager
def socketpair_echo() -> Iterator[Callable[[], None]]:
    """A child echoing over a socketpair; yields one 8-byte round trip."""
    ours, theirs = socket.socketpair()
    child = subprocess.Popen([sys.executable, "-I", "-c", ECHO_CHILD, str(theirs.fileno())], pass_fds=[theirs.fileno()])
    theirs.close()
    msg = b"12345678"

    def round_trip() -> None:
        ours.sendall(msg)
        ours.recv(65536)

    try:
        round_trip()
        yield round_trip
    finally:
        ours.close()
        child.wait(5)


def wasm_identity() -> Callable[[], None]:
    import wasmtime

    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    func = wasmtime.Instance(store, wasmtime.Module(engine, WAT_IDENTITY), []).exports(store)["id"]

    def call() -> None:
        func(store, 7)  # type: ignore[operator]

    return call


@contextlib.contextmanager
def wasi_echo() -> Iterator[Callable[[], None]]:
    """The WAT echo guest on a thread, stdin/stdout as FIFOs; yields one 8-byte round trip."""
    import wasmtime

    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    tmp = tempfile.mkdtemp(prefix="bench-wasi-echo-")
    to_guest, to_host = os.path.join(tmp, "in"), os.path.join(tmp, "out")
    os.mkfifo(to_guest)
    os.mkfifo(to_host)
    # Open order so that nothing blocks: a reader must exist before a non-blocking
    # writer opens, and wasmtime opens its ends blocking.
    placeholder = os.open(to_guest, os.O_RDONLY | os.O_NONBLOCK)
    wfd = os.open(to_guest, os.O_WRONLY | os.O_NONBLOCK)
    rfd = os.open(to_host, os.O_RDONLY | os.O_NONBLOCK)
    wasi.stdin_file = to_guest
    wasi.stdout_file = to_host
    os.close(placeholder)
    shutil.rmtree(tmp)
    os.set_blocking(wfd, True)
    store.set_wasi(wasi)
    start = linker.instantiate(store, wasmtime.Module(engine, WAT_ECHO)).exports(store)["_start"]
    thread = threading.Thread(target=start, args=(store,), daemon=True)  # type: ignore[arg-type]
    thread.start()
    poller = select.poll()
    poller.register(rfd, select.POLLIN)
    msg = b"12345678"

    def round_trip() -> None:
        os.write(wfd, msg)
        spin_until = time.perf_counter() + SPIN
        while True:
            try:
                if os.read(rfd, 4096):
                    return
            except BlockingIOError:
                pass
            if time.perf_counter() > spin_until:
                poller.poll(1000)

    try:
        round_trip()
        yield round_trip
    finally:
        os.close(wfd)  # EOF: the guest's loop ends
        thread.join(5)
        os.close(rfd)


# -- the measurement --------------------------------------------------------------------


def calibrate(fn: Callable[[], object], block: float) -> int:
    """Repetitions of ``fn`` that take at least ``block`` seconds."""
    loops = 1
    while True:
        t = time.perf_counter()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter() - t
        if elapsed >= block:
            return loops
        loops = max(loops * 2, int(loops * block / max(elapsed, 1e-9) * 1.1))


def sample(fn: Callable[[], object], loops: int, items: int) -> float:
    """Seconds per item over ``loops`` calls of ``fn`` (each handling ``items`` items)."""
    t = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - t) / (loops * items)


def summary(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "p25": q[0], "p75": q[2], "min": min(xs), "n": len(xs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter blocks (a smoke run)")
    parser.add_argument("--rounds", type=int, help="samples per cell")
    parser.add_argument("--block-ms", type=float, help="minimum time of one sample")
    parser.add_argument("--pin", action="store_true", help="accepted for symmetry with bench_process; ignored")
    args = parser.parse_args()
    rounds = args.rounds or (7 if args.quick else 31)
    block = (args.block_ms or (10 if args.quick else 40)) / 1e3
    started = time.perf_counter()
    before = machine()

    import pluggy

    from pluginsdk import Host
    from pluginsdk._markers import PROJECT
    from pluginsdk.backends.wasm import WasmBackend

    tmp = Path(tempfile.mkdtemp(prefix="pluginsdk-bench-scaling-"))
    stack = contextlib.ExitStack()
    try:
        site = tmp / "site"
        install_plugin(site, "scale", PLUGIN, manifest=MANIFEST)
        shutil.copy(ROOT / "tests" / "textkit.py", site / "textkit.py")
        sys.path.insert(0, str(site))
        from textkit import SPEC

        skipped: dict[str, str] = {}
        wasm_reason = WasmBackend.unavailable_reason()
        if wasm_reason is not None:
            skipped["wasm"] = wasm_reason
        hosts: dict[str, Any] = {}
        for level in LEVELS:
            if level in skipped:
                continue
            t = time.perf_counter()
            host = stack.enter_context(Host(SPEC, path=[str(site)], force_isolation=level, prewarm=True))
            got = host.hook.transform(text="ab")
            info = host.plugin("scale")
            if got != ["AB"]:
                raise RuntimeError(f"{level}: transform returned {got!r}; plugin {info.status}: {info.reason}")
            hosts[level] = host
            print(f"{level:<10} ready in {(time.perf_counter() - t) * 1e3:7.1f} ms: {info.runtime}")

        # The cells: (level, case) -> (function, items per call).
        batches = {n: [{"text": f"item {i}"} for i in range(n)] for n in BATCHES}
        cells: dict[tuple[str, str], tuple[Callable[[], object], int]] = {}
        for level, host in hosts.items():
            caller = host.hook.transform
            cells[level, "call"] = (functools.partial(caller, text="hello"), 1)
            for n, items in batches.items():
                cells[level, f"map{n}"] = (functools.partial(caller.map, items), n)

        import textkit_scale

        pm = pluggy.PluginManager(PROJECT)
        pm.add_hookspecs(SPEC.namespace())
        pm.register(textkit_scale, name="scale")
        bare = pm.hook.transform
        assert bare(text="ab") == ["AB"]
        cells["anchor", "pluggy"] = (functools.partial(bare, text="hello"), 1)  # same wrapper as the levels
        cells["anchor", "socketpair"] = (stack.enter_context(socketpair_echo()), 1)
        if "wasm" not in skipped:
            cells["anchor", "wasm_export"] = (wasm_identity(), 1)
            cells["anchor", "wasi_echo"] = (stack.enter_context(wasi_echo()), 1)

        loops = {key: calibrate(fn, block) for key, (fn, _) in cells.items()}
        times: dict[tuple[str, str], list[float]] = {key: [] for key in cells}
        paired: list[float] = []  # in-process call / bare pluggy, timed back to back
        order = [k for k in cells if k != ("anchor", "pluggy")]
        print(f"{len(cells)} cells x {rounds} rounds, blocks of >= {block * 1e3:.0f} ms, interleaved")
        for r in range(rounds):
            random.shuffle(order)
            for key in order:
                fn, n = cells[key]
                if key == ("inprocess", "call"):
                    # The pluggy anchor is timed right next to it, order alternating by round.
                    pair = [key, ("anchor", "pluggy")][:: 1 if r % 2 else -1]
                    got = {k: sample(cells[k][0], loops[k], 1) for k in pair}
                    for k, v in got.items():
                        times[k].append(v)
                    paired.append(got[key] / got["anchor", "pluggy"])
                    continue
                times[key].append(sample(fn, loops[key], n))
            print(f"  round {r + 1}/{rounds} done", end="\r", flush=True)
        print()
    finally:
        stack.close()
        shutil.rmtree(tmp, ignore_errors=True)

    stats = {key: summary(v) for key, v in times.items()}
    med = {key: s["median"] for key, s in stats.items()}
    # key -> (short name, description, the level it is the floor of)
    anchors = {
        "pluggy": ("bare pluggy call", "plain pluggy PluginManager, same plugin module", "inprocess"),
        "socketpair": ("socketpair floor", "8-byte echo to a child Python over a socketpair", "process"),
        "wasm_export": ("raw wasmtime call", "WAT identity function called through wasmtime-py", "wasm"),
        "wasi_echo": ("raw WASI echo", "8-byte echo through a WAT WASI guest over FIFOs", "wasm"),
    }

    def us(s: float) -> str:
        return f"{s * 1e6:10.3f}"

    print(f"\nper-item cost, µs (median of {rounds}; p25-p75)")
    print(f"  {'level':<10}" + "".join(f"{c:>14}" for c in CASES))
    for level in LEVELS:
        if level in skipped:
            print(f"  {level:<10}  skipped: {skipped[level]}")
            continue
        print(f"  {level:<10}" + "".join(f"{us(med[level, c]):>14}" for c in CASES))
    for name, (short, desc, _) in anchors.items():
        if ("anchor", name) in med:
            s = stats["anchor", name]
            label = f"{short}: {desc}"
            print(f"  {label:<70} {us(s['median'])} ({s['p25'] * 1e6:.2f}-{s['p75'] * 1e6:.2f})")

    rows: list[dict[str, Any]] = []

    def row(case: str, value: float, anchor: float, ratio: float, target: str, ok: bool | None) -> None:
        verdict = "-" if ok is None else ("PASS" if ok else "MISS")
        rows.append(
            {
                "case": case,
                "median": value,
                "anchor": anchor,
                "ratio": ratio,
                "target": target,
                "unit": "us",
                "verdict": verdict,
            }
        )

    anchor_of = {"inprocess": "pluggy", "process": "socketpair", "wasm": "wasi_echo"}
    for level in LEVELS:
        if level in skipped:
            continue
        a_key = anchor_of[level]
        a = med["anchor", a_key]
        call = med[level, "call"]
        if level == "inprocess":
            ratio = statistics.median(paired)
            row("inprocess: single call vs bare pluggy call (paired ratio)", call, a, ratio, "<= 1.05x", ratio <= 1.05)
        elif level == "wasm":
            row("wasm: single call vs raw WASI echo", call, a, call / a, "<= 100 µs", call <= 100e-6)
        else:
            row(f"{level}: single call vs socketpair floor", call, a, call / a, "report", None)
        for n in BATCHES:
            per_item = med[level, f"map{n}"]
            target, ok = "report", None
            if n == 1000 and level == "process":
                target, ok = ">= 30x cheaper than a call", call / per_item >= 30
            elif n == 1000 and level == "wasm":
                target, ok = "<= 5 µs per item", per_item <= 5e-6
            row(
                f"{level}: map of {n:,} item{'s' if n > 1 else ''}, per item, vs {anchors[a_key][0]}",
                per_item,
                a,
                per_item / a,
                target,
                ok,
            )
            if n == 1000 and level != "inprocess":
                rows[-1]["note"] = f"{call / per_item:.0f}x cheaper per item than a single call"
    if "wasm" not in skipped:
        a, b = med["anchor", "wasm_export"], med["anchor", "wasi_echo"]
        row("(info) raw wasmtime call vs raw WASI echo", a, b, a / b, "info", None)
    for level, why in skipped.items():
        rows.append(
            {
                "case": f"{level}: skipped",
                "median": None,
                "anchor": None,
                "ratio": None,
                "target": "",
                "unit": "us",
                "verdict": "SKIP",
                "note": why,
            }
        )

    print("\nSummary")
    for x in rows:
        if x["median"] is None:
            print(f"  {x['case']:<80} {x['note']}")
            continue
        print(
            f"  {x['case']:<80} {us(x['median'])} µs {us(x['anchor'])} µs {x['ratio']:8.2f}x  "
            f"{x['target']:<26} {x['verdict']}"
        )
    total = time.perf_counter() - started
    print(f"\ntotal {total:.0f} s")

    after = machine()
    result = {
        "benchmark": "scaling",
        "title": "Per-item cost by isolation level and call size, through a real Host",
        "when": after["when"],
        "values": "seconds",  # every median/anchor below, per item
        "quick": args.quick,
        "rounds": rounds,
        "block_seconds": block,
        "machine": {**before, "loadavg_after": after["loadavg"]},
        "summary": rows,
        "levels": list(LEVELS),
        "skipped": skipped,
        "batches": list(BATCHES),
        # Per-item seconds: series[level][case] = {median, p25, p75, min, n}.
        "series": {lv: {c: stats[lv, c] for c in CASES} for lv in LEVELS if lv not in skipped},
        "anchors": {
            k: {"label": anchors[k][0], "description": anchors[k][1], "level": anchors[k][2], **stats["anchor", k]}
            for k in anchors
            if ("anchor", k) in stats
        },
        "paired_inprocess_over_pluggy": paired,
        "loops": {f"{a}/{b}": n for (a, b), n in loops.items()},
        "seconds": total,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
