"""A ``process`` plugin in a private environment against the same plugin in the host's environment.

Run from the repo root: ``python benchmarks/bench_envs.py [--quick]``.
Prints one table of medians and writes them, with verdicts against the
targets, to ``benchmarks/results/envs.json`` (the format of
``bench_process.py``).  Everything is offline: the one dependency (``pinme``)
comes from a wheelhouse written here, and the environments live in a cache
of this run's own.

Targets (issue 12, item 2): a tiny call and a 1,000-item batch within 1.05x of
the same plugin run with the host's packages.  Reported only: provisioning an
environment cold (the installer runs) and reused (a marker and an interpreter
check), with the installer used (uv when installed, else venv + pip).
"""

from __future__ import annotations

import argparse
import functools
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
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_process  # noqa: E402  (row, machine, placement, the results format)

from pluginsdk import Host, Policy  # noqa: E402
from pluginsdk.envs import EnvironmentSettings, provision  # noqa: E402
from pluginsdk.spec import HookSpec, hookspec  # noqa: E402
from tests.plugin_factory import install_plugin  # noqa: E402
from tests.test_envs import make_wheel  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "envs.json"


class Hooks:
    @hookspec
    def add(self, a: int, b: int) -> int:  # type: ignore[empty-body]
        """Add two ints."""


SPEC = HookSpec("envbench", version="1.0", hooks=Hooks)
PLUGIN = """
import pinme
from pluginsdk import hookimpl

@hookimpl
def add(a, b):
    return a + b
"""
MANIFEST = """\
[plugin]
requires = "envbench>=1.0"
isolation = "process"
hooks = ["add"]
{environment}
"""


def _alternating_us(fns: dict[str, Callable[[], object]], n: int, rounds: int = 12) -> dict[str, float]:
    """Median µs per call of each of ``fns``: rounds alternate the order (AB, BA...), so going first favours none."""
    for fn in fns.values():
        for _ in range(min(n, 200)):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for _ in range(rounds):
        for name in order:
            fn = fns[name]
            t = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t) / n * 1e6)
        order.reverse()
    return {name: statistics.median(values) for name, values in samples.items()}


def _worker_pids(hosts: Any) -> list[int]:
    """Every worker process of ``hosts``: each supervisor and the worker it forked (Linux)."""
    pids = []
    for host in hosts:
        for plugin in host._plugins.values():
            backend = plugin.backend
            for worker in getattr(getattr(backend, "pool", None), "all", ()):
                pids.append(int(worker.pid))
                try:
                    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
                except OSError:
                    children = []
                pids += [int(c) for c in children]
    return pids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    opts = parser.parse_args()
    n = 300 if opts.quick else 2000
    out: list[dict[str, Any]] = []
    table: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        os.environ["PLUGINSDK_CACHE_DIR"] = str(base / "cache")
        wheelhouse = base / "wheelhouse"
        wheelhouse.mkdir()
        make_wheel(wheelhouse, "pinme", "1.0", "__version__ = '1.0'\n")
        settings = EnvironmentSettings(find_links=(str(wheelhouse),), no_index=True)
        site = base / "site"
        (site / "pinme").mkdir(parents=True)  # the host's copy, for the plugin run with the host's packages
        (site / "pinme" / "__init__.py").write_text("__version__ = '1.0'\n")
        own_manifest = MANIFEST.format(environment='[environment]\ndependencies = ["pinme==1.0"]')
        for name, text in (("shared", MANIFEST.format(environment="")), ("own", own_manifest)):
            install_plugin(
                site, name, PLUGIN, module=f"envbench_{name}", manifest=text, group="envbench.plugins", hooks=("add",)
            )

        # Provisioning: cold (a cache of its own each time), then reused.
        cold: list[float] = []
        installer = "?"
        for i in range(2 if opts.quick else 5):
            os.environ["PLUGINSDK_CACHE_DIR"] = str(base / f"cold{i}")
            env = provision(["pinme==1.0"], settings)
            assert env.built
            cold.append(env.seconds * 1e3)
            installer = env.installer
        reused = [provision(["pinme==1.0"], settings).seconds * 1e3 for _ in range(10 if opts.quick else 30)]
        os.environ["PLUGINSDK_CACHE_DIR"] = str(base / "cache")

        hosts = {
            name: Host(SPEC, path=[str(site)], policy=Policy(allow={name}, environments=settings), use_index=False)
            for name in ("own", "shared")
        }
        try:
            for name, host in hosts.items():
                assert [3] == host.hook.add(a=1, b=2), name
            with bench_process.placement("same CPU", _worker_pids(hosts.values())):  # the same placement for both
                tiny = _alternating_us({k: functools.partial(h.hook.add, a=1, b=2) for k, h in hosts.items()}, n)
                items = [{"a": i, "b": i} for i in range(1000)]
                batch = _alternating_us(
                    {k: functools.partial(h.hook.add.map, items) for k, h in hosts.items()}, n=10 if opts.quick else 30
                )
        finally:
            for host in hosts.values():
                host.close()

    out.append(
        bench_process.row("tiny call: own environment vs host's", tiny["own"], "us", tiny["shared"], 1.05, "<= 1.05x")
    )
    own_item, shared_item = batch["own"] / 1000, batch["shared"] / 1000
    out.append(
        bench_process.row(
            "1,000-item batch, per item: own environment vs host's", own_item, "us", shared_item, 1.05, "<= 1.05x"
        )
    )
    out.append(bench_process.row(f"provision cold ({installer})", statistics.median(cold), "ms"))
    out.append(bench_process.row("provision reused (marker + interpreter check)", statistics.median(reused), "ms"))
    table += [
        ("tiny call, own environment", f"{tiny['own']:.1f} µs", f"{tiny['own'] / tiny['shared']:.3f}x"),
        ("tiny call, host's environment", f"{tiny['shared']:.1f} µs", ""),
        ("1,000-item batch per item, own environment", f"{own_item:.2f} µs", f"{own_item / shared_item:.3f}x"),
        ("1,000-item batch per item, host's environment", f"{shared_item:.2f} µs", ""),
        (f"provision cold ({installer})", f"{statistics.median(cold):.0f} ms", ""),
        ("provision reused", f"{statistics.median(reused):.1f} ms", ""),
    ]
    width = max(len(r[0]) for r in table)
    for label, value, ratio in table:
        print(f"{label:<{width}}  {value:>12}  {ratio}")
    for r in out:
        if r["verdict"] != "-":
            print(f"{r['case']}: {r['ratio']:.3f}x ({r['target']}) {r['verdict']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "envs",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": opts.quick,
        "machine": bench_process.machine(),
        "rows": out,
    }
    import json

    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"results written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
