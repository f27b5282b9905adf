"""Collect every benchmark's results into ``benchmarks/REPORT.md`` and ``benchmarks/per_call_cost.png``.

Run from the repo root after the benchmarks: ``python benchmarks/report.py``
(``nox -s bench`` does both).  Reads ``benchmarks/results/*.json``; a known
benchmark without a results file is listed as "not run".

A results file is a JSON object with a list of rows under ``summary`` (or
``rows``), each with ``case``, ``median``, ``anchor``, ``ratio``, ``target``,
``verdict`` and optionally ``unit`` and ``note``; a bare list of rows is
accepted too.  Times are in **seconds** when the file says
``"values": "seconds"`` (``core`` and ``scaling`` always are), otherwise
already in ``unit``; a row may instead carry ``median_us``, ``median_ms`` or
``median_mib``, the value (and its anchor) in that unit.  The machine it ran on comes from the file's
``machine`` object, or its top-level ``when``/``python``/``platform``/``loadavg``.

The layout depends only on the results: benchmarks in a fixed order, rows
in file order, fixed figure size.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
REPORT = BENCH / "REPORT.md"
CHART = BENCH / "per_call_cost.png"

# The benchmarks `nox -s bench` runs, in report order: name -> (script, title).
KNOWN = {
    "core": ("bench_core.py", "Core: discovery, start-up, hook calls, lazy loading"),
    "process": ("bench_process.py", "The process backend against multiprocessing and a bare floor"),
    "wasm": ("bench_wasm.py", "The wasm backend"),
    "scaling": ("bench_scaling.py", "Per-item cost by isolation level and call size, through a real Host"),
    "restructure": ("bench_restructure.py", "The pooled backend against the code it replaced (old vs new, one run)"),
    "wasm_deps": ("bench_wasm_deps.py", "A sandboxed plugin with a dependency closure"),
    "envs": ("bench_envs.py", "A process plugin in its own environment"),
    "component": ("bench_component.py", "The component sandbox engine against the interpreter engine (one run)"),
    "stats": ("bench_stats.py", "Per-plugin metrics on against off, and the guest's time field"),
    "ray": ("bench_ray.py", "Plugins on Ray against bare Ray actors and the local process level"),
}
# Files whose times are in seconds whatever they say (written before the convention).
SECONDS = {"core", "scaling"}
LEVEL_STYLE = {"inprocess": "#1f77b4", "process": "#ff7f0e", "wasm": "#2ca02c"}
ANCHOR_DASH = {"pluggy": (0, (6, 3)), "socketpair": (0, (6, 3)), "wasi_echo": (0, (6, 3)), "wasm_export": (0, (1, 2))}


# -- the machine -------------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_now() -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--", "pluginsdk")
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "loadavg": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": (commit[:12] + (" + uncommitted changes in pluginsdk/" if dirty else "")) if commit else "unknown",
    }


# -- reading results ------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    """One results file as a dict with ``rows`` (normalized) and ``meta``."""
    raw = json.loads(path.read_text())
    doc: dict[str, Any] = raw if isinstance(raw, dict) else {"summary": raw}
    rows_in: list[dict[str, Any]] = doc.get("summary") or doc.get("rows") or []
    seconds = path.stem in SECONDS or doc.get("values") == "seconds"
    if not seconds and "values" not in doc:
        # Undeclared: a time below a nanosecond in µs or ms can only be seconds.
        seconds = any(
            r.get("unit") in ("ms", "us", "µs") and isinstance(r.get("median"), (int, float)) and 0 < r["median"] < 1e-3
            for r in rows_in
        )
    rows = []
    for r in rows_in:
        median, unit, row_seconds = r.get("median"), str(r.get("unit") or ""), seconds
        if "median" not in r:
            # ``median_<unit>``: the value (and its anchor) already in that unit.
            key = next((k for k in r if k.startswith("median_")), None)
            if key is not None:
                median, row_seconds = r[key], False
                unit = _UNIT_NAMES.get(key[len("median_") :], key[len("median_") :])
        rows.append(
            {
                "case": str(r.get("case") or r.get("measure") or "?"),
                "median": median,
                "anchor": r.get("anchor"),
                "ratio": r.get("ratio"),
                "target": str(r.get("target") or ""),
                "verdict": str(r.get("verdict") or "-"),
                "unit": unit,
                "note": str(r.get("note") or ""),
                "seconds": row_seconds,
            }
        )
    m: dict[str, Any] = doc.get("machine") or {}
    git: dict[str, Any] = doc.get("git") or {}
    loadavg = m.get("loadavg", doc.get("loadavg"))
    meta = {
        "when": m.get("when")
        or doc.get("when")
        or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime)),
        "python": m.get("python") or doc.get("python") or "",
        "loadavg": " / ".join(f"{x:.2f}" for x in loadavg) if isinstance(loadavg, list) else str(loadavg or ""),
        "commit": str(m.get("commit") or git.get("commit") or "")[:12],
        "quick": doc.get("quick"),
    }
    return {"name": path.stem, "doc": doc, "rows": rows, "meta": meta}


_TIME_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "µs": 1e6, "ns": 1e9}
_UNIT_NAMES = {"us": "µs", "mib": "MiB", "ms": "ms", "s": "s"}


def fmt(value: Any, unit: str, seconds: bool) -> str:
    if value is None:
        return ""
    if not isinstance(value, (int, float)):
        return str(value)
    if unit in _TIME_UNITS:
        v = value * _TIME_UNITS[unit] if seconds else value
        shown = "µs" if unit == "us" else unit
        return f"{v:,.2f} {shown}" if abs(v) < 100 else f"{v:,.1f} {shown}"
    if unit == "runs":
        return f"{value:g} runs"
    return f"{value:,.3g} {unit}".strip()


def fmt_ratio(value: Any) -> str:
    return f"{value:.2f}x" if isinstance(value, (int, float)) else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").strip()


def table(rows: list[dict[str, Any]]) -> list[str]:
    with_notes = any(r["note"] for r in rows)
    head = ["case", "median", "anchor", "ratio", "target", "verdict"] + (["note"] if with_notes else [])
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "--:", "--:", "--:", "---", ":-:"]) + "|"]
    if with_notes:
        out[1] += "---|"
    for r in rows:
        verdict = {"PASS": "**PASS**", "MISS": "**MISS**"}.get(r["verdict"], r["verdict"])
        cells = [
            r["case"],
            fmt(r["median"], r["unit"], r["seconds"]),
            fmt(r["anchor"], r["unit"], r["seconds"]),
            fmt_ratio(r["ratio"]),
            r["target"],
            verdict,
        ] + ([r["note"]] if with_notes else [])
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return out


# -- the chart ---------------------------------------------------------------------------


def chart(scaling: dict[str, Any], path: Path) -> None:
    """Log-log per-item cost against items per call: one line per level, anchors as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches: list[int] = scaling["batches"]
    series: dict[str, dict[str, dict[str, float]]] = scaling["series"]
    anchors: dict[str, dict[str, Any]] = scaling.get("anchors", {})
    fig, ax = plt.subplots(figsize=(10, 6), dpi=110)
    for level in scaling["levels"]:
        color = LEVEL_STYLE.get(level, "black")
        if level not in series:
            ax.plot([], [], color=color, label=f"{level}: skipped")
            continue
        s = series[level]
        ys = [s[f"map{n}"]["median"] * 1e6 for n in batches]
        lo = [s[f"map{n}"]["p25"] * 1e6 for n in batches]
        hi = [s[f"map{n}"]["p75"] * 1e6 for n in batches]
        ax.plot(batches, ys, "o-", color=color, lw=2, label=f"{level}: map(items), per item")
        ax.fill_between(batches, lo, hi, color=color, alpha=0.15, lw=0)
        call = s["call"]["median"] * 1e6
        # The single call sits at 1 item; shifted a little left so it does not hide map(1).
        ax.plot([0.8], [call], "s", mfc="white", mec=color, mew=2, ms=8, label=f"{level}: single call")
    right = batches[-1] * 1.6
    placed: list[float] = []  # label heights, nudged apart (log scale) so close anchors stay readable
    for key, a in sorted(anchors.items(), key=lambda kv: kv[1]["median"]):
        color = LEVEL_STYLE.get(a.get("level", ""), "gray")
        y = a["median"] * 1e6
        ax.axhline(y, color=color, lw=1.2, ls=ANCHOR_DASH.get(key, (0, (6, 3))), alpha=0.9)
        label_y = max(y, placed[-1] * 10**0.16) if placed else y
        placed.append(label_y)
        ax.text(right, label_y, f" {a['label']}\n {y:.1f} µs", color=color, va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(0.6, right)
    ax.set_xticks(batches)
    ax.set_xticklabels([f"{n:,}" for n in batches])
    ax.set_xlabel("items per call (map batch size; open squares: a single hook call)")
    ax.set_ylabel("cost per item, µs (median; band p25-p75)")
    m = scaling.get("machine", {})
    ax.set_title(
        f"Per-item cost of a hook call by isolation level\n{m.get('cpu', '')}, {m.get('cores', '?')} cores, "
        f"Python {m.get('python', '')}, load {' / '.join(f'{x:.1f}' for x in m.get('loadavg', []))}",
        fontsize=10,
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)
    fig.subplots_adjust(left=0.08, right=0.8, top=0.9, bottom=0.2)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def scaling_tables(doc: dict[str, Any]) -> list[str]:
    batches: list[int] = doc["batches"]
    out = [
        "Per-item cost (µs, median; p25-p75 in the JSON). `call` is one `host.hook.transform(text=...)`;",
        "`map N` is one `host.hook.transform.map(...)` of N items, divided by N.",
        "",
        "| level | call | " + " | ".join(f"map {n:,}" for n in batches) + " |",
        "|---|" + "--:|" * (len(batches) + 1),
    ]
    for level in doc["levels"]:
        if level not in doc["series"]:
            out.append(f"| {level} | skipped: {_cell(doc['skipped'].get(level, ''))} |" + " |" * len(batches))
            continue
        s = doc["series"][level]
        cells = [f"{s[c]['median'] * 1e6:,.2f}" for c in ("call", *(f"map{n}" for n in batches))]
        out.append(f"| {level} | " + " | ".join(cells) + " |")
    out += ["", "Anchors measured in the same rounds:", "", "| anchor | what | median |", "|---|---|--:|"]
    for a in doc.get("anchors", {}).values():
        out.append(f"| {a['label']} | {_cell(a.get('description', ''))} | {a['median'] * 1e6:,.2f} µs |")
    return out


# -- the report ------------------------------------------------------------------------


def main() -> int:
    found = {p.stem: p for p in sorted(RESULTS.glob("*.json"))}
    names = [n for n in KNOWN] + [n for n in found if n not in KNOWN]
    loaded = {n: load(found[n]) for n in names if n in found}
    m = machine_now()

    lines = [
        "# Benchmark report",
        "",
        "Written by `benchmarks/report.py` from `benchmarks/results/*.json`; regenerate with `nox -s bench`.",
        "Every ratio compares two numbers measured in the same run, on the same machine; compare ratios,",
        "not absolute times across runs. `PASS`/`MISS` is against the issue's target; `-` means reported only.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| platform | {m['platform']} |",
        f"| CPU | {m['cpu']} |",
        f"| cores | {m['cores']} |",
        f"| Python | {m['python']} |",
        f"| load average (1/5/15 min, at report time) | {m['loadavg']} |",
        f"| report written | {m['date']} |",
        f"| git commit | {m['commit']} |",
        "",
        "## Runs",
        "",
        "| benchmark | script | ran at (UTC) | mode | load average | Python | commit |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in names:
        script = KNOWN.get(n, (f"{n}?", ""))[0]
        if n not in loaded:
            lines.append(f"| {n} | `{script}` | not run | | | | |")
            continue
        meta = loaded[n]["meta"]
        mode = {True: "--quick", False: "full"}.get(meta["quick"], "")
        lines.append(
            f"| {n} | `{script}` | {meta['when']} | {mode} | {meta['loadavg']} | {meta['python']} | {meta['commit']} |"
        )
    verdicts = [r["verdict"] for d in loaded.values() for r in d["rows"]]
    lines += [
        "",
        f"Targets: {verdicts.count('PASS')} PASS, {verdicts.count('MISS')} MISS "
        f"({len(verdicts) - verdicts.count('PASS') - verdicts.count('MISS')} rows reported without a target).",
    ]

    chart_made = False
    if "scaling" in loaded:
        try:
            chart(loaded["scaling"]["doc"], CHART)
            chart_made = True
        except ImportError as exc:  # matplotlib is in the bench group; say so rather than fail the report
            print(f"chart skipped: {exc}", file=sys.stderr)
    if chart_made:
        lines += [
            "",
            "## Per-item cost by isolation level and call size",
            "",
            "![Per-item cost of a hook call by isolation level and call size](per_call_cost.png)",
            "",
            "Log-log. Solid lines: `map` batches, cost per item; open squares: a single call; dashed and",
            "dotted lines: the anchors (the floor each level is measured against), in the level's colour.",
        ]

    for n in names:
        title = KNOWN.get(n, ("", n))[1]
        lines += ["", f"## {n}: {title}", ""]
        if n not in loaded:
            lines.append(f"Not run (no `benchmarks/results/{n}.json`).")
            continue
        d = loaded[n]
        if not d["rows"]:
            lines.append("The results file has no rows.")
        else:
            lines += table(d["rows"])
        if n == "scaling" and "series" in d["doc"]:
            lines += ["", *scaling_tables(d["doc"])]

    REPORT.write_text("\n".join(lines) + "\n")
    print(f"wrote {REPORT}" + (f" and {CHART}" if chart_made else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
