"""``pluginsdk check`` builds the project's wheel (its own backend, offline) and checks what a host finds in it.

Every test builds a real wheel with hatchling or setuptools, installed in this
environment, with no build isolation and no index.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from .test_cli import GOOD_MANIFEST, UPPER, run_cli

pytestmark = pytest.mark.slow

HATCHLING = '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
SETUPTOOLS = '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
PACKAGE_DATA = '[tool.setuptools.package-data]\ntextkit_upper = ["pluginsdk.toml"]\n'


def project(
    root: Path,
    build_system: str,
    *,
    manifest: str = GOOD_MANIFEST,
    group: str = "textkit.plugins",
    extra: str = "",
    files: dict[str, bytes] | None = None,
) -> Path:
    """A src-layout plugin project ``textkit-upper`` with the given build system."""
    pkg = root / "src" / "textkit_upper"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(UPPER)
    (pkg / "pluginsdk.toml").write_text(manifest)
    for name, data in (files or {}).items():
        (pkg / name).write_bytes(data)
    (root / "pyproject.toml").write_text(
        build_system
        + textwrap.dedent(f"""
            [project]
            name = "textkit-upper"
            version = "1.0"
            [project.entry-points."{group}"]
            upper = "textkit_upper"
            [tool.pluginsdk]
            spec = "textkit:SPEC"
            """)
        + extra
    )
    return root


def test_hatchling_wheel_is_valid(tmp_path: Path) -> None:
    """A hatchling project ships its manifest: the wheel is built and found valid, exit 0."""
    result = run_cli("check", str(project(tmp_path, HATCHLING)))
    assert 0 == result.returncode, result.stderr
    assert "ok: built textkit_upper-1.0-" in result.stdout
    out = result.stdout.replace("py2.py3", "py3")  # hatchling's tag, depending on its version
    assert "textkit_upper-1.0-py3-none-any.whl ships its manifest (inprocess)" in out
    assert "ok: plugin 'upper': implements transform as declared" in result.stdout
    assert result.stdout.rstrip().endswith("checked)")


def test_setuptools_without_package_data_fails_as_an_install_would(tmp_path: Path) -> None:
    """The issue's case: the source tree passes, the wheel lacks pluginsdk.toml; check says so, exit 1."""
    root = project(tmp_path, SETUPTOOLS)
    assert 0 == run_cli("check", "--no-build", str(root)).returncode
    result = run_cli("check", str(root))
    assert 1 == result.returncode, result.stdout
    assert "plugin 'upper' (failed once installed from textkit_upper-1.0-py3-none-any.whl)" in result.stderr
    assert "no pluginsdk.toml in package 'textkit_upper'" in result.stderr
    assert '[tool.setuptools.package-data] textkit_upper = ["pluginsdk.toml"]' in result.stderr
    assert "/tmp/pluginsdk-check-" not in result.stderr  # the unpacked copy is gone: named by the wheel


def test_setuptools_with_package_data_is_valid(tmp_path: Path) -> None:
    """With the manifest declared as package data, the setuptools wheel passes."""
    result = run_cli("check", "--json", str(project(tmp_path, SETUPTOOLS, extra=PACKAGE_DATA)))
    report = json.loads(result.stdout)
    assert (0, True, [], "textkit_upper-1.0-py3-none-any.whl") == (
        result.returncode,
        report["ok"],
        report["problems"],
        report["wheel"],
    )


def test_wasm_plugin_with_a_c_extension(tmp_path: Path) -> None:
    """A wasm plugin whose wheel carries a compiled extension is refused, naming the file."""
    manifest = GOOD_MANIFEST + 'isolation = "wasm"\n'
    root = project(tmp_path, HATCHLING, manifest=manifest, files={"_speedups.cpython-311-x86_64-linux-gnu.so": b"\0"})
    result = run_cli("check", str(root))
    assert 1 == result.returncode
    assert "isolation 'wasm' cannot load C extensions" in result.stderr
    assert "_speedups.cpython-311-x86_64-linux-gnu.so" in result.stderr


def test_entry_point_in_another_group(tmp_path: Path) -> None:
    """A wheel whose entry point is in a misspelled group declares none in the spec's group, exit 1."""
    result = run_cli("check", str(project(tmp_path, HATCHLING, group="textkit.plugin")))
    assert 1 == result.returncode
    assert (
        "entry_points.txt declares no entry point in group 'textkit.plugins', but one in 'textkit.plugin':"
        " misspelled in pyproject.toml?"
    ) in result.stderr


def test_backend_not_installed(tmp_path: Path) -> None:
    """A build backend missing from this environment: exit 3, naming it, and --no-build as the way out."""
    backend = '[build-system]\nrequires = ["nosuch-backend-xyz"]\nbuild-backend = "nosuch_backend_xyz.api"\n'
    result = run_cli("check", str(project(tmp_path, backend)))
    assert 3 == result.returncode
    assert "the build backend 'nosuch_backend_xyz.api' is not installed in this environment" in result.stderr
    assert "--no-build" in result.stderr


def test_failing_build(tmp_path: Path) -> None:
    """A build that fails: exit 3, with the end of the build's own output."""
    root = project(tmp_path, SETUPTOOLS)
    (root / "setup.py").write_text("raise SystemExit('the build broke here')\n")
    result = run_cli("check", "--json", str(root))
    report = json.loads(result.stdout)
    assert (3, 3) == (result.returncode, report["exit_code"])
    (problem,) = report["problems"]
    assert "building the wheel failed" in problem and "the build broke here" in problem


def test_entry_points_from_the_build_not_pyproject(tmp_path: Path) -> None:
    """Entry points the backend writes (setup.cfg here) count: the wheel passes where the source check cannot see."""
    root = project(tmp_path, SETUPTOOLS, extra=PACKAGE_DATA)
    text = (root / "pyproject.toml").read_text()
    text = text.replace('[project.entry-points."textkit.plugins"]\nupper = "textkit_upper"\n', "")
    (root / "pyproject.toml").write_text(
        text.replace('version = "1.0"\n', 'version = "1.0"\ndynamic = ["entry-points"]\n')
    )
    (root / "setup.cfg").write_text("[options.entry_points]\ntextkit.plugins =\n    upper = textkit_upper\n")
    source = run_cli("check", "--no-build", str(root))
    assert 1 == source.returncode
    assert 'no entry point in [project.entry-points."textkit.plugins"]' in source.stderr
    built = run_cli("check", str(root))
    assert 0 == built.returncode, built.stderr
    assert "ok: plugin 'upper': entry point textkit_upper in textkit_upper-1.0-py3-none-any.whl" in built.stdout
