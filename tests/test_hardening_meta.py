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

from pluginsdk import Host, Limits, Policy
from pluginsdk.discovery import discover

from .plugin_factory import _record_line, install_plugin
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
            assert 0 == result.returncode, result.stderr
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
        result = run_cli("check", str(project))
        assert 1 == result.returncode
        assert "\x1b" not in result.stdout + result.stderr
        assert "\\x1b]0;pwned" in result.stderr


def add_requires(site: Path, dist: str, version: str, requires: list[str]) -> None:
    """Give installed ``dist`` ``Requires-Dist`` lines, as an installer writes them (RECORD kept true)."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    lines = "".join(f"Requires-Dist: {r}\n" for r in requires)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n{lines}")
    record = [
        _record_line(site, p) if p.parent == info and p.name != "RECORD" else line
        for line in (info / "RECORD").read_text().splitlines()
        for p in [site / line.split(",")[0]]
    ]
    (info / "RECORD").write_text("\n".join(record) + "\n")


def install_library(site: Path, dist: str, top: str, source: str, *, requires: tuple[str, ...] = ()) -> Path:
    """A plain (non-plugin) distribution with one top-level package, as an installer leaves it."""
    pkg = site / top
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    meta = "".join(f"Requires-Dist: {r}\n" for r in requires)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n{meta}")
    (info / "top_level.txt").write_text(top + "\n")
    lines = [_record_line(site, p) for p in sorted(pkg.rglob("*")) if p.is_file()]
    lines += [_record_line(site, p) for p in sorted(info.iterdir())]
    (info / "RECORD").write_text("\n".join([*lines, f"{info.name}/RECORD,,"]) + "\n")
    return pkg
