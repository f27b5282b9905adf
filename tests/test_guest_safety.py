"""The guest side (what runs in workers and the sandbox) must not pull in the host side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
HOST_ONLY = [
    "attrs",
    "cattrs",
    "packaging",
    "importlib_metadata",
    "platformdirs",
    "pluginsdk.host",
    "pluginsdk.discovery",
    "pluginsdk.backends",
    "pluginsdk.cli",
    "pluginsdk.manifest",
    "pluginsdk.policy",
    "pluginsdk.spec",
]
BLOCKER = """
import sys, importlib.abc
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"host-only module {{name}} imported on the guest side")
sys.meta_path.insert(0, Block())
sys.path.insert(0, {root!r})
"""


def run_guest(code: str) -> subprocess.CompletedProcess[str]:
    script = BLOCKER.format(blocked=HOST_ONLY, root=str(ROOT)) + code
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)


class TestGuestSide:
    def test_hookimpl_without_host_dependencies(self) -> None:
        """``from pluginsdk import hookimpl`` works with every host-only module blocked."""
        result = run_guest("from pluginsdk import hookimpl, PluginError\nprint(hookimpl.project_name)")
        assert ("pluginsdk", "") == (result.stdout.strip(), result.stderr)

    @pytest.mark.parametrize("module", ["pluginsdk.codec", "pluginsdk._guest"])
    def test_guest_modules(self, module: str) -> None:
        """The codec and the worker loop import nothing of the host side."""
        if not (ROOT / (module.replace(".", "/") + ".py")).exists():
            pytest.fail(f"{module} is missing")
        result = run_guest(f"import {module}\nprint('ok')")
        assert ("ok", "") == (result.stdout.strip(), result.stderr)

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
