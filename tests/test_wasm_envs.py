"""A private environment at isolation ``wasm`` (issue 12, item 2): its dependencies staged for the sandbox.

Real environments, built by the real installer (uv when it is installed,
else ``venv`` and pip), offline from a wheelhouse these tests write, through
the host's policy (``no_index`` + ``find_links``); the real sandbox runs the
plugins.  What the sandbox gets is the closure of the manifest's
``[environment]`` dependencies among the distributions installed in *that*
environment, never the host's.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata
import json
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from pluginsdk import Host, Policy
from pluginsdk._errors import BackendUnavailable, PluginLoadError
from pluginsdk.envs import EnvironmentSettings, list_environments

from .plugin_env import component_unavailable, wasm_unavailable
from .plugin_factory import install_dist, install_plugin
from .textkit import SPEC

_REASON = wasm_unavailable()
sandbox = pytest.mark.skipif(_REASON is not None, reason=f"wasm unavailable: {_REASON}")

#: Not a loadable library: the sandbox cannot load one anyway (its name says CPython 3.12 on Linux).
FAKE_SO = b"\x7fELF not really a shared object"
SO = ".cpython-312-x86_64-linux-gnu.so"

PLUGIN = """\
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    import importlib.util
    from importlib.metadata import version

    import pinme

    helper = version("pinhelper") if importlib.util.find_spec("pinhelper") else "-"
    return f"{text}:{pinme.__version__}:{version('pinme')}:{helper}"
"""


def manifest(dependencies: list[str], isolation: str = "wasm") -> str:
    return textwrap.dedent(
        f"""\
        [plugin]
        requires = "textkit>=1.0,<2"
        isolation = "{isolation}"
        hooks = ["transform"]

        [environment]
        dependencies = {json.dumps(dependencies)}
        """
    )


def make_wheel(
    dest: Path, name: str, version: str, files: Mapping[str, str | bytes], requires: Sequence[str] = ()
) -> Path:
    """A wheel of ``files`` (tagged ``py3-none-any`` whatever they hold), written directly: no build, no network."""
    info = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    contents: dict[str, bytes] = {p: t.encode() if isinstance(t, str) else t for p, t in files.items()}
    contents[f"{info}/METADATA"] = meta.encode()
    contents[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: pluginsdk-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, data in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    contents[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    out = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, data in contents.items():
            z.writestr(path, data)
    return out


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("wheelhouse")
    make_wheel(dest, "pinme", "1.0", {"pinme/__init__.py": "__version__ = '1.0'\n"})
    make_wheel(dest, "pinme", "2.0", {"pinme/__init__.py": "__version__ = '2.0'\n"}, requires=["pinhelper>=1"])
    make_wheel(dest, "pinhelper", "1.5", {"pinhelper.py": ""})
    # Like pydantic_core: the package imports a module that exists only as a C extension.
    make_wheel(dest, "corelib", "1.0", {"corelib/__init__.py": "from ._core import f\n", f"corelib/_core{SO}": FAKE_SO})
    # Like markupsafe: a C speed-up with a pure-Python fallback.
    fallback = "try:\n    from ._speedups import escape\nexcept ImportError:\n    from ._native import escape\n"
    native = "def escape(s):\n    return str(s).replace('<', '&lt;')\n"
    make_wheel(
        dest,
        "safemarkup",
        "2.1",
        {"safemarkup/__init__.py": fallback, "safemarkup/_native.py": native, f"safemarkup/_speedups{SO}": FAKE_SO},
    )
    return dest


@pytest.fixture
def policy(wheelhouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Policy:
    """Offline, from the wheelhouse; environments in a cache of this test's own."""
    monkeypatch.setenv("PLUGINSDK_CACHE_DIR", str(tmp_path / "cache"))
    return Policy(environments=EnvironmentSettings(find_links=(str(wheelhouse),), no_index=True, timeout=300))


def pip_freeze() -> str:
    result = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True)
    assert 0 == result.returncode, result.stderr
    return result.stdout


def test_the_policy_can_forbid_private_environments_at_wasm(site: Path) -> None:
    install_plugin(site, "pinned", PLUGIN, manifest=manifest(["pinme==1.0"]))
    with Host(SPEC, path=[str(site)], policy=Policy(environments={"allowed": False}), use_index=False) as host:
        info = host.plugin("pinned")
        assert ("unavailable", "wasm") == (info.status, info.isolation)
        assert "plugin 'pinned'" in info.reason and "allowed = false" in info.reason
        with pytest.raises(BackendUnavailable):
            host.load("pinned")


