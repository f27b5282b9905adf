"""The cookiecutter template: real bakes, installed into a real venv, tested, checked, and run by a host."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from .plugin_env import ROOT, Env, leakscan_env, wasm_unavailable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter

TEMPLATE = ROOT / "cookiecutter-template"
AWKWARD_DESCRIPTION = 'Finds "quoted" secrets, it\'s naïve — 100% \\ café ☕'
AWKWARD_AUTHOR = "Zoë O'Brien-Łukasiewicz"

# A second host spec, written as its own distribution, for the template's generic branch.
TEXTKIT_SOURCE = (ROOT / "tests" / "textkit.py").read_text()


def bake(output: Path, **context: str) -> Path:
    """Bake the template without prompts; return the generated project."""
    return Path(cookiecutter(str(TEMPLATE), no_input=True, extra_context=context, output_dir=str(output)))


def run_tests(env: Env, project: Path) -> dict[str, int]:
    """Run the baked project's own test suite in ``env``; count outcomes from its JUnit report."""
    report = project / "report.xml"
    result = env.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *env.pytest_plugin_args(),
        f"--junitxml={report}",
        cwd=project,
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 0 ok, 1 failures: both leave a report
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for case in ET.parse(report).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            counts["skipped"] += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
        else:
            counts["passed"] += 1
    assert 0 == counts["failed"], result.stdout
    return counts


def per_level(n_tests: int, unit_tests: int) -> dict[str, int]:
    """Expected outcomes: ``n_tests`` run at each level (wasm skipped where unavailable), plus unit tests."""
    skipped = n_tests if wasm_unavailable() else 0
    return {"passed": unit_tests + 3 * n_tests - skipped, "failed": 0, "skipped": skipped}


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """The shared venv with pluginsdk, the leakscan host and its reference plugins."""
    return leakscan_env(tmp_path_factory)


@pytest.fixture
def installed(env: Env) -> Any:
    """Install a baked project into the venv; uninstall it after the test, leaving the venv as it was."""
    dists: list[str] = []

    def install(project: Path) -> None:
        env.pip_install(str(project))
        dists.append(tomllib.loads((project / "pyproject.toml").read_text())["project"]["name"])

    yield install
    if dists:
        env.pip_uninstall(*dists)


def skip_unavailable(isolation: str) -> None:
    if isolation == "wasm" and wasm_unavailable():
        pytest.skip(f"isolation 'wasm' is unavailable here: {wasm_unavailable()}")


BAKES = [
    pytest.param({"isolation": "inprocess"}, id="inprocess-defaults"),
    pytest.param(
        {
            "isolation": "process",
            "plugin_name": "quoted",
            "description": AWKWARD_DESCRIPTION,
            "author_name": AWKWARD_AUTHOR,
        },
        id="process-quotes-and-non-ascii",
    ),
    pytest.param(
        {
            "isolation": "wasm",
            "plugin_name": "acme.rules_v2",
            "project_slug": "acme-leakscan-rules",
            "package_name": "acme_rules",
            "author_email": "",
        },
        id="wasm-dotted-name-custom-dist",
    ),
]


@pytest.mark.slow
class TestBakedLeakscanPlugin:
    @pytest.mark.parametrize("answers", BAKES)
    def test_bakes_installs_passes_its_tests_and_check(
        self, answers: dict[str, str], tmp_path: Path, env: Env, installed: Any
    ) -> None:
        """The baked project installs, passes its own tests at every level, and passes ``pluginsdk check``."""
        project = bake(tmp_path, **answers)
        installed(project)
        check = env.run("pluginsdk", "check", str(project))
        assert (per_level(3, 3), 0) == (run_tests(env, project), check.returncode), check.stdout + check.stderr

    @pytest.mark.parametrize("answers", BAKES)
    def test_reference_host_discovers_and_calls_it(
        self, answers: dict[str, str], tmp_path: Path, env: Env, installed: Any
    ) -> None:
        """``leakscan`` finds the baked plugin at its level and reports what it detects."""
        skip_unavailable(answers["isolation"])
        project = bake(tmp_path, **answers)
        installed(project)
        name = answers.get("plugin_name", "keywords")
        listing = env.run("leakscan", "plugins")
        row = next(line.split() for line in listing.stdout.splitlines() if line.split()[:1] == [name])
        scan = env.run("leakscan", "scan", "--format", "json", "-", stdin="ok\nthis is CONFIDENTIAL\n")
        ours = [
            (d["line"], d["column"], d["rule"])
            for d in map(json.loads, scan.stdout.splitlines())
            if d["plugin"] == name
        ]
        assert ((answers["isolation"], "available"), [(2, 9, "keyword")]) == ((row[3], row[4]), ours)

    def test_awkward_text_survives_in_metadata(self, tmp_path: Path) -> None:
        """Quotes, apostrophes, backslashes and non-ASCII reach pyproject.toml and the README intact."""
        project = bake(tmp_path, description=AWKWARD_DESCRIPTION, author_name=AWKWARD_AUTHOR)
        meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        readme = (project / "README.md").read_text(encoding="utf-8")
        assert (AWKWARD_DESCRIPTION, AWKWARD_AUTHOR, True) == (
            meta["description"],
            meta["authors"][0]["name"],
            AWKWARD_DESCRIPTION in readme,
        )

    def test_manifest_matches_answers(self, tmp_path: Path) -> None:
        """The manifest carries the spec requirement, chosen isolation and hook; the entry point the package."""
        project = bake(tmp_path, isolation="process", spec_requires=">=1.1,<2")
        manifest = tomllib.loads((project / "src" / "leakscan_keywords" / "pluginsdk.toml").read_text())
        pyproject = tomllib.loads((project / "pyproject.toml").read_text())
        assert (
            {"requires": "leakscan>=1.1,<2", "isolation": "process", "hooks": ["scan_lines"]},
            {"keywords": "leakscan_keywords"},
            "leakscan.spec:SPEC",
        ) == (
            manifest["plugin"],
            pyproject["project"]["entry-points"]["leakscan.plugins"],
            pyproject["tool"]["pluginsdk"]["spec"],
        )


