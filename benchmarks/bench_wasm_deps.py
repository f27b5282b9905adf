"""What a dependency closure costs a ``wasm`` plugin: fresh instance to first answer, with and without one.

Run from the repo root: ``python benchmarks/bench_wasm_deps.py [--quick]``.
Writes ``benchmarks/results/wasm_deps.json`` (the format of ``bench_process.py``).

Two plugins, installed as real distributions in a temporary site: one with
no dependencies, one requiring a library with a chain of its own (the shape
of jinja2 -> markupsafe: ~40 modules, a C speed-up with a pure-Python
fallback, package data), and a third whose library also reads its own
version with ``importlib.metadata`` at import (as many do: importing
``importlib.metadata`` itself costs ~0.5 s in the guest).
Each round starts a fresh backend (resolve the closure, stage or find it in
the cache, start an instance) and times it to its first answer.  The first
round of the closure, which stages it and compiles its bytecode, is reported
apart.  The cache is a fresh temporary directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "wasm_deps.json"
sys.path.insert(0, str(ROOT))

from benchmarks.bench_process import machine, row  # noqa: E402
from tests.plugin_factory import add_requires, install_dist, install_plugin  # noqa: E402

PLUGIN = """\
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    {body}
"""
MODULES = 40


def install_engine(site: Path, dist: str, top: str, *, metadata: bool) -> None:
    """A jinja2-like library of :data:`MODULES` modules and package data, requiring ``safe-markup``."""
    engine = {f"{top}/m{i}.py": f"VALUE = {i}\n" + "def f(x):\n    return x\n" * 20 for i in range(MODULES)}
    imports = "".join(f"from . import m{i}\n" for i in range(MODULES))
    version = f"from importlib.metadata import version\nVERSION = version({dist!r})\n" if metadata else ""
    render = "from safemarkup import escape\ndef render(s):\n    return escape(s)\n"
    engine[f"{top}/__init__.py"] = f"{imports}{version}{render}"
    engine[f"{top}/data/table.txt"] = "x" * 4096
    install_dist(site, dist, engine, requires=("safe-markup>=2.0",))


def install(site: Path) -> None:
    """``benchkit-plain`` (no dependencies), ``benchkit-deps`` and ``benchkit-meta`` (a chain of two)."""
    install_engine(site, "tmpl-lite", "tmpllite", metadata=False)
    install_engine(site, "tmpl-engine", "tmplengine", metadata=True)
    markup: dict[str, str | bytes] = {
        "safemarkup/__init__.py": "try:\n    from ._speedups import escape\nexcept ImportError:\n"
        "    from ._native import escape\n",
        "safemarkup/_native.py": "def escape(s):\n    return s.replace('<', '&lt;')\n",
        "safemarkup/_speedups.cpython-312-x86_64-linux-gnu.so": b"\x7fELF stand-in",
    }
    install_dist(site, "safe-markup", markup, version="2.1")
    for name, body, requires in (
        ("plain", "return text", []),
        ("deps", "import tmpllite\n    return tmpllite.render(text)", ["tmpl-lite>=1"]),
        ("meta", "import tmplengine\n    return tmplengine.render(text)", ["tmpl-engine>=1"]),
    ):
        install_plugin(
            site,
            name,
            PLUGIN.format(body=body),
            module=f"benchkit_{name}",
            dist=f"benchkit-{name}",
            group="benchkit.plugins",
            isolation="wasm",
        )
        if requires:
            add_requires(site, f"benchkit-{name}", "1.0", requires)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    opts = parser.parse_args()
    rounds = 5 if opts.quick else 20
    log = logging.getLogger("bench")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PLUGINSDK_CACHE_DIR"] = str(Path(tmp) / "cache")
        site = Path(tmp) / "site"
        site.mkdir()
        install(site)
        sys.path.insert(0, str(site))
        from pluginsdk import HookSpec, hookspec
        from pluginsdk._wasm.setup import prepare
        from pluginsdk.backends.base import DEFAULT_LIMITS, PluginTarget
        from pluginsdk.backends.wasm import WasmBackend

        class Hooks:
            @hookspec
            def transform(self, text: str) -> str:  # type: ignore[empty-body]
                """Echo."""

        spec = HookSpec("benchkit", version="1.0", hooks=Hooks)

        def make(name: str) -> WasmBackend:
            target = PluginTarget(
                name=name,
                dist=f"benchkit-{name}",
                module=f"benchkit_{name}",
                attr=None,
                package_dir=str(site / f"benchkit_{name}"),
                path_entry=str(site),
                hooks={"transform": ("text",)},
                limits=DEFAULT_LIMITS,
                spec=spec,
                options={"sys_path": (str(site), *sys.path)},
            )
            return WasmBackend(target, log=log)

        def bring_up(name: str) -> float:
            t = time.perf_counter()
            backend = make(name)
            answer = backend.call("transform", ("<x>",))
            elapsed = (time.perf_counter() - t) * 1e3
            backend.close()
            assert answer in ("<x>", "&lt;x>"), answer
            return elapsed

        prepare()  # the interpreter's own cold start is bench_wasm.py's business
        bring_up("plain")
        first = bring_up("deps")  # stages the closure and compiles its bytecode
        bring_up("meta")
        samples: dict[str, list[float]] = {"plain": [], "deps": [], "meta": []}
        for _ in range(rounds):  # interleaved, so machine noise hits both alike
            for name in samples:
                samples[name].append(bring_up(name))
        # A tiny call once up: the closure costs its imports at start, nothing per call.
        warm = {name: make(name) for name in ("plain", "deps")}
        calls: dict[str, list[float]] = {name: [] for name in warm}
        try:
            for backend in warm.values():
                for _ in range(50):
                    backend.call("transform", ("<x>",))
            for _ in range(rounds * 3):
                for name, backend in warm.items():
                    t = time.perf_counter()
                    for _ in range(200):
                        backend.call("transform", ("<x>",))
                    calls[name].append((time.perf_counter() - t) / 200 * 1e6)
        finally:
            for backend in warm.values():
                backend.close()
    plain, deps, meta = (statistics.median(samples[n]) for n in ("plain", "deps", "meta"))
    tiny_plain, tiny_deps = statistics.median(calls["plain"]), statistics.median(calls["deps"])
    rows = [
        row("fresh instance to first answer, no dependencies", plain, "ms"),
        row(f"fresh instance to first answer, closure of 2 dists ({MODULES + 3} modules)", deps, "ms", plain),
        row("  the same, the library reading its version (importlib.metadata)", meta, "ms", plain),
        row("first load of that closure (stage + bytecode compile + first answer)", first, "ms", plain),
        row("tiny call, no dependencies", tiny_plain, "us"),
        row("tiny call, with the closure", tiny_deps, "us", tiny_plain),
    ]
    width = max(len(r["case"]) for r in rows)
    for r in rows:
        ratio = f"  ({r['ratio']:.2f}x no deps)" if r["ratio"] else ""
        unit = "ms" if "median_ms" in r else "us"
        print(f"{r['case']:<{width}}  {r['median_' + unit]:8.1f} {unit}{ratio}")
    write_results(rows, opts.quick)


def write_results(rows: list[dict[str, Any]], quick: bool) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "wasm_deps",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": quick,
        "machine": machine(),
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"results written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
