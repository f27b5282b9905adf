"""Tests for the pluginsdk command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pluginsdk.cli import main

from .plugin_factory import install_plugin

TESTS = Path(__file__).parent
UPPER = "from pluginsdk import hookimpl\n@hookimpl\ndef transform(text):\n    return text.upper()\n"


HIDE_WASMTIME = """\
import sys, importlib.abc
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "wasmtime" or name.startswith("wasmtime."):
            raise ModuleNotFoundError("hidden for the test")
        return None
sys.meta_path.insert(0, Hide())
"""


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]), **extra}


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m pluginsdk ARGS``, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pluginsdk", *args], capture_output=True, text=True, env=cli_env(**env)
    )


class TestList:
    def test_table_imports_no_plugin(self, site: Path) -> None:
        """``list`` shows every plugin with its status, without running plugin code."""
        install_plugin(site, "upper", "open('/dev/null'); raise SystemExit('imported!')\n", isolation="process")
        install_plugin(site, "broken", UPPER, manifest="")
        result = run_cli("list", "textkit.plugins", "--path", str(site))
        assert 0 == result.returncode, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "ISOLATION", "REQUIRES", "STATUS"]
        assert "broken" in lines[1] and "failed: no pluginsdk.toml" in lines[1]
        assert lines[2].split()[:6] == ["upper", "textkit-upper", "1.0", "process", "textkit>=1.0,<2", "available"]
        assert "imported!" not in result.stderr

    def test_spec_judges_compatibility(self, site: Path) -> None:
        """With --spec, incompatible plugins are marked so."""
        install_plugin(site, "new", UPPER, manifest='[plugin]\nrequires = "textkit>=2"\nhooks = ["transform"]\n')
        result = run_cli("list", "textkit.plugins", "--path", str(site), "--spec", "textkit:SPEC", "--json")
        (entry,) = json.loads(result.stdout)
        assert ("new", "incompatible") == (entry["name"], entry["status"])

    def test_empty_group(self, site: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An empty group says so."""
        assert 0 == main(["list", "nothing.plugins", "--path", str(site)])
        assert "no plugins in group 'nothing.plugins'" in capsys.readouterr().out

    def test_misspelled_group_suggests_the_installed_one(self, site: Path) -> None:
        """An empty group names the installed group the user probably meant, in the table and beside JSON."""
        install_plugin(site, "upper", UPPER)
        result = run_cli("list", "textkit", "--path", str(site))
        assert 0 == result.returncode, result.stderr
        assert "no plugins in group 'textkit'; did you mean 'textkit.plugins'?" == result.stdout.strip()
        result = run_cli("list", "textkit.plugin", "--path", str(site), "--json")
        assert [] == json.loads(result.stdout)
        assert "did you mean 'textkit.plugins'?" in result.stderr
        result = run_cli("list", "unrelated.things", "--path", str(site))
        assert "no plugins in group 'unrelated.things'" == result.stdout.strip()

    def test_other_spec_is_incompatible_without_spec(self, site: Path) -> None:
        """Without --spec, a manifest requiring another spec than the group's is not shown as available."""
        install_plugin(site, "upper", UPPER)
        install_plugin(site, "alien", UPPER, manifest='[plugin]\nrequires = "otherkit>=1"\nhooks = ["transform"]\n')
        result = run_cli("list", "textkit.plugins", "--path", str(site), "--json")
        assert 0 == result.returncode, result.stderr
        statuses = {e["name"]: (e["status"], e["reason"]) for e in json.loads(result.stdout)}
        assert {
            "alien": ("incompatible", "requires spec 'otherkit', but group 'textkit.plugins' is for spec 'textkit'"),
            "upper": ("available", ""),
        } == statuses

    def test_sandboxed_plugin_without_wasmtime_is_unavailable(self, site: Path) -> None:
        """Where wasmtime cannot be imported, ``list`` shows a wasm plugin as unavailable, saying why."""
        install_plugin(site, "boxed", UPPER, isolation="wasm")
        install_plugin(site, "upper", UPPER, isolation="process")
        script = HIDE_WASMTIME + (
            "from pluginsdk.cli import main\n"
            f"sys.exit(main(['list', 'textkit.plugins', '--path', {str(site)!r}, '--json']))\n"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=cli_env())
        assert 0 == result.returncode, result.stderr
        entries = {e["name"]: e for e in json.loads(result.stdout)}
        assert ("unavailable", "available") == (entries["boxed"]["status"], entries["upper"]["status"])
        assert "wasmtime is not installed" in entries["boxed"]["reason"]

    def test_misspelled_hook_suggests_the_spec_hook(self, site: Path) -> None:
        """With --spec, a manifest declaring a hook the spec lacks gets the close hook name."""
        install_plugin(site, "upper", UPPER, hooks=("transfrom",))
        result = run_cli("list", "textkit.plugins", "--path", str(site), "--spec", "textkit:SPEC", "--json")
        (entry,) = json.loads(result.stdout)
        assert "failed" == entry["status"]
        assert entry["reason"].endswith("did you mean 'transform' (not 'transfrom')?"), entry["reason"]

    def test_bad_spec_reference(self, site: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A --spec that is not module:OBJECT is a usage error, exit 2."""
        assert 2 == main(["list", "textkit.plugins", "--path", str(site), "--spec", "textkit"])
        assert "module:OBJECT" in capsys.readouterr().err


class TestInspect:
    def test_shows_manifest_fields(self, site: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """``inspect`` prints the plugin's record, limits included."""
        install_plugin(
            site,
            "upper",
            UPPER,
            manifest='[plugin]\nrequires = "textkit>=1"\nhooks = ["transform"]\nisolation = "process"\n'
            "[limits]\nworkers = 2\n",
        )
        assert 0 == main(["inspect", "textkit.plugins", "upper", "--path", str(site)])
        out = capsys.readouterr().out
        assert "isolation:      process" in out
        assert "limits:         workers=2" in out

    def test_sandboxed_plugin_names_its_interpreter(self, site: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """For a wasm plugin, ``inspect`` says which interpreter the sandbox runs, or why there is none."""
        from pluginsdk._wasm.interpreter import unavailable_reason

        install_plugin(site, "boxed", UPPER, isolation="wasm")
        reason = unavailable_reason()
        # A plugin that cannot run here is exit status 1 (it is reported all the same).
        assert (0 if reason is None else 1) == main(["inspect", "textkit.plugins", "boxed", "--path", str(site)])
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("sandbox:"))
        if reason is None:
            assert ".wasm (" in line and "sha256" in line and "wasmtime" in line
        else:
            assert reason in line

    def test_unknown(self, site: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown plugin name is exit status 1, with the close names there are."""
        install_plugin(site, "upper", UPPER)
        assert 1 == main(["inspect", "textkit.plugins", "uper", "--path", str(site)])
        assert "no plugin 'uper' in group 'textkit.plugins'; did you mean 'upper'?" in capsys.readouterr().err
        assert 1 == main(["inspect", "textkit.plugins", "ghost", "--path", str(site)])
        err = capsys.readouterr().err
        assert "no plugin 'ghost'" in err and "did you mean" not in err

    def test_failed_plugin_exits_1(self, site: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """``inspect`` of a plugin a host could not use shows why and exits 1; a usable one exits 0."""
        install_plugin(site, "broken", UPPER, manifest="")
        install_plugin(site, "upper", UPPER)
        assert 1 == main(["inspect", "textkit.plugins", "broken", "--path", str(site)])
        assert "status:         failed" in capsys.readouterr().out
        assert 0 == main(["inspect", "textkit.plugins", "upper", "--path", str(site)])
        assert "status:         available" in capsys.readouterr().out

    def test_json(self, site: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """``inspect --json`` prints the record as JSON, control characters escaped."""
        install_plugin(site, "upper", UPPER, dist="textkit-\x1b[31mupper", isolation="process")
        assert 0 == main(["inspect", "textkit.plugins", "upper", "--path", str(site), "--json"])
        out = capsys.readouterr().out
        assert "\x1b" not in out
        record = json.loads(out)
        assert ("upper", "textkit-\x1b[31mupper", "process", "available") == (
            record["name"],
            record["dist"],
            record["isolation"],
            record["status"],
        )

    def test_without_load_nothing_runs(self, site: Path) -> None:
        """Plain ``inspect`` runs no plugin code, so it shows no runtime and no incidents."""
        install_plugin(site, "upper", "raise SystemExit('imported!')\n", isolation="process")
        result = run_cli("inspect", "textkit.plugins", "upper", "--path", str(site), "--spec", "textkit:SPEC")
        assert 0 == result.returncode, result.stderr
        assert ["status:         available"] == [x for x in result.stdout.splitlines() if x.startswith("status:")]
        assert [] == [x for x in result.stdout.splitlines() if x.startswith(("runtime:", "incidents:"))]
        assert "imported!" not in result.stderr

    def test_load_shows_runtime_and_incidents(self, site: Path) -> None:
        """``--load`` loads the plugin as a host would: its status, where it runs, and each incident on the way."""
        flaky = textwrap.dedent("""
            import os
            HERE = os.path.dirname(os.path.abspath(__file__))
            _tries = len([n for n in os.listdir(HERE) if n.startswith("try-")])
            if _tries < 2:  # the first two workers die while loading
                open(os.path.join(HERE, "try-%d" % _tries), "w").close()
                os._exit(4)
        """)
        install_plugin(site, "upper", flaky + UPPER, isolation="process")
        result = run_cli("inspect", "textkit.plugins", "upper", "--path", str(site), "--spec", "textkit:SPEC", "--load")
        assert 0 == result.returncode, result.stderr
        lines = result.stdout.splitlines()
        assert ["status:         loaded", "runtime:        process (1/1 workers)"] == [
            x for x in lines if x.startswith(("status:", "runtime:"))
        ]
        at = lines.index("incidents:      2")
        assert [("crashed", "-", "worker failed to start: exit code 4")] * 2 == [
            tuple(x.split(maxsplit=2)[2].split("  ", 2)) for x in lines[at + 1 : at + 3]
        ]
        assert at + 3 == len(lines)

    def test_load_of_a_plugin_that_cannot_load(self, site: Path) -> None:
        """``--load`` of a broken plugin shows the host's status and reason, no incidents, and exits 1."""
        install_plugin(site, "upper", "raise RuntimeError('broken at import')\n", isolation="process")
        result = run_cli("inspect", "textkit.plugins", "upper", "--path", str(site), "--spec", "textkit:SPEC", "--load")
        assert 1 == result.returncode, result.stderr
        (status,) = [x for x in result.stdout.splitlines() if x.startswith("status:")]
        assert "status:         failed" == status
        assert "broken at import" in result.stdout
        assert [] == [x for x in result.stdout.splitlines() if x.startswith("incidents:")]

    def test_load_needs_a_spec(self, site: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """``--load`` without ``--spec`` is a usage error, exit 2: a host loads plugins against its spec."""
        install_plugin(site, "upper", UPPER, isolation="process")
        assert 2 == main(["inspect", "textkit.plugins", "upper", "--path", str(site), "--load"])
        assert "--load needs --spec" in capsys.readouterr().err


def make_project(root: Path, source: str, manifest: str, spec: str = "textkit:SPEC") -> Path:
    pkg = root / "src" / "textkit_upper"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(source))
    (pkg / "pluginsdk.toml").write_text(textwrap.dedent(manifest))
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [project]
        name = "textkit-upper"
        version = "1.0"
        [project.entry-points."textkit.plugins"]
        upper = "textkit_upper"
        [tool.pluginsdk]
        spec = "{spec}"
        """)
    )
    return root


GOOD_MANIFEST = '[plugin]\nrequires = "textkit>=1,<2"\nhooks = ["transform"]\n'


class TestCheck:
    def test_valid_project(self, tmp_path: Path) -> None:
        """A project whose manifest matches its code and the spec passes."""
        result = run_cli("check", "--no-build", str(make_project(tmp_path, UPPER, GOOD_MANIFEST)))
        assert 0 == result.returncode, result.stderr
        assert "plugin project is valid" in result.stdout
        assert "implements transform as declared" in result.stdout

    @pytest.mark.parametrize(
        ("source", "manifest", "fragment"),
        [
            (
                UPPER,
                '[plugin]\nrequires = "textkit>=1"\nhooks = ["transform", "detect_language"]\n',
                "does not implement",
            ),
            (UPPER, '[plugin]\nrequires = "textkit>=3"\nhooks = ["transform"]\n', "incompatible"),
            (UPPER, '[plugin]\nrequires = "textkit>=1"\nhooks = ["transform"]\nisolation = "vm"\n', "isolation"),
            ("raise ImportError('nope')\n", GOOD_MANIFEST, "nope"),
            (
                "from pluginsdk import hookimpl\n@hookimpl\ndef transform(txt):\n    return txt\n",
                GOOD_MANIFEST,
                "txt",
            ),
        ],
    )
    def test_problems(self, tmp_path: Path, source: str, manifest: str, fragment: str) -> None:
        """Each mismatch is reported and the exit status is 1."""
        result = run_cli("check", "--no-build", str(make_project(tmp_path, source, manifest)))
        assert 1 == result.returncode
        assert fragment in result.stderr, result.stderr

    def test_missing_spec(self, tmp_path: Path) -> None:
        """A spec that cannot be imported is reported by name: nothing to check against, exit 2."""
        result = run_cli("check", str(make_project(tmp_path, UPPER, GOOD_MANIFEST, spec="nowhere:SPEC")))
        assert 2 == result.returncode
        assert "nowhere:SPEC" in result.stderr

    def test_not_a_project(self, tmp_path: Path) -> None:
        """A directory without pyproject.toml, or no directory at all, is a usage error, exit 2."""
        result = run_cli("check", str(tmp_path))
        assert (2, f"error: {tmp_path}: no pyproject.toml (is this a plugin project?)") == (
            result.returncode,
            result.stderr.strip(),
        )
        assert 2 == run_cli("check", str(tmp_path / "nowhere")).returncode

    def test_misspelled_hooks_get_a_suggestion(self, tmp_path: Path) -> None:
        """A hook misspelled in the manifest, or in the code, is reported with the spec's close hook name."""
        manifest = '[plugin]\nrequires = "textkit>=1"\nhooks = ["transfrom"]\n'
        result = run_cli("check", "--no-build", str(make_project(tmp_path / "a", UPPER, manifest)))
        assert 1 == result.returncode
        assert "did you mean 'transform' (not 'transfrom')?" in result.stderr, result.stderr
        code = "from pluginsdk import hookimpl\n@hookimpl\ndef transfrom(text):\n    return text\n"
        result = run_cli("check", "--no-build", str(make_project(tmp_path / "b", code, GOOD_MANIFEST)))
        assert 1 == result.returncode
        assert "did you mean 'transform' (not 'transfrom')?" in result.stderr, result.stderr

    def test_json(self, tmp_path: Path) -> None:
        """``check --json`` prints the outcome, its exit status included."""
        manifest = '[plugin]\nrequires = "textkit>=3"\nhooks = ["transform"]\n'
        result = run_cli("check", "--no-build", "--json", str(make_project(tmp_path, UPPER, manifest)))
        report = json.loads(result.stdout)
        assert (1, 1, False, None) == (result.returncode, report["exit_code"], report["ok"], report["wheel"])
        (problem,) = report["problems"]
        assert problem.startswith("plugin 'upper': incompatible: requires textkit>=3"), problem


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Running with no command prints usage and exits 2."""
    assert 2 == main([])
    assert "usage: pluginsdk" in capsys.readouterr().out


class TestCommandLine:
    def test_version(self) -> None:
        """``--version`` names the version of the installed distribution, where it runs from, and the Python."""
        from importlib.metadata import version

        result = run_cli("--version")
        assert 0 == result.returncode, result.stderr
        assert result.stdout.startswith(f"pluginsdk {version('pluginsdk-isolated')} from ")
        assert result.stdout.rstrip().endswith(f"(Python {'.'.join(map(str, sys.version_info[:3]))})")

    @pytest.mark.parametrize(
        "command",
        [[], ["list"], ["inspect"], ["check"], ["doctor"], ["wasm"], ["wasm", "warm"], ["wasm", "prune"]],
    )
    def test_help_is_plain_text(self, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        """``--help`` has no reST markup (double backticks, :class: roles), at every level."""
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        out = capsys.readouterr().out
        assert 0 == exit_info.value.code
        assert out.startswith(f"usage: pluginsdk {' '.join(command)}".rstrip())
        assert [] == [m for m in ("``", ":class:", ":func:", ":mod:", ":data:", ":attr:") if m in out]

    def test_top_help_documents_exit_statuses(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The top-level help lists the exit statuses."""
        with pytest.raises(SystemExit):
            main(["--help"])
        out = capsys.readouterr().out
        assert ["0", "1", "2", "3", "130", "141"] == [
            line.split()[0] for line in out.split("exit status:")[1].splitlines() if line[:5].strip().isdigit()
        ]

    def test_closed_pipe_ends_quietly(self, site: Path) -> None:
        """``pluginsdk list ... --json | head -n 1`` ends without a traceback: status 141, stderr empty."""
        for i in range(150):  # well over a pipe's 64 KiB of JSON, so the writer meets the closed pipe
            install_plugin(site, f"p{i:03d}", UPPER, dist=f"textkit-plugin-{i:03d}")
        command = f"{sys.executable} -m pluginsdk list textkit.plugins --path {site} --json | head -n 1"
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, env=cli_env()
        )
        assert (141, "[\n", "") == (result.returncode, result.stdout, result.stderr)


class TestWasmCache:
    def test_prune_json(self, tmp_path: Path) -> None:
        """``wasm prune --json`` lists what it removed: an abandoned temporary file, not a fresh entry."""
        wasm = tmp_path / "wasm"
        wasm.mkdir()
        stale = wasm / ".python-x.cwasm.1.2.tmp"
        stale.write_text("")
        os.utime(stale, (1, 1))
        (wasm / "lib-0123").mkdir()
        (wasm / "lib-0123" / ".complete").write_text("")
        result = run_cli("wasm", "prune", "--days", "1", "--json", PLUGINSDK_CACHE_DIR=str(tmp_path))
        assert 0 == result.returncode, result.stderr
        assert {"removed": [str(stale)], "count": 1} == json.loads(result.stdout)
        assert 2 == run_cli("wasm", "prune", "--days", "-1", PLUGINSDK_CACHE_DIR=str(tmp_path)).returncode

    def test_warm_without_sandbox(self, tmp_path: Path) -> None:
        """``wasm warm`` with an interpreter that does not exist says why, exit 1."""
        result = run_cli("wasm", "warm", "--interpreter", str(tmp_path / "none.wasm"), "--json")
        assert 1 == result.returncode
        assert "the WASM sandbox is not available: cannot read the WASI interpreter" in result.stderr
