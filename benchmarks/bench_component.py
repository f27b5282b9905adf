"""The ``component`` sandbox engine side by side with today's ``interpreter`` engine, in one run.

Run from the repo root: ``python benchmarks/bench_component.py [--quick] [--json PATH]``.
Writes ``benchmarks/results/component.json`` (or PATH).  Needs the ``wasm``
extra (wasmtime, componentize-py; the interpreter engine also its interpreter).

Targets (issue "The sandbox in milliseconds"): instance start to first
answered call <= 5 ms (a plugin importing markdown <= 20 ms); a tiny call
<= 40 µs; a 1,000-item batch <= 2 µs an item; host memory per warm instance
<= 10 MiB.  Also reported: the one-off build and compile of a plugin's
component, cold and cached.  Every interpreter-engine row is measured in the
same run, as the baseline of its component row.

The cache directory is a fresh temporary one, so the cold build is real.
The markdown case installs the ``markdown`` wheel from the local index (pip,
offline-friendly) and skips itself when it cannot.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "component.json"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_wasm import _per_call, _row, _rss_mb  # noqa: E402

PLUGIN = """
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    return text.upper()
"""
MARKDOWN = """
import markdown
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    return markdown.markdown(text)
"""


def _markdown_wheel(site: Path) -> bool:
    """Install markdown into ``site`` (wheel only); whether it worked."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--only-binary", ":all:", "--no-deps", "--target", str(site)]
    proc = subprocess.run([*cmd, "markdown"], capture_output=True, text=True, check=False)
    return proc.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--json", default=str(RESULTS), help=f"write the results here (default {RESULTS})")
    args = parser.parse_args()
    rounds = 5 if args.quick else 15
    work = Path(tempfile.mkdtemp(prefix="bench-component-"))
    os.environ["PLUGINSDK_CACHE_DIR"] = str(work / "cache")

    from pluginsdk.backends.base import DEFAULT_LIMITS, Limits, PluginTarget
    from pluginsdk.backends.wasm import WasmBackend
    from tests.plugin_factory import add_requires, install_plugin
    from tests.textkit import SPEC

    reason = WasmBackend.unavailable_reason({"wasm_engine": "component"})
    if reason is not None:
        print(f"component engine unavailable: {reason}")
        return 1
    old_reason = WasmBackend.unavailable_reason({"wasm_engine": "interpreter"})
    site = work / "site"
    pkgs = {"upper": install_plugin(site, "upper", PLUGIN, isolation="wasm")}
    if _markdown_wheel(site):
        pkgs["md"] = install_plugin(site, "md", MARKDOWN, isolation="wasm")
        add_requires(site, "textkit-md", "1.0", ["markdown"])
    sys.path.insert(0, str(site))
    log = logging.getLogger("bench")

    def target(engine: str, plugin: str = "upper", workers: int = 1, **options: Any) -> PluginTarget:
        return PluginTarget(
            name=plugin,
            dist=f"textkit-{plugin}",
            module=f"textkit_{plugin}",
            attr=None,
            package_dir=str(pkgs[plugin]),
            path_entry=str(site),
            hooks={"transform": ("text",)},
            limits=Limits(workers=workers).merged(DEFAULT_LIMITS),
            spec=SPEC,
            options={"wasm_engine": engine, **options},
        )

    engines = ["component"] + (["interpreter"] if old_reason is None else [])
    rows: list[tuple[Any, ...]] = []

    # -- one-off build and compile ------------------------------------------------
    for plugin in pkgs:
        t = time.perf_counter()
        b = WasmBackend(target("component", plugin), log=log)
        b.start()
        built = b.built  # type: ignore[attr-defined]
        total = (time.perf_counter() - t) * 1e3
        b.close()
        rows.append(
            (f"{plugin}: cold build of the component (componentize-py)", built.build_seconds * 1e3, "ms", "", None)
        )
        rows.append((f"{plugin}: cold compile of the component", built.compile_seconds * 1e3, "ms", "", None))
        rows.append((f"{plugin}: cold, first backend start in all", total, "ms", "", None))
        t = time.perf_counter()
        b = WasmBackend(target("component", plugin), log=log)
        b.start()
        rows.append(
            (
                f"{plugin}: cached, backend start (key, load, first instance)",
                (time.perf_counter() - t) * 1e3,
                "ms",
                "",
                None,
            )
        )
        b.close()
    if "interpreter" in engines:
        from pluginsdk._wasm import setup

        t = time.perf_counter()
        setup.warm()
        rows.append(
            (
                "interpreter engine: cold compile + stage + warm-up (once, any plugin)",
                (time.perf_counter() - t) * 1e3,
                "ms",
                "",
                None,
            )
        )

    # -- start to first answered call, calls, batches, memory --------------------------
    measured: dict[tuple[str, str], float] = {}
    for engine in engines:
        for plugin in pkgs:
            backend = WasmBackend(target(engine, plugin), log=log)
            backend.start()  # prepared: the rest is instances

            def bring_up(backend: Any = backend) -> float:
                t = time.perf_counter()
                w = backend._new_worker()
                backend._handshake(w)
                w.send([1, 1, "transform", ["x"]])
                w.recv()
                elapsed = (time.perf_counter() - t) * 1e3
                w.stop()
                return elapsed

            bring_up()
            measured[engine, f"start:{plugin}"] = statistics.median(bring_up() for _ in range(rounds * 2))
            if plugin == "upper":
                backend.call("transform", ("x",))
                measured[engine, "tiny"] = _per_call(lambda b=backend: b.call("transform", ("hello",)), 5000, rounds)
                items = [(f"item {i}",) for i in range(1000)]
                measured[engine, "batch"] = (
                    _per_call(lambda b=backend, it=items: b.call_batch("transform", it), 20, rounds) / 1000
                )
            backend.close()
        n = 8
        gc.collect()
        before = _rss_mb()
        pool = WasmBackend(target(engine, workers=n, prewarm=True), log=log)
        pool.start()
        pool.call_batch("transform", [(f"i{i}",) for i in range(64)])
        gc.collect()
        measured[engine, "rss"] = (_rss_mb() - before) / n
        pool.close()

    old = "interpreter" if "interpreter" in engines else None

    def row(case: str, key: str, unit: str, goal: str, limit: float | None) -> None:
        baseline = measured.get((old, key)) if old else None
        rows.append((case, measured["component", key], unit, goal, limit, baseline, "baseline: the interpreter engine"))

    row("instance start to first answered call", "start:upper", "ms", "<= 5 ms", 5.0)
    if "md" in pkgs:
        row("instance start to first answered call, markdown plugin", "start:md", "ms", "<= 20 ms", 20.0)
    row("tiny call on the backend", "tiny", "µs", "<= 40 µs", 40.0)
    row("1,000-item batch, per item", "batch", "µs", "<= 2 µs", 2.0)
    row("host RSS per warm instance (8 instances)", "rss", "MiB", "<= 10 MiB", 10.0)

    width = max(len(r[0]) for r in rows)
    print(f"component engine vs interpreter engine, host Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    for name, value, unit, goal, *extra in rows:
        baseline = extra[1] if len(extra) > 1 else None
        versus = f"interpreter engine: {baseline:.1f}" if baseline else ""
        print(f"{name.ljust(width)}  {value:10.2f}  {unit:<4}  {' '.join(filter(None, (goal, versus)))}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "component",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg": list(os.getloadavg()),
        },
        "rows": [_row(*r) for r in rows],
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
