"""Core speed of pluginsdk: discovery, start-up, hook calls, lazy loading.

Run from the repo root: ``python benchmarks/bench_core.py [--quick] [--rounds N]``.
Prints tables of medians, with ratios to the anchor measured in the same run,
and writes them to ``benchmarks/results/core.json``.

Fixture (built in a temp dir): a site dir with 1,000 installed distributions,
100 of them plugins of ``textkit.plugins`` whose modules import
``json, decimal, email.message``, so what lazy loading saves is visible.

Targets (issue):

* Discovery over 1,000 distributions (100 plugins), fresh process, imports
  included: ``Host(SPEC).plugins()`` cold at most 1.2x a bare
  ``importlib.metadata.entry_points(group=...)`` scan; warm (on-disk index)
  it must not import ``importlib.metadata`` and must beat stevedore's warm
  entry-point cache.
* Host start-up, 100 plugins, none called, warm index: at most 10 ms above
  ``python -c "import pluggy"``.
* In-process hook call after the first: at most 1.05x a plain pluggy
  ``PluginManager`` holding the same modules (1 and 10 plugins).
* First call of a lazily loaded plugin, and registering 100 lazy plugins:
  reported, no target.

Every fresh-process case is a ``python -c`` child run from an empty, backdated
working directory with the site dir on ``PYTHONPATH``; cases are interleaved
round by round (shuffled), so machine noise hits them all alike.  Times are
wall clock around the whole child, nothing subtracted (``python -c pass`` is
shown for scale).
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
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from plugin_factory import install_plain_dist, install_plugin  # noqa: E402

GROUP = "textkit.plugins"
N_DISTS = 1000
N_PLUGINS = 100
RESULTS = ROOT / "benchmarks" / "results" / "core.json"

PLUGIN = """
import json, decimal, email.message
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    return text
"""

# Appended to discovery children: how many found, and whether the metadata
# machinery was imported (a warm start must import neither).
TAIL = (
    "\nimport sys as _s; print(len(r), int('importlib.metadata' in _s.modules),"
    " int('importlib_metadata' in _s.modules))"
)

# name -> (label, code). "{G}" is the group.
PROCESS_CASES: dict[str, tuple[str, str]] = {
    "pass": ("python -c pass", "pass"),
    "pluggy": ("python -c 'import pluggy'", "import pluggy"),
    "bare_stdlib": (
        "bare importlib.metadata scan",
        "import importlib.metadata as m\nr = [ep.name for ep in m.entry_points(group={G!r})]" + TAIL,
    ),
    "bare_backport": (
        "bare importlib_metadata (backport) scan",
        "import importlib_metadata as m\nr = [ep.name for ep in m.entry_points(group={G!r})]" + TAIL,
    ),
    "sdk_cold": (
        "SDK cold: Host(SPEC).plugins(), empty cache dir",
        "from textkit import SPEC\nfrom pluginsdk import Host\nr = Host(SPEC).plugins()" + TAIL,
    ),
    "sdk_noindex": (
        "SDK cold: Host(SPEC, use_index=False).plugins()",
        "from textkit import SPEC\nfrom pluginsdk import Host\nr = Host(SPEC, use_index=False).plugins()" + TAIL,
    ),
    "sdk_warm": (
        "SDK warm index: Host(SPEC).plugins()",
        "from textkit import SPEC\nfrom pluginsdk import Host\nr = Host(SPEC).plugins()" + TAIL,
    ),
    "sdk_warm_discover": (
        "SDK warm index: discover(SPEC) only (info)",
        "from textkit import SPEC\nfrom pluginsdk.discovery import discover\nr = discover(SPEC)" + TAIL,
    ),
    "stevedore_cache": (
        "stevedore warm cache: _cache.get_group_all()",
        # stevedore disables writing its cache when sys.executable is under /tmp
        # (it assumes ansible); force it on so "warm" is warm.
        "from stevedore import _cache\n_cache._c._disable_caching = False\nr = _cache.get_group_all({G!r})" + TAIL,
    ),
    "stevedore_em": (
        "stevedore warm: ExtensionManager(invoke_on_load=False) (imports all 100, info)",
        "from stevedore import _cache, ExtensionManager\n_cache._c._disable_caching = False\n"
        "r = ExtensionManager({G!r}, invoke_on_load=False).names()" + TAIL,
    ),
}

# In-process hook-call benchmark, run in one child: argv = site, n_plugins, repeats.
HOOKCALL = r"""
import importlib, json, statistics, sys, timeit
site, n, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, site)
import pluggy
from textkit import SPEC
from pluginsdk import Host
from pluginsdk._markers import PROJECT

