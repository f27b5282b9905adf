"""A sandboxed plugin's dependencies, from its distribution's own ``Requires-Dist`` (issue 12, item 1).

Real installed distributions (stand-ins with the shapes that matter: a
dependency chain like jinja2 -> markupsafe, a C extension with a pure-Python
fallback, a package whose module exists only as an extension, a namespace
package from two distributions), and the real sandbox.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pluginsdk import Host, PluginLoadError, Policy
from pluginsdk._closure import guest_environment, resolve
from pluginsdk._native import refusal

from .plugin_factory import add_requires, install_dist, install_plugin
from .textkit import SPEC

_REASON = None
try:
    from pluginsdk.backends.wasm import WasmBackend

    _REASON = WasmBackend.unavailable_reason()
except ImportError as exc:  # pragma: no cover - the wasm extra is not installed
    _REASON = str(exc)
sandbox = pytest.mark.skipif(_REASON is not None, reason=f"wasm backend unavailable: {_REASON}")

#: Not a loadable library: importing it fails on the host too (ImportError), like a .so of another platform.
FAKE_SO = b"\x7fELF not really a shared object"
SO = ".cpython-312-x86_64-linux-gnu.so"

SAFEMARKUP = """\
try:
    from ._speedups import escape
except ImportError:
    from ._native import escape
"""
NATIVE = "def escape(s):\n    return str(s).replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')\n"
ENGINE = """\
from importlib.resources import files
from safemarkup import escape

def render(name, **values):
    template = files(__name__).joinpath("templates", name).read_text()
    return template.format(**{k: escape(v) for k, v in values.items()})
"""
TMPL_PLUGIN = """\
from importlib.metadata import entry_points, version
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    import tmplengine
    groups = sorted(ep.name for ep in entry_points(group="tmplengine.filters"))
    rendered = tmplengine.render("hello.txt", who=text)
    return " | ".join([rendered, version("safe-markup"), version("tmpl-engine"), version("textkit-tmpl"), *groups])
