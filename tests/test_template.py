"""The cookiecutter template: real bakes, installed into a real venv, tested, checked, and run by a host."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from .plugin_env import HOST_DIST, REFERENCE, ROOT, SDK_DIST, Env, fresh_env, leakscan_env, wasm_unavailable

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
            host_dist="textkit",
            host_requirement=str(host),
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

    @pytest.mark.parametrize(
        ("answers", "message"),
        [
            pytest.param({"plugin_name": "k" * 300}, "plugin_name is 300 characters long", id="very-long-plugin-name"),
            pytest.param({"project_slug": "k" * 101}, "project_slug is 101 characters long", id="long-distribution"),
            pytest.param(
                {"spec_name": "text-kit.", "host_dist": "text-kit"},
                "spec_name 'text-kit.' is not a valid project name",
                id="spec-name-ending-in-a-dot",
            ),
            pytest.param(
                {"spec_name": "-text.kit", "host_dist": "text-kit"},
                "spec_name '-text.kit' is not a valid project name",
                id="spec-name-starting-with-a-dash",
            ),
            pytest.param(
                {"spec_name": "text-kit", "host_dist": "text-kit"},
                "entry_point_group 'text-kit.plugins' is not an entry-point group pip can install everywhere",
                id="spec-name-with-a-dash",
            ),
            pytest.param({"isolation": "docker"}, "isolation 'docker' must be one of: inprocess", id="isolation"),
            pytest.param({"spec_name": "textkit"}, "host_dist is empty: give the host's", id="host-not-named"),
            pytest.param({"host_dist": "leakscan"}, "host_dist 'leakscan' is an unrelated project", id="foreign-host"),
            pytest.param(
                {"sdk_requirement": "pluginsdk[wasm]"},
                "sdk_requirement 'pluginsdk[wasm]' names 'pluginsdk', not 'pluginsdk-isolated'",
                id="foreign-sdk",
            ),
            pytest.param(
                {"sdk_requirement": "/nonexistent/pluginsdk[wasm]"},
                "sdk_requirement '/nonexistent/pluginsdk[wasm]': no project at /nonexistent/pluginsdk",
                id="sdk-path-missing",
            ),
            pytest.param(
                {"host_requirement": str(ROOT)},
                f"host_requirement {str(ROOT)!r}: {ROOT} holds 'pluginsdk-isolated', not 'pluginsdk-leakscan'",
                id="host-path-holds-another-project",
            ),
        ],
    )
    def test_cli_says_one_thing_without_a_traceback(
        self, answers: dict[str, str], message: str, tmp_path: Path
    ) -> None:
        """From the command line, a bad answer gets one line from the pre-gen hook, no traceback, no project."""
        out = tmp_path / "out"
        args = [f"{key}={value}" for key, value in answers.items()]
        result = subprocess.run(
            [sys.executable, "-m", "cookiecutter", "--no-input", str(TEMPLATE), *args, "-o", str(out)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        output = result.stdout + result.stderr
        problems = [line for line in output.splitlines() if line.startswith("  - ")]
        assert (1, 1, True, False, False) == (
            result.returncode,
            len(problems),
            message in problems[0] if problems else False,
            "Traceback" in output,
            out.exists() and any(out.iterdir()),
        ), output


# Hosts whose spec names have dashes or dots: the template's default spec_import finds their spec.
EDGE_HOSTS = {"text.kit": ("text", "kit")}


@pytest.mark.slow
class TestAcceptedAnswersPassCheck:
    @pytest.mark.parametrize(
        "answers",
        [
            pytest.param({"plugin_name": "k" * 64}, id="longest-plugin-name"),
            pytest.param({"plugin_name": "k" * 64, "project_slug": "x" * 100}, id="longest-distribution-name"),
            pytest.param({"spec_name": "text.kit"}, id="spec-name-with-a-dot"),
        ],
    )
    def test_what_bakes_passes_check(self, answers: dict[str, str], tmp_path: Path, env: Env, installed: Any) -> None:
        """Answers at the edges of what the pre-gen hook accepts give a project that ``pluginsdk check`` accepts."""
        spec_name = answers.get("spec_name", "leakscan")
        if spec_name in EDGE_HOSTS:
            # A real host for that spec, with its spec where the template's default spec_import looks.
            host = tmp_path / "host"
            package = host.joinpath(*EDGE_HOSTS[spec_name])
            package.mkdir(parents=True)
            for level in [package, *package.parents][: len(EDGE_HOSTS[spec_name])]:
                (level / "__init__.py").touch()
            (package / "spec.py").write_text(TEXTKIT_SOURCE.replace('"textkit"', json.dumps(spec_name)))
            (host / "pyproject.toml").write_text(
                '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
                '[project]\nname = "edge-host"\nversion = "1.1"\n'
                f'[tool.hatch.build.targets.wheel]\npackages = ["{EDGE_HOSTS[spec_name][0]}"]\n'
            )
            installed(host)
            answers = {
                **answers,
                "host_dist": "edge-host",
                "host_requirement": str(host),
                "hook_name": "transform",
                "hook_args": "text",
            }
        project = bake(tmp_path / "out", **answers)
        installed(project)
        check = env.run("pluginsdk", "check", str(project))
        assert (0, True) == (check.returncode, "plugin project is valid" in check.stdout), check.stdout + check.stderr


def requirement_names(project: Path) -> set[str]:
    """Every distribution a project's pyproject.toml requires, its extras' included, normalized."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    requirements = [*meta["dependencies"], *(r for extra in meta["optional-dependencies"].values() for r in extra)]
    names = (re.sub(r"[^A-Za-z0-9._-].*", "", r) for r in requirements)  # the name: up to extras or version
    return {re.sub(r"[-_.]+", "-", name).lower() for name in names}


@pytest.mark.slow
class TestBakedProjectOffline:
    def test_installs_tests_and_checks_with_no_index(self, tmp_path: Path) -> None:
        """With default answers, the baked project's own install command works with no index at all.

        The SDK and the host come from this checkout (the template's defaults), the
        rest from the outer environment's third-party packages; the venv holds
        nothing of pluginsdk's until this test installs it, so each name the
        project requires must be one of ours and be satisfied by those paths.
        """
        project = bake(tmp_path / "out")
        sdk = f"{ROOT}[wasm]"
        host = str(REFERENCE / "leakscan")
        noxfile = (project / "noxfile.py").read_text()
        assert ({"pytest", SDK_DIST, HOST_DIST}, True, True) == (
            requirement_names(project),
            f'"PLUGINSDK_REQUIREMENT", {json.dumps(sdk)}' in noxfile,
            f'"HOST_REQUIREMENT", {json.dumps(host)}' in noxfile,
        )
        offline = fresh_env(tmp_path)
        # The baked README's install command, plus --no-index (Env.pip_install adds it).
        offline.pip_install(sdk, host, "-e", f"{project}[test]", deps=True)
        if os.environ.get("PLUGINSDK_CACHE_DIR"):
            offline.cache = Path(os.environ["PLUGINSDK_CACHE_DIR"])  # the session's: a compiled sandbox is reused
        code = "import pluginsdk, leakscan; print(pluginsdk.__file__, leakscan.__file__)"
        where = offline.run("python", "-c", code, cwd=tmp_path)  # not from the checkout: '' leads sys.path
        check = offline.run("pluginsdk", "check", str(project))
        assert (True, 0) == (
            all(Path(f).is_relative_to(offline.root) for f in where.stdout.split()),
            check.returncode,
        ), where.stdout + where.stderr + check.stdout + check.stderr
        assert per_level(3, 3) == run_tests(offline, project)


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