host = Host(SPEC, path=[site])
names = [p.name for p in host.plugins() if p.status == "available"]
assert len(names) == n, names
host.hook.transform(text="x")  # first call: imports the plugins, then plain pluggy dispatch
pm = pluggy.PluginManager(PROJECT)
pm.add_hookspecs(SPEC.namespace())
for p in host.plugins():
    pm.register(importlib.import_module(p.value.partition(":")[0]), name=p.name)
a, b = pm.hook.transform, host.hook.transform
assert a(text="x") == b(text="x") == ["x"] * n
ta = timeit.Timer("f(text=t)", globals={"f": a, "t": "x"})
tb = timeit.Timer("f(text=t)", globals={"f": b, "t": "x"})
loops, _ = ta.autorange()
loops = max(loops // 10, 1000)  # about 20 ms a repeat: pairs close in time
pl, sd = [], []
for i in range(repeats):
    first, second = (ta, tb) if i % 2 == 0 else (tb, ta)  # alternate order
    x = first.timeit(loops) / loops
    y = second.timeit(loops) / loops
    if first is ta:
        pl.append(x); sd.append(y)
    else:
        pl.append(y); sd.append(x)
host.close()
print(json.dumps({"pluggy": pl, "sdk": sd, "loops": loops}))
"""

# Registering 100 lazy plugins, in process: Host construction minus discovery (warm index).
REGISTER = r"""
import importlib, json, sys, time
repeats = int(sys.argv[1])
import pluggy
from textkit import SPEC
from pluginsdk import Host
from pluginsdk.discovery import discover
from pluginsdk._markers import PROJECT

def clock(fn):
    t = time.perf_counter(); fn(); return time.perf_counter() - t

def host():
    Host(SPEC).close()

first_host = clock(host)  # includes one-time work (factory compile, lazy imports)
disc, hosts = [], []
for i in range(repeats):
    disc.append(clock(lambda: discover(SPEC)))
    hosts.append(clock(host))
mods = [importlib.import_module(c.module) for c in discover(SPEC)]
assert len(mods) == 100
def eager():
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(SPEC.namespace())
    for m in mods:
        pm.register(m)
plain = [clock(eager) for _ in range(repeats)]
print(json.dumps({"first_host": first_host, "discover": disc, "host": hosts, "pluggy_register": plain}))
"""

# First call of lazily loaded plugins, fresh process: argv = mode, [site].
FIRSTCALL = r"""
import json, sys, time
mode = sys.argv[1]
path = sys.argv[2:] or None
if path:
    sys.path.insert(0, path[0])
t0 = time.perf_counter()
from textkit import SPEC
if mode == "sdk":
    from pluginsdk import Host
    h = Host(SPEC, path=path)
    t1 = time.perf_counter()
    n = len(h.plugins())
    t1b = time.perf_counter()
    h.hook.transform(text="x")
    t2 = time.perf_counter()
    h.hook.transform(text="x")
    t3 = time.perf_counter()
    out = {"construct": t1 - t0, "first": t2 - t1b, "second": t3 - t2}
else:  # eager plain pluggy: import every plugin module, register, call
    import importlib, pluggy
    from pluginsdk.discovery import discover
    from pluginsdk._markers import PROJECT
    cands = discover(SPEC, path=path)
    n = len(cands)
    t1b = time.perf_counter()
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(SPEC.namespace())
    for c in cands:
        pm.register(importlib.import_module(c.module), name=c.name)
    pm.hook.transform(text="x")
    t2 = time.perf_counter()
    out = {"first": t2 - t1b}
out["n"] = n
out["decimal_loaded"] = "decimal" in sys.modules
print(json.dumps(out))
"""


# -- fixtures -------------------------------------------------------------------


def backdate(*paths: Path) -> None:
    """The SDK's index distrusts mtimes within 2 s of its writing ("racy" rule)."""
    past = time.time() - 120
    for p in paths:
        os.utime(p, (past, past))


def build_site(site: Path, n_dists: int, plugins: list[str]) -> None:
    site.mkdir(parents=True)
    for name in plugins:
        install_plugin(site, name, PLUGIN)
    for i in range(n_dists - len(plugins)):
        install_plain_dist(site, f"noise-{i:04d}")
    shutil.copy(ROOT / "tests" / "textkit.py", site / "textkit.py")
    backdate(site, *site.glob("*/pluginsdk.toml"))


class Fixture:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.site = tmp / "site"
        self.site1 = tmp / "site1"
        self.site10 = tmp / "site10"
        self.work = tmp / "work"  # children's cwd: '' on sys.path, so keep it empty and old
        self.cache = tmp / "cache"
        self.xdg = tmp / "xdg"
        build_site(self.site, N_DISTS, [f"p{i:03d}" for i in range(N_PLUGINS)])
        build_site(self.site1, 1, ["solo"])
        build_site(self.site10, 10, [f"ten{i:02d}" for i in range(10)])
        for d in (self.work, self.cache, self.xdg):
            d.mkdir()
        backdate(self.work)
        self._cold = 0
        pythonpath = [str(self.site)]
        # pluginsdk must be importable in the children; only add the repo if it is not installed.
        probe = subprocess.run(
            [sys.executable, "-c", "import pluginsdk, pluggy"], cwd=self.work, env=self.env([]), capture_output=True
        )
        if probe.returncode != 0:
            pythonpath.append(str(ROOT))
        self.pythonpath = pythonpath

    def env(self, pythonpath: list[str] | None = None, cache: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONPATH"] = os.pathsep.join(self.pythonpath if pythonpath is None else pythonpath)
        env["PLUGINSDK_CACHE_DIR"] = str(cache or self.cache)
        env["XDG_CACHE_HOME"] = str(self.xdg)
        return env

    def child(self, code: str, *args: str, cache: Path | None = None) -> tuple[float, str]:
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=self.work,
            env=self.env(cache=cache),
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"child failed:\n{code}\n{proc.stderr}")
        return elapsed, proc.stdout

    def cold_cache(self) -> Path:
        self._cold += 1
        return self.tmp / f"cold-{self._cold}"


# -- measuring ------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.1f} ms"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:8.3f} us"


def summary(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "min": min(xs), "p25": q[0], "p75": q[2], "n": len(xs)}


def run_process_cases(fx: Fixture, rounds: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    codes = {k: code.replace("{G!r}", repr(GROUP)) for k, (_, code) in PROCESS_CASES.items()}
    # Warm everything up: .pyc files, SDK index, stevedore cache.
    for _ in range(2):
        for k, code in codes.items():
            fx.child(code, cache=fx.cold_cache() if k == "sdk_cold" else None)
    checks: dict[str, Any] = {}
    times: dict[str, list[float]] = {k: [] for k in codes}
    outputs: dict[str, list[str]] = {k: [] for k in codes}
    order = list(codes)
    for _ in range(rounds):
        random.shuffle(order)
        for k in order:
            t, out = fx.child(codes[k], cache=fx.cold_cache() if k == "sdk_cold" else None)
            times[k].append(t)
            outputs[k].append(out.strip())
    for k, outs in outputs.items():
        if k in ("pass", "pluggy"):
            continue
        counts = sorted({o.split()[0] for o in outs})
        checks[k] = {
            "found": counts,
            "runs_importing_importlib.metadata": sum(o.split()[1] == "1" for o in outs),
            "runs_importing_importlib_metadata": sum(o.split()[2] == "1" for o in outs),
            "runs": len(outs),
        }
    return times, checks


def run_hookcall(fx: Fixture, repeats: int) -> dict[str, Any]:
    out = {}
    for n, site in ((1, fx.site1), (10, fx.site10)):
        _, text = fx.child(HOOKCALL, str(site), str(n), str(repeats))
        out[n] = json.loads(text)
    return out


def run_register(fx: Fixture, repeats: int) -> dict[str, Any]:
    _, text = fx.child(REGISTER, str(repeats))
    result: dict[str, Any] = json.loads(text)
    return result


def run_firstcall(fx: Fixture, runs: int) -> dict[str, list[dict[str, Any]]]:
    variants = {
        "sdk_1": ("sdk", str(fx.site1)),
        "pluggy_1": ("eager", str(fx.site1)),
        "sdk_100": ("sdk",),
        "pluggy_100": ("eager",),
    }
    res: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    for args in variants.values():  # warm-up (.pyc, index)
        fx.child(FIRSTCALL, *args)
    order = list(variants)
    for _ in range(runs):
        random.shuffle(order)
        for k in order:
            _, text = fx.child(FIRSTCALL, *variants[k])
            res[k].append(json.loads(text))
    return res


def _git_state() -> dict[str, Any]:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    return {"commit": git("rev-parse", "HEAD"), "dirty": git("status", "--porcelain", "--", "pluginsdk").splitlines()}


# -- report ---------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--rounds", type=int, help="fresh-process runs per case")
    parser.add_argument("--pin", action="store_true", help="accepted for symmetry with bench_process; ignored")
    args = parser.parse_args()
    rounds = args.rounds or (6 if args.quick else 40)
    repeats = 11 if args.quick else 41
    first_runs = 5 if args.quick else 15
    started = time.perf_counter()

    tmp = Path(tempfile.mkdtemp(prefix="pluginsdk-bench-core-"))
    try:
        t = time.perf_counter()
        fx = Fixture(tmp)
        print(
            f"fixture: {N_DISTS} distributions, {N_PLUGINS} plugins of {GROUP!r} "
            f"in {fx.site} ({time.perf_counter() - t:.1f} s to build)"
        )
        print(f"python {platform.python_version()} at {sys.executable}; load average {os.getloadavg()[0]:.2f}")
        print(f"{rounds} fresh-process runs per case, interleaved; medians (p25-p75)\n")

        times, checks = run_process_cases(fx, rounds)
        hook = run_hookcall(fx, repeats)
        reg = run_register(fx, repeats)
        first = run_firstcall(fx, first_runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    stats = {k: summary(v) for k, v in times.items()}
    med = {k: s["median"] for k, s in stats.items()}

    print("Fresh process, wall time (imports included)")
    print(f"  {'case':<78} {'median':>11} {'p25-p75':>17}  {'x bare stdlib scan':>18}")
    for k, (label, _) in PROCESS_CASES.items():
        s = stats[k]
        extra = ""
        if k in checks:
            c = checks[k]
            extra = f"  found={'/'.join(c['found'])}"
            if c["runs_importing_importlib.metadata"] or c["runs_importing_importlib_metadata"]:
                extra += (
                    f" imported importlib.metadata in {c['runs_importing_importlib.metadata']}/{c['runs']},"
                    f" importlib_metadata in {c['runs_importing_importlib_metadata']}/{c['runs']}"
                )
        ratio = s["median"] / med["bare_stdlib"]
        print(f"  {label:<78} {ms(s['median'])}  {s['p25'] * 1e3:6.1f}-{s['p75'] * 1e3:6.1f} ms  {ratio:17.2f}x{extra}")

    print(
        "\nIn-process hook call after the first call (per call; median of repeats, min in brackets;"
        " paired ratio = median over repeats of SDK/pluggy timed back to back)"
    )
    hook_rows = {}
    for n, r in hook.items():
        pl, sd = statistics.median(r["pluggy"]), statistics.median(r["sdk"])
        pairwise = statistics.median(b / a for a, b in zip(r["pluggy"], r["sdk"]))
        hook_rows[n] = {
            "pluggy": pl,
            "sdk": sd,
            # The verdict uses the paired ratio: each repeat times pluggy and the SDK
            # back to back, so load changes on a shared machine cancel out.
            "ratio": pairwise,
            "ratio_of_medians": sd / pl,
            "ratio_min": min(r["sdk"]) / min(r["pluggy"]),
        }
        print(
            f"  {n:>2} plugin(s): plain pluggy {us(pl)} [{us(min(r['pluggy']))}]   "
            f"SDK host {us(sd)} [{us(min(r['sdk']))}]   paired ratio {pairwise:.3f}x (of medians {sd / pl:.3f}x, "
            f"min/min {min(r['sdk']) / min(r['pluggy']):.3f}x)"
        )

    print("\nLazy loading")
    reg_host, reg_disc = statistics.median(reg["host"]), statistics.median(reg["discover"])
    reg_cost = reg_host - reg_disc
    reg_plain = statistics.median(reg["pluggy_register"])
    print(
        f"  Host(SPEC) with 100 plugins, warm, in process: {ms(reg_host)}; discover() alone {ms(reg_disc)}; "
        f"registering 100 lazy plugins = {ms(reg_cost)} (first Host in the process: {ms(reg['first_host'])})"
    )
    print(f"  for scale: plain pluggy registering the 100 already-imported modules: {ms(reg_plain)}")
    fc = {
        k: {f: statistics.median(d[f] for d in v) for f in v[0] if f not in ("n", "decimal_loaded")}
        for k, v in first.items()
    }
    for n in (1, 100):
        s, p = fc[f"sdk_{n}"], fc[f"pluggy_{n}"]
        print(
            f"  {n:>3} plugin(s), fresh process: first call (triggers the import) {ms(s['first'])}, second call "
            f"{s['second'] * 1e6:.1f} us; plain pluggy import+register+call {ms(p['first'])}"
        )

    # -- the verdicts ------------------------------------------------------------
    warm_imports = (
        checks["sdk_warm"]["runs_importing_importlib.metadata"]
        + checks["sdk_warm"]["runs_importing_importlib_metadata"]
    )
    rows: list[dict[str, Any]] = []

    def row(
        case: str, value: float, anchor: float, ratio: float, target: str, ok: bool | None, unit: str = "ms"
    ) -> None:
        rows.append(
            {
                "case": case,
                "median": value,
                "anchor": anchor,
                "ratio": ratio,
                "target": target,
                "unit": unit,
                "verdict": "-" if ok is None else ("PASS" if ok else "MISS"),
            }
        )

    r = med["sdk_cold"] / med["bare_stdlib"]
    row(
        "discovery cold (empty cache) vs bare importlib.metadata scan",
        med["sdk_cold"],
        med["bare_stdlib"],
        r,
        "<= 1.20x",
        r <= 1.2,
    )
    r = med["sdk_noindex"] / med["bare_stdlib"]
    row(
        "discovery cold (use_index=False) vs bare importlib.metadata scan",
        med["sdk_noindex"],
        med["bare_stdlib"],
        r,
        "<= 1.20x",
        r <= 1.2,
    )
    r = med["sdk_warm"] / med["stevedore_cache"]
    row("discovery warm index vs stevedore warm cache", med["sdk_warm"], med["stevedore_cache"], r, "< 1.00x", r < 1.0)
    r = med["sdk_warm_discover"] / med["stevedore_cache"]
    row(
        "  (info) discover(SPEC) alone, warm, vs stevedore warm cache",
        med["sdk_warm_discover"],
        med["stevedore_cache"],
        r,
        "info",
        None,
    )
    row(
        "discovery warm: runs importing importlib.metadata",
        warm_imports,
        checks["sdk_warm"]["runs"],
        warm_imports / checks["sdk_warm"]["runs"],
        "0 runs",
        warm_imports == 0,
        unit="runs",
    )
    d = med["sdk_warm"] - med["pluggy"]
    row(
        "host start-up warm, 100 plugins, none called, vs import pluggy",
        med["sdk_warm"],
        med["pluggy"],
        med["sdk_warm"] / med["pluggy"],
        "<= +10 ms",
        d <= 0.010,
    )
    for n, h in hook_rows.items():
        row(
            f"in-process hook call, {n} plugin(s), vs plain pluggy",
            h["sdk"],
            h["pluggy"],
            h["ratio"],
            "<= 1.05x",
            h["ratio"] <= 1.05,
            unit="us",
        )
    for n in (1, 100):
        s, p = fc[f"sdk_{n}"], fc[f"pluggy_{n}"]
        row(
            f"first call, lazy load of {n} plugin(s), vs eager pluggy import+register+call",
            s["first"],
            p["first"],
            s["first"] / p["first"],
            "report",
            None,
        )
    row(
        "registering 100 lazy plugins (Host minus discovery) vs pluggy registering 100 modules",
        reg_cost,
        reg_plain,
        reg_cost / reg_plain,
        "report",
        None,
    )

    print("\nSummary")
    print(f"  {'case':<86} {'median':>11} {'anchor':>11} {'ratio':>7}  {'target':<10} verdict")
    for x in rows:
        if x["unit"] == "us":
            val, anc = us(x["median"]), us(x["anchor"])
        elif x["unit"] == "runs":
            val, anc = f"{x['median']:>6} runs", f"{x['anchor']:>6} runs"
        else:
            val, anc = ms(x["median"]), ms(x["anchor"])
        extra = f"   (+{(x['median'] - x['anchor']) * 1e3:.1f} ms)" if x["target"] == "<= +10 ms" else ""
        print(f"  {x['case']:<86} {val} {anc} {x['ratio']:6.2f}x  {x['target']:<10} {x['verdict']}{extra}")
    total = time.perf_counter() - started
    print(f"\ntotal {total:.0f} s")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "core",
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "git": _git_state(),
                "python": platform.python_version(),
                "executable": sys.executable,
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "loadavg": os.getloadavg(),
                "quick": args.quick,
                "rounds": rounds,
                "fixture": {"distributions": N_DISTS, "plugins": N_PLUGINS, "group": GROUP},
                "summary": rows,
                "process_cases": {k: {"label": PROCESS_CASES[k][0], **stats[k]} for k in stats},
                "checks": checks,
                "hook_call": {str(n): {**h, "raw": hook[n]} for n, h in hook_rows.items()},
                "register": {
                    "host": reg_host,
                    "discover": reg_disc,
                    "cost": reg_cost,
                    "pluggy_register": reg_plain,
                    "raw": reg,
                },
                "first_call": {"medians": fc, "raw": first},
                "seconds": total,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"results written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
