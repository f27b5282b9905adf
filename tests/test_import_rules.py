"""The import rules that keep the layout honest.

* The guest side (what runs in workers and the sandbox) is an allow-list:
  :mod:`pluginsdk.guest` and the modules it shares with the host
  (``pluginsdk.guest.SHARED_MODULES``).  Each guest module must import with
  every other part of pluginsdk and every host-only dependency blocked.
* Discovery (finding plugins, reading manifests) imports nothing of the
  backends or the sandbox.
* No import cycles between pluginsdk's modules, lazy imports included
  (imports guarded by ``TYPE_CHECKING`` are for type checkers only).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from pluginsdk import guest

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "pluginsdk"
SHARED = {"pluginsdk" if m == "__init__.py" else f"pluginsdk.{m[:-3]}" for m in guest.SHARED_MODULES}
GUEST_MODULES = sorted(f"pluginsdk.guest.{p.stem}" for p in (PACKAGE / "guest").glob("*.py") if p.stem != "__init__")
#: Third-party packages only the host side may import.
HOST_ONLY_DEPENDENCIES = ["attr", "attrs", "cattrs", "packaging", "importlib_metadata", "platformdirs", "pluggy",
                          "wasmtime", "tomli", "opentelemetry"]  # fmt: skip
#: What a Ray actor imports on a node to run a ``process`` guest: the guest side and these (pluginsdk._ray.actor).
RAY_ACTOR = ["pluginsdk._ray", "pluginsdk._ray.actor"]
DISCOVERY = ["pluginsdk.discovery", "pluginsdk.manifest", "pluginsdk._metadata", "pluginsdk._index"]

BLOCKER = """
import sys, importlib.abc
ALLOWED = {allowed!r}
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if (top == "pluginsdk" and name not in ALLOWED and not name.startswith("pluginsdk.guest")) or top in BLOCKED:
            raise ImportError(f"{{name}} imported on the guest side")
sys.meta_path.insert(0, Block())
sys.path.insert(0, {root!r})
"""


def run_guest(code: str, also: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    allowed = sorted(SHARED | set(also or ()))
    script = BLOCKER.format(allowed=allowed, blocked=HOST_ONLY_DEPENDENCIES, root=str(ROOT)) + code
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(path: Path) -> set[str]:
    """pluginsdk modules ``path`` imports, lazily or not (``TYPE_CHECKING`` blocks excluded)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("pluginsdk"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join([*base, child.module] if child.module else base)
                else:
                    target = child.module or ""
                if target.startswith("pluginsdk"):
                    found.add(target)
                    found.update(f"{target}.{a.name}" for a in child.names)  # submodules named by from-imports
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


class TestGuestSide:
    def test_hookimpl_without_host_dependencies(self) -> None:
        """``from pluginsdk import hookimpl`` works with every host-only module blocked."""
        result = run_guest("from pluginsdk import hookimpl, PluginError\nprint(hookimpl.project_name)")
        assert ("pluginsdk", "") == (result.stdout.strip(), result.stderr)

    @pytest.mark.parametrize("module", [*sorted(SHARED), *GUEST_MODULES])
    def test_guest_module_imports_with_the_host_side_blocked(self, module: str) -> None:
        """Each guest module imports with everything outside the allow-list blocked."""
        result = run_guest(f"import {module}\nprint('ok')")
        assert ("ok", "") == (result.stdout.strip(), result.stderr)

    def test_ray_actor_needs_only_the_guest_side(self) -> None:
        """A node runs a ``process`` guest's actor with pluginsdk's guest side only (no attrs, cattrs, pluggy...)."""
        result = run_guest("import pluginsdk._ray.actor\nprint('ok')", also=RAY_ACTOR)
        assert ("ok", "") == (result.stdout.strip(), result.stderr)

    def test_guest_imports_only_the_allow_list(self) -> None:
        """Statically too: the guest package's imports (lazy ones included) stay inside the allow-list."""
        edges = graph()
        bad = {
            (src, dst)
            for src in [*GUEST_MODULES, "pluginsdk.guest", *SHARED]
            for dst in edges[src]
            if dst not in SHARED and not dst.startswith("pluginsdk.guest")
        }
        assert set() == bad

    def test_host_imports_only_the_protocol_of_the_guest(self) -> None:
        """The host side uses the guest package's protocol (and the sandbox its codec's marker), nothing else."""
        edges = graph()
        allowed = {"pluginsdk.guest", "pluginsdk.guest.protocol", "pluginsdk.guest.fastcodec"}
        bad = {
            (src, dst)
            for src, dsts in edges.items()
            if not src.startswith("pluginsdk.guest") and src not in SHARED
            for dst in dsts
            if dst.startswith("pluginsdk.guest") and dst not in allowed
        }
        assert set() == bad

    def test_package_root_is_cheap(self) -> None:
        """``import pluginsdk`` loads no host-side module until a host-side name is used."""
        code = (
            f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport pluginsdk\n"
            "print(sorted(m for m in sys.modules if m.startswith(('attrs', 'cattrs', 'pluginsdk.host'))))\n"
            "pluginsdk.Host\n"
            "print('pluginsdk.host' in sys.modules)\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert ["[]", "True"] == result.stdout.split()


class TestLayers:
    def test_discovery_imports_no_backend(self) -> None:
        """Finding plugins and reading manifests know nothing of how plugins run."""
        edges = graph()
        bad = {
            (src, dst)
            for src in DISCOVERY
            for dst in edges.get(src, ())
            if dst.startswith(("pluginsdk.backends", "pluginsdk._wasm", "pluginsdk.host"))
        }
        assert set() == bad

    def test_no_import_cycles(self) -> None:
        """No module reaches itself through imports (lazy ones count: they are dependencies too)."""
        edges = graph()
        cycles = []
        state: dict[str, int] = {}
        stack: list[str] = []

        def walk(node: str) -> None:
            state[node] = 1
            stack.append(node)
            for nxt in sorted(edges[node]):
                if state.get(nxt) == 1:
                    cycles.append([*stack[stack.index(nxt) :], nxt])
                elif nxt not in state:
                    walk(nxt)
            stack.pop()
            state[node] = 2

        for node in sorted(edges):
            if node not in state:
                walk(node)
        assert [] == cycles
