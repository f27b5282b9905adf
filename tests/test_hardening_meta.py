"""Red-team findings on metadata (issue 11), each reproduced with real installed distributions.

Case 7: plugin-name squatting.  Case 8: a manifest's limits widening the
host's.  Case 9: oversized manifests.  Case 10: terminal escapes printed by
the CLI.  Case 1: a sandboxed plugin mounting host directories through its
own manifest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pluginsdk import Host, Limits, PluginLoadError, Policy
from pluginsdk.discovery import discover

from .plugin_factory import add_requires, install_library, install_plugin
from .textkit import SPEC

TESTS = Path(__file__).parent
UPPER = "from pluginsdk import hookimpl\n@hookimpl\ndef transform(text):\n    return text.upper()\n"
SQUAT = "from pluginsdk import hookimpl\n@hookimpl\ndef transform(text):\n    return 'SQUATTED'\n"


def run_cli(*args: str, site: Path | None = None) -> subprocess.CompletedProcess[str]:
    path = [str(TESTS), str(TESTS.parent), *([str(site)] if site else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run([sys.executable, "-m", "pluginsdk", *args], capture_output=True, text=True, env=env)


# -- case 7: two distributions declaring one plugin name ------------------------------------


def install_squatter(site: Path) -> None:
    """The genuine ``upper`` (textkit-upper) and an unrelated distribution named earlier claiming it."""
    install_plugin(site, "upper", SQUAT, dist="aaa-squat", module="aaa_squat")
    install_plugin(site, "upper", UPPER)


class TestNameSquatting:
    def test_collision_grants_nothing_and_names_both(self, site: Path) -> None:
        """Both claimants are reported, neither loads, although the policy trusts and allows the name."""
        install_squatter(site)
        policy = Policy(trusted={"upper"}, allow={"upper"}, min_isolation="process")
        with Host(SPEC, path=[str(site)], policy=policy, use_index=False) as host:
            assert [] == host.hook.transform(text="hi")
            infos = {p.name: p for p in host.plugins()}
        assert {"upper (aaa-squat)", "upper (textkit-upper)"} == set(infos)
        for info in infos.values():
            assert "failed" == info.status
            assert "aaa-squat" in info.reason and "textkit-upper" in info.reason, info.reason
            assert "dists" in info.reason  # says how the host settles it

    def test_collision_is_stable_through_the_index(self, site: Path) -> None:
        """A warm index gives the same answer as a cold scan (duplicates are stored as found)."""
        install_squatter(site)
        cold = discover(SPEC, path=[str(site)])
        warm = discover(SPEC, path=[str(site)])
        assert [(c.name, c.status) for c in cold] == [(c.name, c.status) for c in warm]
        assert all(c.status == "failed" for c in warm)

    def test_policy_names_the_owner(self, site: Path) -> None:
        """With ``dists`` naming the owner, that distribution gets the plain name; the squatter is reported."""
        install_squatter(site)
        found = {c.name: c for c in discover(SPEC, path=[str(site)], dists={"upper": "textkit_upper"})}
        assert ("available", "textkit-upper") == (found["upper"].status, found["upper"].dist)
        squatter = found["upper (aaa-squat)"]
        assert "failed" == squatter.status
        assert "'textkit_upper', not 'aaa-squat'" in squatter.reason

    def test_named_owner_absent_refuses_the_squatter(self, site: Path) -> None:
        """A name the policy gives to one distribution is never loaded from another, even without a collision."""
        install_plugin(site, "upper", SQUAT, dist="aaa-squat", module="aaa_squat")
        (cand,) = discover(SPEC, path=[str(site)], dists={"upper": "textkit-upper"})
        assert ("upper", "failed") == (cand.name, cand.status)
        assert "textkit-upper" in cand.reason and "aaa-squat" in cand.reason
        policy = Policy(dists={"upper": "textkit-upper"})
        assert policy.refusal("upper", "aaa-squat") is not None
        assert policy.refusal("upper", "Textkit_Upper") is None

    def test_dists_from_toml(self, tmp_path: Path) -> None:
        config = tmp_path / "host.toml"
        config.write_text('[policy]\ntrusted = ["upper"]\n[policy.dists]\nupper = "textkit-upper"\n')
        assert {"upper": "textkit-upper"} == dict(Policy.from_toml(config).dists)


# -- case 8: a manifest's limits can only narrow the host's ---------------------------------


class TestManifestCannotWiden:
    def test_manifest_workers_capped_by_policy(self, site: Path) -> None:
        """A plugin asking for 4 workers gets the 2 the policy allows."""
        manifest = textwrap.dedent(
            """
            [plugin]
            requires = "textkit>=1.0,<2"
            isolation = "process"
            hooks = ["transform"]
            [limits]
            workers = 4
            recycle_after = 0
            """
        )
        install_plugin(site, "greedy", UPPER, manifest=manifest)
        policy = Policy(limits=Limits(workers=2, recycle_after=100))
        with Host(SPEC, path=[str(site)], policy=policy, use_index=False) as host:
            runtime = host.load("greedy").runtime
            limits = policy.limits_for("greedy", discover(SPEC, path=[str(site)])[0].limits)
        assert runtime.endswith("/2 workers)"), runtime
        assert (2, 100) == (limits.workers, limits.recycle_after)


# -- case 9: manifest size ------------------------------------------------------------------

BIG_MANIFEST = '[plugin]\nrequires = "textkit>=1.0,<2"\nhooks = ["transform"]\nisolation = "{}"\n'


class TestManifestSize:
    def test_oversized_manifest_is_refused_unread(self, site: Path) -> None:
        """A manifest over 64 KiB fails its plugin with a short reason; the others still load."""
        install_plugin(site, "huge", UPPER, manifest=BIG_MANIFEST.format("x" * 300_000))
        install_plugin(site, "upper", UPPER)
        with Host(SPEC, path=[str(site)], use_index=False) as host:
            assert ["HI"] == host.hook.transform(text="hi")
            info = host.plugin("huge")
        assert "failed" == info.status
        assert "larger than 64 KiB" in info.reason
        assert len(info.reason) < 1000

    def test_long_values_make_short_reasons(self, site: Path) -> None:
        """Under the cap, a manifest full of bad values still gives a reason of bounded length."""
        hooks = ", ".join(f'"bad name {i} {"y" * 40}"' for i in range(700))
        manifest = f'[plugin]\nrequires = "textkit>=1.0,<2"\nisolation = "{"z" * 20_000}"\nhooks = [{hooks}]\n'
        assert len(manifest) < 64 * 1024
        install_plugin(site, "noisy", UPPER, manifest=manifest)
        (cand,) = discover(SPEC, path=[str(site)], use_index=False)
        assert "failed" == cand.status
        assert len(cand.reason) <= 4100
        assert "more characters]" in cand.reason


# -- case 10: terminal escapes in CLI output ---------------------------------------------------

TITLE = "\x1b]0;pwned\x07"  # sets the terminal's title


class TestTerminalEscapes:
    def install(self, site: Path) -> None:
        install_plugin(site, "evil\x1b[2J\x9b31m\u202e", UPPER, module="evil_pkg", dist="evil-dist")
        raising = f"raise RuntimeError({TITLE!r})\n"
        install_plugin(site, "title", raising, module="title_pkg", dist="title-dist", version="1.0" + TITLE)

    def test_list_and_inspect_escape_control_characters(self, site: Path) -> None:
        self.install(site)
        listed = run_cli("list", "textkit.plugins", "--path", str(site), "--spec", "textkit:SPEC")
        inspected = run_cli("inspect", "textkit.plugins", "title", "--path", str(site), "--spec", "textkit:SPEC")
        loaded = run_cli(
            "inspect", "textkit.plugins", "title", "--path", str(site), "--spec", "textkit:SPEC", "--load", site=site
        )
        for result in (listed, inspected, loaded):
            assert (1 if result is loaded else 0) == result.returncode, result.stderr  # loading it fails: exit 1
            for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
                assert raw not in result.stdout + result.stderr
        assert "evil\\x1b[2J\\x9b31m\\u202e" in listed.stdout
        assert "1.0\\x1b]0;pwned\\x07" in inspected.stdout
        assert "RuntimeError: \\x1b]0;pwned\\x07" in loaded.stdout

    def test_json_is_escaped_and_exact(self, site: Path) -> None:
        self.install(site)
        result = run_cli("list", "textkit.plugins", "--path", str(site), "--json")
        assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
        names = {entry["name"] for entry in json.loads(result.stdout)}
        assert "evil\x1b[2J\x9b31m\u202e" in names  # JSON keeps the value exact, escaped

    def test_check_output_is_escaped(self, tmp_path: Path) -> None:
        project = tmp_path / "proj"
        (project / "evil_check").mkdir(parents=True)
        (project / "evil_check" / "__init__.py").write_text(f"raise RuntimeError({TITLE!r})\n")
        (project / "evil_check" / "pluginsdk.toml").write_text(
            '[plugin]\nrequires = "textkit>=1.0,<2"\nhooks = ["transform"]\n'
        )
        (project / "pyproject.toml").write_text(
            '[project]\nname = "evil-check"\n[project.entry-points."textkit.plugins"]\n'
            'evil = "evil_check"\n[tool.pluginsdk]\nspec = "textkit:SPEC"\n'
        )
        result = run_cli("check", "--no-build", str(project))
        assert 1 == result.returncode
        assert "\x1b" not in result.stdout + result.stderr
        assert "\\x1b]0;pwned" in result.stderr


# -- case 1: what a sandbox may see is decided by the host ---------------------------------

WASM_USER = """
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    import {dep}
    return {dep}.shout(text)