@pytest.mark.slow
class TestBakedPluginForAnotherSpec:
    def test_generic_hook_is_called_by_its_host(self, tmp_path: Path, env: Env, installed: Any) -> None:
        """For a spec other than leakscan, the baked example hook has the spec's arguments and is called."""
        host = tmp_path / "textkit-host"
        (host / "textkit").mkdir(parents=True)
        (host / "textkit" / "__init__.py").write_text(TEXTKIT_SOURCE)
        (host / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
            '[project]\nname = "textkit"\nversion = "1.1"\n'
        )
        installed(host)
        project = bake(
            tmp_path / "out",
            spec_name="textkit",
            plugin_name="echo",
            hook_name="transform",
            hook_args="text",
            spec_import="textkit:SPEC",
            isolation="process",
        )
        installed(project)
        check = env.run("pluginsdk", "check", str(project))
        assert (per_level(2, 1), 0) == (run_tests(env, project), check.returncode), check.stdout + check.stderr


class TestPreGenValidation:
    @pytest.mark.parametrize(
        ("answers", "message"),
        [
            ({"package_name": "class"}, "package_name 'class' is not a valid import name"),
            ({"package_name": "json"}, "package_name 'json' would shadow an existing module"),
            ({"plugin_name": "my plugin"}, "plugin_name 'my plugin': use ASCII letters"),
            ({"plugin_name": "café"}, "plugin_name 'café': use ASCII letters"),
            ({"project_slug": "../escape"}, "project_slug '../escape' is not a valid distribution name"),
            ({"spec_requires": "1.0"}, "spec_requires '1.0' is not a PEP 440 version specifier"),
            ({"spec_import": "leakscan.spec"}, "spec_import 'leakscan.spec' must look like 'package.module:ATTRIBUTE'"),
            ({"hook_args": "lines, lines"}, "hook_args 'lines, lines' must be distinct Python identifiers"),
            ({"description": "two\nlines"}, "description must fit on one line"),
        ],
    )
    def test_bad_answer_is_rejected_with_a_hint(
        self, answers: dict[str, str], message: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A bad answer stops generation, says what is wrong, and leaves no project behind."""
        with pytest.raises(FailedHookException):
            bake(tmp_path, **answers)
        err = capfd.readouterr().err
        assert (True, []) == (message in err, list(tmp_path.iterdir())), err

    def test_unknown_isolation_is_rejected(self, tmp_path: Path) -> None:
        """An isolation level outside the choices is refused before anything is written."""
        with pytest.raises(ValueError, match="inprocess"):
            bake(tmp_path, isolation="docker")
        assert [] == list(tmp_path.iterdir())


class TestTemplateFilters:
    @pytest.mark.parametrize("text", ["plain", AWKWARD_DESCRIPTION, "tab\tnew\nline\x1b", "\U0001f600 emoji", '"\\'])
    def test_toml_and_python_quoting_round_trip(self, text: str) -> None:
        """Every string survives quoting into TOML and into Python source unchanged."""
        filters = _load_filters()
        as_python = ast.literal_eval(filters.py_str(text))
        assert (text, text) == (tomllib.loads(f"x = {filters.toml_str(text)}")["x"], as_python)


def _load_filters() -> Any:
    """The template's ``local_extensions`` module, loaded from its file."""
    spec = importlib.util.spec_from_file_location("local_extensions", TEMPLATE / "local_extensions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
