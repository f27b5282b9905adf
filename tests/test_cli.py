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


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    return subprocess.run([sys.executable, "-m", "pluginsdk", *args], capture_output=True, text=True, env=env)


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

    def test_bad_spec_reference(self, site: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A --spec that is not module:OBJECT is a clear error, exit 1."""
        assert 1 == main(["list", "textkit.plugins", "--path", str(site), "--spec", "textkit"])
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
        assert 0 == main(["inspect", "textkit.plugins", "boxed", "--path", str(site)])
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("sandbox:"))
        reason = unavailable_reason()
        if reason is None:
            assert ".wasm (" in line and "sha256" in line and "wasmtime" in line
        else:
            assert reason in line

    def test_unknown(self, site: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown plugin name is exit status 1."""
        assert 1 == main(["inspect", "textkit.plugins", "ghost", "--path", str(site)])
        assert "no plugin 'ghost'" in capsys.readouterr().err

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
        """``--load`` of a broken plugin shows the host's status and reason, and no incidents."""
        install_plugin(site, "upper", "raise RuntimeError('broken at import')\n", isolation="process")
        result = run_cli("inspect", "textkit.plugins", "upper", "--path", str(site), "--spec", "textkit:SPEC", "--load")
        assert 0 == result.returncode, result.stderr
        (status,) = [x for x in result.stdout.splitlines() if x.startswith("status:")]
        assert "status:         failed" == status
        assert "broken at import" in result.stdout
        assert [] == [x for x in result.stdout.splitlines() if x.startswith("incidents:")]

    def test_load_needs_a_spec(self, site: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """``--load`` without ``--spec`` is an error, exit 1: a host loads plugins against its spec."""
        install_plugin(site, "upper", UPPER, isolation="process")
        assert 1 == main(["inspect", "textkit.plugins", "upper", "--path", str(site), "--load"])
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
        result = run_cli("check", str(make_project(tmp_path, UPPER, GOOD_MANIFEST)))
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
        result = run_cli("check", str(make_project(tmp_path, source, manifest)))
        assert 1 == result.returncode
        assert fragment in result.stderr, result.stderr

    def test_missing_spec(self, tmp_path: Path) -> None:
        """A spec that cannot be imported is reported by name."""
        result = run_cli("check", str(make_project(tmp_path, UPPER, GOOD_MANIFEST, spec="nowhere:SPEC")))
        assert 1 == result.returncode
        assert "nowhere:SPEC" in result.stderr


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Running with no command prints usage and exits 2."""
    assert 2 == main([])
    assert "usage: pluginsdk" in capsys.readouterr().out