"""
SHOUT = "def shout(s):\n    return s.upper() + '!!'\n"


def wasm_manifest(*packages: str) -> str:
    listed = ", ".join(f'"{p}"' for p in packages)
    return (
        '[plugin]\nrequires = "textkit>=1.0,<2"\nisolation = "wasm"\nhooks = ["transform"]\n'
        f"[wasm]\npackages = [{listed}]\n"
    )


def install_wasm_user(site: Path, name: str, dep: str, *, requires: tuple[str, ...] = ()) -> None:
    install_plugin(site, name, WASM_USER.format(dep=dep), manifest=wasm_manifest(dep))
    if requires:
        add_requires(site, f"textkit-{name}", "1.0", list(requires))


def dirs(site: Path, dist: str, requested: list[str], allowed: tuple[str, ...] = ()) -> list[tuple[str, str, bool]]:
    from pluginsdk._deps import wasm_package_dirs

    return wasm_package_dirs("p", dist, requested, allowed, [str(site)], group="textkit.plugins")


class TestSandboxMountsResolution:
    """The resolution itself, on real installed distributions (no sandbox needed)."""

    def test_dependency_closure_is_mounted(self, site: Path) -> None:
        """Requires-Dist, recursively, with markers and extras evaluated."""
        install_library(site, "dep-a", "dep_a", SHOUT, requires=("dep-b[fast]",))
        install_library(site, "dep-b", "dep_b", "", requires=('dep-c; extra == "fast"', 'dep-d; python_version < "3"'))
        install_library(site, "dep-c", "dep_c", "")
        install_library(site, "dep-d", "dep_d", "")
        install_wasm_user(site, "user", "dep_a", requires=("dep-a>=1",))
        got = dirs(site, "textkit-user", ["dep_a", "dep_b", "dep_c"])
        assert [("dep_a", str(site / "dep_a"), False), ("dep_b", str(site / "dep_b"), False)] == got[:2]
        assert "dep_c" == got[2][0]
        with pytest.raises(PluginLoadError, match="'dep_d', a package of distribution 'dep-d', which is neither"):
            dirs(site, "textkit-user", ["dep_d"])  # its marker is false here: not a dependency

    def test_host_package_is_refused(self, site: Path) -> None:
        """The host application's installed package is not the plugin's to mount."""
        install_library(site, "hostapp", "hostapp", "SECRET = 1\n")
        install_wasm_user(site, "user", "hostapp")
        with pytest.raises(PluginLoadError) as info:
            dirs(site, "textkit-user", ["hostapp"])
        assert "plugin 'p': [wasm] packages lists 'hostapp', a package of distribution 'hostapp'" in str(info.value)
        assert "wasm_packages" in str(info.value)

    def test_plain_directory_is_refused(self, site: Path) -> None:
        """A directory no installed distribution wrote (beside the host's script, say) is never mounted."""
        (site / "beside_script").mkdir()
        (site / "beside_script" / "__init__.py").write_text("")
        (site / "loose.py").write_text("")
        install_wasm_user(site, "user", "beside_script")
        for name in ("beside_script", "loose"):
            with pytest.raises(PluginLoadError, match=f"'{name}', but .* belongs to no installed distribution"):
                dirs(site, "textkit-user", [name], allowed=(name,))

    def test_top_level_txt_is_not_evidence(self, site: Path) -> None:
        """A plugin's own metadata claiming a directory does not make it the plugin's."""
        (site / "hostdata").mkdir()
        (site / "hostdata" / "__init__.py").write_text("")
        install_wasm_user(site, "user", "hostdata")
        info = next(site.glob("textkit_user-*.dist-info"))
        (info / "top_level.txt").write_text("textkit_user\nhostdata\n")
        with pytest.raises(PluginLoadError, match="belongs to no installed distribution"):
            dirs(site, "textkit-user", ["hostdata"])

    def test_another_plugins_package_is_refused_even_if_required(self, site: Path) -> None:
        install_plugin(site, "other", SHOUT)
        install_wasm_user(site, "user", "textkit_other", requires=("textkit-other",))
        with pytest.raises(PluginLoadError, match="'textkit_other', a package of plugin distribution 'textkit-other'"):
            dirs(site, "textkit-user", ["textkit_other"], allowed=("textkit-other",))

    def test_policy_allows_by_distribution_or_package(self, site: Path) -> None:
        install_library(site, "shared-lib", "shared_lib", SHOUT)
        install_wasm_user(site, "user", "shared_lib")
        for allowed in ("shared-lib", "Shared_Lib", "shared_lib"):
            assert [("shared_lib", str(site / "shared_lib"), False)] == dirs(
                site, "textkit-user", ["shared_lib"], allowed=(allowed,)
            )

    def test_a_directory_shared_with_an_outsider_is_refused(self, site: Path) -> None:
        """If another distribution also installed files into the package, all of them must be eligible."""
        install_library(site, "dep-a", "dep_a", SHOUT)
        intruder = site / "intruder-1.0.dist-info"
        intruder.mkdir()
        (intruder / "METADATA").write_text("Metadata-Version: 2.1\nName: intruder\nVersion: 1.0\n")
        (site / "dep_a" / "extra.py").write_text("")
        (intruder / "RECORD").write_text("dep_a/extra.py,,\nintruder-1.0.dist-info/RECORD,,\n")
        install_wasm_user(site, "user", "dep_a", requires=("dep-a",))
        with pytest.raises(PluginLoadError, match="distribution 'intruder'"):
            dirs(site, "textkit-user", ["dep_a"])


_WASM_REASON = None
try:
    from pluginsdk.backends.wasm import WasmBackend

    _WASM_REASON = WasmBackend.unavailable_reason()
except ImportError as exc:  # pragma: no cover - the wasm extra is not installed
    _WASM_REASON = str(exc)


@pytest.mark.wasm
@pytest.mark.skipif(_WASM_REASON is not None, reason=f"wasm backend unavailable: {_WASM_REASON}")
class TestSandboxMounts:
    """The same rules at load time, in the real sandbox."""

    @pytest.mark.parametrize("kind", ["host package", "plain directory", "other plugin"])
    def test_refused_at_load(self, site: Path, kind: str) -> None:
        """The plugin fails to load, with an error naming it and the package; other plugins keep working."""
        if kind == "host package":
            install_library(site, "hostapp", "hostapp", SHOUT)
            dep, fragment = "hostapp", "a package of distribution 'hostapp', which is neither a dependency"
        elif kind == "plain directory":
            (site / "beside_script").mkdir()
            (site / "beside_script" / "__init__.py").write_text(SHOUT)
            dep, fragment = "beside_script", "belongs to no installed distribution"
        else:
            install_plugin(site, "other", SHOUT)
            dep, fragment = "textkit_other", "a package of plugin distribution 'textkit-other'"
        install_wasm_user(site, "user", dep)
        install_plugin(site, "upper", UPPER)
        with Host(SPEC, path=[str(site)], policy=Policy(disabled={"other"}), use_index=False) as host:
            with pytest.raises(PluginLoadError) as info:
                host.load("user")
            assert ["HI"] == host.hook.transform(text="hi")
            assert "failed" == host.plugin("user").status
        assert "plugin 'user'" in str(info.value) and f"'{dep}'" in str(info.value)
        assert fragment in str(info.value)

    def test_dependency_works_and_policy_allow_works(self, site: Path) -> None:
        install_library(site, "dep-a", "dep_a", SHOUT)
        install_library(site, "shared-lib", "shared_lib", SHOUT)
        install_wasm_user(site, "viadeps", "dep_a", requires=("dep-a",))
        install_wasm_user(site, "viapolicy", "shared_lib")
        policy = Policy(wasm_packages={"shared-lib"})
        with Host(SPEC, path=[str(site)], policy=policy, use_index=False) as host:
            assert {"viadeps": "HEY!!", "viapolicy": "HEY!!"} == host.hook.transform.by_plugin(text="hey")
        refused = pytest.raises(PluginLoadError, match="'shared_lib', a package of distribution 'shared-lib'")
        with Host(SPEC, path=[str(site)], use_index=False) as host, refused:
            host.load("viapolicy")
