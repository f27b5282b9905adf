"""Discovery and lazy loading against real pip installs: a wheel and editable installs."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent

HOST_SCRIPT = """
import json, sys
sys.path.append({tests!r})
from textkit import SPEC
from pluginsdk import Host
with Host(SPEC) as host:
    infos = {{p.name: [p.status, p.dist, p.isolation] for p in host.plugins() if p.dist.startswith("textkit-")}}
    before = sorted(m for m in sys.modules if m.startswith("textkit_"))
    results = sorted(host.hook.transform(text="Hi"))
    after = sorted(m for m in sys.modules if m.startswith("textkit_"))
print(json.dumps({{"infos": infos, "before": before, "results": results, "after": after}}))
"""


def write_project(root: Path, dist: str, module: str, backend: str, body: str) -> Path:
    pkg = root / "src" / module
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(body))
    (pkg / "pluginsdk.toml").write_text('[plugin]\nrequires = "textkit>=1,<2"\nhooks = ["transform"]\n')
    if backend == "hatchling":
        build = '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        tool = f'[tool.hatch.build.targets.wheel]\npackages = ["src/{module}"]\n'
    else:
        build = '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
        tool = f'[tool.setuptools.package-data]\n{module} = ["pluginsdk.toml"]\n'
    (root / "pyproject.toml").write_text(
        build
        + f'[project]\nname = "{dist}"\nversion = "1.2"\n'
        + f'[project.entry-points."textkit.plugins"]\n{dist.split("-")[1]} = "{module}"\n'
        + tool
    )
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real virtual environment that sees this one's packages (offline) and has the SDK."""
    where = tmp_path_factory.mktemp("venv")
    venv.create(where, with_pip=False)  # this environment's pip drives it: nothing shadows
    purelib = subprocess.run(
        [str(where / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The outer environment's packages (pluggy, attrs, hatchling, ...) without a download.
    parents = [p for p in {*site.getsitepackages(), site.getusersitepackages()} if os.path.isdir(p)]
    Path(purelib, "outer.pth").write_text("\n".join([str(ROOT), *parents]) + "\n")
    return where


def pip(env: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "-q"]
    cmd += ["--no-index", "--no-build-isolation", "--no-deps"]
    # No pip configuration either: a configured find-links or constraint file is not this checkout.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    result = subprocess.run([*cmd, *args], capture_output=True, text=True, env={**clean, "PIP_CONFIG_FILE": os.devnull})
    assert 0 == result.returncode, result.stderr


@pytest.mark.slow
class TestRealInstalls:
    def test_wheel_and_editable_installs(self, env: Path, tmp_path: Path) -> None:
        """Wheel, hatchling-editable and setuptools-editable plugins are discovered without import, then called."""
        body = "from pluginsdk import hookimpl\n@hookimpl\ndef transform(text):\n    return text.{}()\n"
        pip(
            env, str(write_project(tmp_path / "a", "textkit-wheel", "textkit_wheel", "hatchling", body.format("upper")))
        )
        pip(
            env,
            "-e",
            str(write_project(tmp_path / "b", "textkit-hedit", "textkit_hedit", "hatchling", body.format("lower"))),
        )
        pip(
            env,
            "-e",
            str(write_project(tmp_path / "c", "textkit-sedit", "textkit_sedit", "setuptools", body.format("swapcase"))),
        )
        script = HOST_SCRIPT.format(tests=str(TESTS))
        cache = tmp_path / "cache"
        out = subprocess.run(
            [str(env / "bin" / "python"), "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PLUGINSDK_CACHE_DIR": str(cache)},
        ).stdout
        import json

        data = json.loads(out)
        expected_infos = {
            "wheel": ["available", "textkit-wheel", "inprocess"],
            "hedit": ["available", "textkit-hedit", "inprocess"],
            "sedit": ["available", "textkit-sedit", "inprocess"],
        }
        assert expected_infos == data["infos"]
        assert [] == data["before"]
        assert ["HI", "hI", "hi"] == data["results"]
        assert ["textkit_hedit", "textkit_sedit", "textkit_wheel"] == data["after"]

    def test_editable_manifest_edit_is_seen(self, env: Path, tmp_path: Path) -> None:
        """Editing an editable plugin's manifest changes what the next host sees."""
        body = "from pluginsdk import hookimpl\n@hookimpl\ndef transform(text):\n    return text\n"
        project = write_project(tmp_path / "d", "textkit-live", "textkit_live", "hatchling", body)
        pip(env, "-e", str(project))
        code = (
            f"import sys; sys.path.append({str(TESTS)!r})\n"
            "from textkit import SPEC\nfrom pluginsdk import Host\n"
            "print(Host(SPEC).plugin('live').isolation)\n"
        )
        run = [str(env / "bin" / "python"), "-c", code]
        cache = {**os.environ, "PLUGINSDK_CACHE_DIR": str(tmp_path / "cache")}
        assert "inprocess" == subprocess.run(run, capture_output=True, text=True, check=True, env=cache).stdout.strip()
        manifest = project / "src" / "textkit_live" / "pluginsdk.toml"
        manifest.write_text('[plugin]\nrequires = "textkit>=1,<2"\nhooks = ["transform"]\nisolation = "process"\n')
        assert "process" == subprocess.run(run, capture_output=True, text=True, check=True, env=cache).stdout.strip()