"""


def install_engine(site: Path, *, markup_version: str | None = "2.1", fallback: bool = True) -> None:
    """``tmpl-engine`` (like jinja2) requiring ``safe-markup>=2.0`` (like markupsafe, with a C speed-up)."""
    install_dist(
        site,
        "tmpl-engine",
        {"tmplengine/__init__.py": ENGINE, "tmplengine/templates/hello.txt": "<p>Hello {who}</p>"},
        requires=("safe-markup>=2.0",),
        entry_points="[tmplengine.filters]\nupper = tmplengine:render\n",
    )
    if markup_version is not None:
        files: dict[str, str | bytes] = {"safemarkup/__init__.py": SAFEMARKUP, f"safemarkup/_speedups{SO}": FAKE_SO}
        if fallback:
            files["safemarkup/_native.py"] = NATIVE
        install_dist(site, "safe-markup", files, version=markup_version)


def install_user(site: Path, name: str, source: str, requires: list[str], *, isolation: str = "wasm") -> None:
    install_plugin(site, name, source, isolation=isolation)
    add_requires(site, f"textkit-{name}", "1.0", requires)


def load_error(site: Path, name: str) -> str:
    with Host(SPEC, path=[str(site)], use_index=False) as host, pytest.raises(PluginLoadError) as info:
        host.load(name)
    return str(info.value)


def closure(site: Path, dist: str) -> list[str]:
    deps = resolve("p", dist, [str(site)], env=guest_environment(), group="textkit.plugins")
    return [d.name for d in deps]


# -- resolution (metadata only) -----------------------------------------------------------


class TestResolution:
    def test_chain_missing_and_unsatisfied(self, site: Path) -> None:
        install_engine(site, markup_version=None)
        install_user(site, "tmpl", TMPL_PLUGIN, ["tmpl-engine>=1"])
        with pytest.raises(PluginLoadError) as info:
            closure(site, "textkit-tmpl")
        assert "textkit-tmpl -> tmpl-engine>=1 -> safe-markup>=2.0: not installed" in str(info.value)
        install_dist(site, "safe-markup", {"safemarkup/__init__.py": NATIVE}, version="1.1")
        with pytest.raises(PluginLoadError, match=r"safe-markup>=2.0: installed 1.1 does not satisfy >=2.0"):
            closure(site, "textkit-tmpl")

    def test_markers_are_the_guests(self, site: Path) -> None:
        """``sys_platform != "wasi"`` is true on the host, false in the sandbox; the guest's answer counts."""
        install_dist(site, "wasi-only", {"wasionly.py": ""})
        install_user(
            site,
            "m",
            "",
            ['not-installed; sys_platform != "wasi"', 'wasi-only; sys_platform == "wasi"', 'old; python_version < "3"'],
        )
        assert ["textkit-m", "wasi-only"] == closure(site, "textkit-m")
        assert {"sys_platform": "wasi", "python_version": "3.12"}.items() <= guest_environment().items()
        assert "3.13" == guest_environment("python-3.13.1.wasm")["python_version"]

    def test_extras(self, site: Path) -> None:
        """The plugin's own extras are not followed (a development install's ``test`` extra has no place in a
        sandbox); a dependency's extras that a requirement asks for are required."""
        install_dist(site, "speedlib", {"speedlib.py": ""})
        install_dist(site, "lib-x", {"libx.py": ""}, requires=('helper; extra == "full"',), extras=("full",))
        install_dist(site, "helper", {"helper.py": ""})
        install_plugin(site, "other", "")
        install_dist(site, "needs-absent", {"needsabsent.py": ""}, requires=("absent",))
        install_plugin(site, "e", "", isolation="wasm")
        info = next(site.glob("textkit_e-*.dist-info"))
        meta = (info / "METADATA").read_text()
        (info / "METADATA").write_text(
            meta + "Provides-Extra: fast\nProvides-Extra: gone\nProvides-Extra: test\nRequires-Dist: lib-x[full]\n"
            'Requires-Dist: speedlib; extra == "fast"\nRequires-Dist: absent; extra == "gone"\n'
            'Requires-Dist: needs-absent; extra == "gone"\nRequires-Dist: textkit-other; extra == "test"\n'
            'Requires-Dist: helper; extra == "test"\n'
        )
        assert ["textkit-e", "lib-x", "helper"] == closure(site, "textkit-e")
        deps = resolve("p", "textkit-e", [str(site)], env=guest_environment(), group="textkit.plugins")
        assert [False, False, False] == [d.optional for d in deps]

    def test_another_plugin_is_never_in_the_closure(self, site: Path) -> None:
        install_plugin(site, "other", "")
        install_user(site, "user", "", ["textkit-other"])
        with pytest.raises(PluginLoadError, match="textkit-user -> textkit-other: 'textkit-other' is a plugin"):
            closure(site, "textkit-user")

    def test_the_sdk_and_guest_libraries_are_not_mounted(self, site: Path) -> None:
        """They are in the sandbox already (``/lib``): checked, not followed (wasmtime would be refused)."""
        install_dist(site, "pluginsdk-isolated", {}, requires=("wasmtime>=50",))
        install_dist(site, "pluggy", {"pluggy/__init__.py": ""}, version="1.5")
        install_user(site, "u", "", ["pluginsdk-isolated", "pluggy>=1"])
        deps = resolve("p", "textkit-u", [str(site)], env=guest_environment(), provided=("pluggy",))
        assert ["textkit-u"] == [d.name for d in deps]


class TestNativeHeuristic:
    """Per module: an extension is fine if the package imports without it."""

    def test_fallback_shapes_pass(self) -> None:
        # markupsafe: a guarded import; msgpack: guarded under an if; pyyaml: an unguarded import in a module
        # that __init__ imports guarded.
        assert refusal("markupsafe", ["m/__init__.py", f"m/_speedups{SO}"], {"m/__init__.py": SAFEMARKUP}) is None
        msgpack = "import os\nif os.environ.get('X'):\n    from .fallback import U\nelse:\n    from ._c import U\n"
        assert refusal("msgpack", ["mp/__init__.py", f"mp/_c{SO}"], {"mp/__init__.py": msgpack}) is None
        yaml = {
            "yaml/__init__.py": "from .error import *\ntry:\n    from .cyaml import *\nexcept ImportError:\n    pass\n",
            "yaml/error.py": "",
            "yaml/cyaml.py": "from yaml._yaml import CParser\n",
        }
        assert refusal("pyyaml", [*yaml, f"yaml/_yaml{SO}"], yaml) is None

    def test_unconditional_extension_is_refused(self) -> None:
        core = {"pc/__init__.py": "from .sub import x\n", "pc/sub.py": "from ._core import x\n"}
        why = refusal("pc-core", [*core, f"pc/_core{SO}"], core)
        assert why is not None and "'pc-core'" in why and f"pc/_core{SO}" in why and "pc -> pc.sub -> pc._core" in why

    def test_top_level_extension_only_is_refused(self) -> None:
        why = refusal("ujson-like", [f"ujsonlike{SO}"], {})
        assert why is not None and "top-level module 'ujsonlike'" in why