@pytest.mark.wasm
@pytest.mark.slow
@sandbox
def test_two_sandboxed_plugins_pin_two_versions_and_the_host_is_unchanged(site: Path, policy: Policy) -> None:
    """Each sandbox sees its own pin (module and metadata) and its closure, never the host's installed copy."""
    install_dist(site, "pinme", {"pinme/__init__.py": "__version__ = '3.0'\n"}, version="3.0")
    install_dist(site, "pinhelper", {"pinhelper.py": ""}, version="9.0")
    install_plugin(site, "old", PLUGIN, manifest=manifest(["pinme==1.0"]))
    install_plugin(site, "new", PLUGIN, manifest=manifest(["pinme==2.0"]))
    before = pip_freeze()
    with Host(SPEC, path=[str(site)], policy=policy, use_index=False) as host:
        results = host.hook.transform.by_plugin(text="v")
        assert {"old": "v:1.0:1.0:-", "new": "v:2.0:2.0:1.5"} == results
        assert ("wasm", "wasm") == (host.plugin("old").isolation, host.plugin("new").isolation)
    assert before == pip_freeze()
    pinme = importlib.import_module("pinme")
    assert "3.0" == pinme.__version__ == importlib.metadata.version("pinme")  # the host's own copy, untouched
    assert [["pinme==1.0"], ["pinme==2.0"]] == sorted(e["dependencies"] for e in list_environments() if e["complete"])


@pytest.mark.wasm
@pytest.mark.slow
@sandbox
def test_c_extensions_are_judged_per_module(site: Path, policy: Policy) -> None:
    """A dependency with a pure-Python fallback loads; one with no Python source is refused, naming it and the file."""
    install_plugin(site, "native", PLUGIN, manifest=manifest(["corelib==1.0"]))
    source = "from pluginsdk import hookimpl\n@hookimpl\ndef transform(text):\n    import safemarkup\n"
    source += "    return safemarkup.escape(text)\n"
    install_plugin(site, "fallback", source, manifest=manifest(["safemarkup==2.1"]))
    with Host(SPEC, path=[str(site)], policy=policy, use_index=False) as host:
        with pytest.raises(PluginLoadError) as info:
            host.load("native")
        reason = str(info.value)
        assert reason.startswith("plugin 'native': ") and "distribution 'corelib'" in reason, reason
        assert f"corelib/_core{SO} is a C extension with no Python source" in reason
        assert "textkit-native [environment] -> corelib==1.0" in reason
        assert "failed" == host.plugin("native").status
        assert {"fallback": "&lt;b>"} == host.hook.transform.by_plugin(text="<b>")


@pytest.mark.wasm
@pytest.mark.slow
@sandbox
def test_an_unresolvable_pin_fails_only_that_plugin_with_the_installers_message(site: Path, policy: Policy) -> None:
    install_plugin(site, "impossible", PLUGIN, manifest=manifest(["pinme==9.9"]))
    install_plugin(site, "fine", PLUGIN, manifest=manifest(["pinme==1.0"]))
    install_plugin(
        site, "plain", "from pluginsdk import hookimpl\n\n@hookimpl\ndef transform(text):\n    return text\n"
    )
    with Host(SPEC, path=[str(site)], policy=policy, use_index=False) as host:
        assert {"fine": "v:1.0:1.0:-", "plain": "v"} == host.hook.transform.by_plugin(text="v")
        info = host.plugin("impossible")
        assert "failed" == info.status
        assert "plugin 'impossible'" in info.reason and "pinme==9.9" in info.reason
        # The resolver's own words: pip's, or uv's.
        assert "No matching distribution" in info.reason or "No solution found" in info.reason, info.reason
        assert "loaded" == host.plugin("fine").status


@pytest.mark.wasm
@pytest.mark.slow
@pytest.mark.once
@pytest.mark.skipif(component_unavailable() is not None, reason=f"component engine: {component_unavailable()}")
def test_the_component_engine_gets_the_environment_too(
    site: Path, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot engine builds the plugin with its environment's closure, not the host's."""
    monkeypatch.setenv("PLUGINSDK_WASM_ENGINE", "component")
    install_dist(site, "pinme", {"pinme/__init__.py": "__version__ = '3.0'\n"}, version="3.0")
    install_plugin(site, "new", PLUGIN, manifest=manifest(["pinme==2.0"]))
    with Host(SPEC, path=[str(site)], policy=policy, use_index=False) as host:
        assert ["v:2.0:2.0:1.5"] == host.hook.transform(text="v")
        assert "component" in host.plugin("new").runtime