# -- in the sandbox --------------------------------------------------------------------------


@pytest.mark.wasm
@sandbox
class TestInSandbox:
    def test_chain_runs_as_in_process(self, site: Path) -> None:
        """jinja2 -> markupsafe shape, C speed-up left out: the same answer, metadata (the plugin's own too),
        entry points and data files included."""
        install_engine(site)
        install_user(site, "tmpl", TMPL_PLUGIN, ["tmpl-engine>=1"], isolation="inprocess")
        with Host(SPEC, path=[str(site)], use_index=False) as host:
            inprocess = host.hook.transform(text="<you & me>")
        policy = Policy(isolation={"tmpl": "wasm"})
        with Host(SPEC, path=[str(site)], policy=policy, use_index=False) as host:
            sandboxed = host.hook.transform(text="<you & me>")
            assert "wasm" == host.plugin("tmpl").isolation
        expected = "<p>Hello &lt;you &amp; me&gt;</p> | 2.1 | 1.0 | 1.0 | upper"
        assert [expected] == inprocess == sandboxed

    def test_extension_without_source_is_refused(self, site: Path) -> None:
        install_dist(
            site, "core-lib", {"corelib/__init__.py": "from ._core import f\n", f"corelib/_core{SO}": FAKE_SO}
        )
        install_user(site, "c", "", ["core-lib"])
        reason = load_error(site, "c")
        assert "plugin 'c'" in reason and "textkit-c -> core-lib: distribution 'core-lib'" in reason
        assert f"corelib/_core{SO} is a C extension with no Python source" in reason

    def test_missing_dependency_names_the_chain(self, site: Path) -> None:
        install_engine(site, markup_version=None)
        install_user(site, "tmpl", TMPL_PLUGIN, ["tmpl-engine>=1"])
        reason = load_error(site, "tmpl")
        assert reason.startswith("plugin 'tmpl': ")
        assert reason.endswith(": textkit-tmpl -> tmpl-engine>=1 -> safe-markup>=2.0: not installed")

    def test_marker_excluding_a_dependency_for_the_guest(self, site: Path) -> None:
        """Required on the host (``sys_platform != "wasi"``) and absent: the sandbox does not need it."""
        install_dist(site, "wasi-only", {"wasionly.py": "WHERE = 'wasi'\n"})
        source = "from pluginsdk import hookimpl\n@hookimpl\ndef transform(text):\n    import wasionly\n"
        source += "    return wasionly.WHERE\n"
        install_user(site, "m", source, ['posix-only; sys_platform != "wasi"', 'wasi-only; sys_platform == "wasi"'])
        with Host(SPEC, path=[str(site)], use_index=False) as host:
            assert ["wasi"] == host.hook.transform(text="")

    def test_namespace_package_from_two_distributions(self, site: Path) -> None:
        install_dist(site, "ns-a", {"nspkg/a/__init__.py": "NAME = 'a'\n"})
        install_dist(site, "ns-b", {"nspkg/b/__init__.py": "NAME = 'b'\n"})
        install_dist(site, "ns-outsider", {"nspkg/c/__init__.py": "NAME = 'c'\n"})
        source = """\
from pluginsdk import hookimpl
@hookimpl
def transform(text):
    import importlib.util
    import nspkg.a, nspkg.b
    return f"{nspkg.a.NAME} {nspkg.b.NAME} {importlib.util.find_spec('nspkg.c') is None}"
"""
        install_user(site, "ns", source, ["ns-a", "ns-b"])
        with Host(SPEC, path=[str(site)], use_index=False) as host:
            assert ["a b True"] == host.hook.transform(text="")

    def test_marker_environment_is_what_the_guest_reports(self, site: Path) -> None:
        """The values markers are evaluated with are the sandbox interpreter's own (as packaging computes them)."""
        source = """\
from pluginsdk import hookimpl
@hookimpl
def transform(text):
    import os, platform, sys
    return repr({
        "implementation_name": sys.implementation.name, "os_name": os.name,
        "platform_machine": platform.machine(), "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(), "platform_system": platform.system(),
        "platform_version": platform.version(), "python_full_version": platform.python_version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]), "sys_platform": sys.platform,
    })
"""
        install_user(site, "env", source, [])
        with Host(SPEC, path=[str(site)], use_index=False) as host:
            (reported,) = host.hook.transform(text="")
            interpreter = host.plugin("env").runtime
        expected = guest_environment("python-3.12.0.wasm")
        assert "python-3.12.0.wasm" in interpreter
        assert {k: v for k, v in expected.items() if k != "implementation_version"} == ast.literal_eval(reported)

    def test_a_left_out_extension_imported_directly_is_named(self, site: Path) -> None:
        """A plugin importing the C speed-up itself fails at load, and the error says what was left out."""
        install_engine(site)
        source = "import safemarkup._speedups\nfrom pluginsdk import hookimpl\n"
        source += "@hookimpl\ndef transform(text):\n    pass\n"
        install_user(site, "direct", source, ["safe-markup"])
        reason = load_error(site, "direct")
        assert "ModuleNotFoundError" in reason and f"safe-markup: safemarkup/_speedups{SO}" in reason, reason

    def test_links_and_editable_installs_are_refused(self, site: Path, tmp_path: Path) -> None:
        """Only regular files an installer wrote are staged: never a link out, never an editable checkout."""
        secret = tmp_path / "secret.txt"
        secret.write_text("host secret")
        install_dist(site, "linker", {"linker/__init__.py": ""})
        (site / "linker" / "data.txt").symlink_to(secret)
        info = next(site.glob("linker-*.dist-info"))
        (info / "RECORD").write_text((info / "RECORD").read_text() + "linker/data.txt,,\n")
        install_user(site, "l", "", ["linker"])
        reason = load_error(site, "l")
        assert "textkit-l -> linker:" in reason and str(site / "linker" / "data.txt") in reason
        assert "not a regular file" in reason
        info = install_dist(site, "devlib", {"devlib.pth": str(tmp_path)})
        (info / "direct_url.json").write_text('{"url": "file:///src/devlib", "dir_info": {"editable": true}}')
        install_user(site, "d", "", ["devlib"])
        assert "textkit-d -> devlib: 'devlib' is an editable install" in load_error(site, "d")

    def test_one_closure_is_staged_once(self, site: Path) -> None:
        """Plugins with the same dependencies share one staged copy of them (and its bytecode)."""
        from pluginsdk._wasm.interpreter import wasm_cache_dir

        install_engine(site)
        source = "from pluginsdk import hookimpl\n@hookimpl\ndef transform(text):\n    import tmplengine\n"
        source += "    return tmplengine.render('hello.txt', who=text)\n"
        install_user(site, "one", source, ["tmpl-engine"])
        install_user(site, "two", source, ["tmpl-engine"])
        before = set(wasm_cache_dir().glob("site-*"))
        with Host(SPEC, path=[str(site)], use_index=False) as host:
            assert ["<p>Hello &lt;&gt;</p>"] * 2 == host.hook.transform(text="<>")
        staged = set(wasm_cache_dir().glob("site-*")) - before
        assert 3 == len(staged)  # the shared dependencies, and each plugin's own metadata

    def test_an_extra_the_sandbox_refuses_is_left_out(self, site: Path) -> None:
        """A plugin's extra needing a C extension it cannot do without does not keep the plugin out (extras are
        not mounted)."""
        install_dist(
            site, "core-lib", {"corelib/__init__.py": "from ._core import f\n", f"corelib/_core{SO}": FAKE_SO}
        )
        source = "from pluginsdk import hookimpl\n@hookimpl\ndef transform(text):\n    try:\n        import corelib\n"
        source += "    except ImportError:\n        return 'without'\n    return 'with'\n"
        install_plugin(site, "x", source, isolation="wasm")
        info = next(site.glob("textkit_x-*.dist-info"))
        meta = (info / "METADATA").read_text()
        (info / "METADATA").write_text(meta + 'Provides-Extra: fast\nRequires-Dist: core-lib; extra == "fast"\n')
        with Host(SPEC, path=[str(site)], use_index=False) as host:
            assert ["without"] == host.hook.transform(text="")
