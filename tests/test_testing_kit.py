"""``pluginsdk.testing``, the pytest kit for plugin authors, exercised through ``pytester``.

Each test writes a plugin author's project (spec module, pyproject, tests),
installs real plugins into a site directory, and runs pytest on it in a
subprocess, as an author would.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

from pluginsdk.testing import isolation_unavailable

from .plugin_factory import install_plugin

pytest_plugins = ["pytester"]

LEVELS = ("inprocess", "process", "wasm")
UNAVAILABLE = [level for level in LEVELS if isolation_unavailable(level)]
# Until pluginsdk is (re)installed with its pytest11 entry point, load the kit by name.
KIT_ARGS = (
    [] if any(ep.value == "pluginsdk.testing" for ep in entry_points(group="pytest11")) else ["-p", "pluginsdk.testing"]
)

SPEC_MODULE = """
from pluginsdk import HookSpec, hookspec


class KitHooks:
    @hookspec
    def transform(self, text: str) -> str:
        '''Return a transformed copy of text.'''


SPEC = HookSpec("kitdemo", version="1.0", hooks=KitHooks)
"""
MANIFEST = '[plugin]\nrequires = "kitdemo>=1,<2"\nisolation = "{isolation}"\nhooks = ["transform"]\n'
PYPROJECT = """
[project]
name = "kitdemo-upper"
version = "1.0"

[project.entry-points."kitdemo.plugins"]
{entry_points}

[tool.pluginsdk]
spec = "kitspec:SPEC"

[tool.pytest.ini_options]
{ini}
"""


def outcomes(passed: int, skipped_levels: int = 0, per_level: int = 1) -> dict[str, int]:
    """Expected outcomes of ``per_level`` tests run at each level, minus levels unavailable here."""
    skipped = skipped_levels * per_level + len(UNAVAILABLE) * per_level
    return {"passed": passed - len(UNAVAILABLE) * per_level, "skipped": skipped}


@pytest.fixture(scope="session")
def sdk_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SDK cache for every pytester run: each would otherwise compile the WebAssembly interpreter anew."""
    return tmp_path_factory.mktemp("kit-cache")


@pytest.fixture
def project(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sdk_cache: Path
) -> pytest.Pytester:
    """An author's project for spec ``kitdemo``, with plugins ``upper`` (under test), ``other`` and ``where``."""
    monkeypatch.setenv("PLUGINSDK_CACHE_DIR", str(sdk_cache))
    site = tmp_path / "site"
    common = {"group": "kitdemo.plugins"}
    install_plugin(
        site,
        "upper",
        "from pluginsdk import hookimpl\n@hookimpl\ndef transform(text):\n    return text.upper()\n",
        module="kitdemo_upper",
        dist="kitdemo-upper",
        manifest=MANIFEST.format(isolation="process"),
        **common,
    )
    install_plugin(
        site,
        "other",
        "from pluginsdk import hookimpl\n@hookimpl\ndef transform(text):\n    return 'other'\n",
        module="kitdemo_other",
        dist="kitdemo-other",
        manifest=MANIFEST.format(isolation="inprocess"),
        **common,
    )
    install_plugin(
        site,
        "where",
        "import os\nfrom pluginsdk import hookimpl\n@hookimpl\ndef transform(text):\n"
        "    return 'host' if str(os.getpid()) == os.environ['KIT_HOST_PID'] else 'elsewhere'\n",
        module="kitdemo_where",
        dist="kitdemo-where",
        manifest=MANIFEST.format(isolation="inprocess"),
        **common,
    )
    monkeypatch.setenv("PYTHONPATH", str(site))  # pytester puts the project itself first
    pytester.makepyfile(kitspec=SPEC_MODULE)
    write_pyproject(pytester)
    return pytester


def write_pyproject(pytester: pytest.Pytester, *, entry_points: str = 'upper = "kitdemo_upper"', ini: str = "") -> None:
    pytester.makefile(".toml", pyproject=PYPROJECT.format(entry_points=entry_points, ini=ini))


def run(pytester: pytest.Pytester) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*KIT_ARGS, "-p", "no:cacheprovider", "-rs")


class TestIsolationFixture:
    def test_runs_once_per_level(self, project: pytest.Pytester) -> None:
        """A test asking for ``isolation`` runs at each level, skipping those unavailable here."""
        project.makepyfile(test_levels="def test_level(isolation):\n    assert isinstance(isolation, str)\n")
        run(project).assert_outcomes(**outcomes(passed=3))

    def test_marker_restricts_levels(self, project: pytest.Pytester) -> None:
        """``@pytest.mark.pluginsdk_isolation`` runs the test only at the levels it names."""
        project.makepyfile(
            test_levels=(
                "import pytest\n"
                "@pytest.mark.pluginsdk_isolation('inprocess')\n"
                "def test_level(isolation):\n    assert 'inprocess' == isolation\n"
            )
        )
        run(project).assert_outcomes(passed=1, skipped=2)

    def test_ini_option_restricts_levels(self, project: pytest.Pytester) -> None:
        """The ``pluginsdk_isolation`` ini option sets the levels for the whole project."""
        write_pyproject(project, ini='pluginsdk_isolation = ["inprocess"]')
        project.makepyfile(test_levels="def test_level(isolation):\n    assert 'inprocess' == isolation\n")
        run(project).assert_outcomes(passed=1, skipped=2)

    def test_unavailable_level_is_skipped_with_reason(self, project: pytest.Pytester) -> None:
        """Where a level cannot run, its skip message carries the backend's reason."""
        if not UNAVAILABLE:
            pytest.skip("every isolation level is available here")
        project.makepyfile(test_levels="def test_level(isolation):\n    pass\n")
        level = UNAVAILABLE[0]
        expected = f"isolation {level!r} is unavailable here: {isolation_unavailable(level)}"
        assert expected in run(project).stdout.str()


class TestPluginHost:
    def test_runs_only_the_plugin_under_test_at_each_level(self, project: pytest.Pytester) -> None:
        """``plugin_host`` forces the project's plugin to each level; other installed plugins stay out."""
        project.makepyfile(
            test_host=(
                "def test_upper(plugin_host, isolation):\n"
                "    info = plugin_host.plugin('upper')\n"
                "    results = plugin_host.hook.transform.by_plugin(text='hi')\n"
                "    assert ({'upper': 'HI'}, isolation, 'disabled') == "
                "(results, info.isolation, plugin_host.plugin('other').status)\n"
            )
        )
        run(project).assert_outcomes(**outcomes(passed=3))

    def test_plugins_ini_option_picks_the_plugins(self, project: pytest.Pytester) -> None:
        """``pluginsdk_plugins`` names the plugins under test instead of the project's entry points."""
        write_pyproject(project, ini='pluginsdk_plugins = ["other", "upper"]')
        project.makepyfile(
            test_host=(
                "def test_both(plugin_host):\n"
                "    assert {'other': 'other', 'upper': 'HI'} == plugin_host.hook.transform.by_plugin(text='hi')\n"
            )
        )
        run(project).assert_outcomes(**outcomes(passed=3))

    def test_host_factory_builds_hosts_with_other_settings(self, project: pytest.Pytester) -> None:
        """``host_factory`` builds extra hosts, here one at the manifest's own level."""
        project.makepyfile(
            test_factory=(
                "def test_default_level(host_factory):\n"
                "    host = host_factory()\n"
                "    assert ('process', ['HI']) == (host.plugin('upper').isolation, host.hook.transform(text='hi'))\n"
            )
        )
        run(project).assert_outcomes(passed=1)

    def test_missing_plugin_fails_with_install_hint(self, project: pytest.Pytester) -> None:
        """A plugin the project declares but that is not installed fails the test, saying how to fix it."""
        write_pyproject(project, entry_points='ghost = "kitdemo_ghost"')
        project.makepyfile(
            test_host=(
                "import pytest\n@pytest.mark.pluginsdk_isolation('inprocess')\ndef test_x(plugin_host):\n    pass\n"
            )
        )
        result = run(project)
        result.assert_outcomes(errors=1, skipped=2)  # the fixture fails: a setup error
        result.stdout.fnmatch_lines(["*plugin 'ghost' is not installed for spec 'kitdemo'*pip install -e .*"])

    def test_missing_spec_is_a_usage_error(self, project: pytest.Pytester) -> None:
        """Without a configured spec, the error says where to configure it."""
        project.makefile(".toml", pyproject="[project]\nname = 'x'\nversion = '1'\n")
        project.makepyfile(test_host="def test_x(pluginsdk_spec):\n    pass\n")
        run(project).stdout.fnmatch_lines(["*no host spec configured; set [[]tool.pluginsdk[]] spec*"])


class TestSameEverywhere:
    def test_returns_the_common_result(self, project: pytest.Pytester) -> None:
        """Equal results at every available level are returned once."""
        project.makepyfile(
            test_same=(
                "def test_same(same_everywhere):\n"
                "    assert ['HI'] == same_everywhere(lambda host: host.hook.transform(text='hi'))\n"
            )
        )
        run(project).assert_outcomes(passed=1)

    def test_fails_when_a_level_behaves_differently(self, project: pytest.Pytester) -> None:
        """A plugin whose answer depends on where it runs fails, with each level's result shown."""
        write_pyproject(project, ini='pluginsdk_plugins = ["where"]\npluginsdk_isolation = ["inprocess", "process"]')
        project.makepyfile(
            test_same=(
                "import os\n"
                "def test_where(same_everywhere):\n"
                "    os.environ['KIT_HOST_PID'] = str(os.getpid())\n"
                "    same_everywhere(lambda host: host.hook.transform(text='hi'))\n"
            )
        )
        result = run(project)
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(
            ["results differ between isolation levels:", "  inprocess: [[]'host'[]]", "  process: [[]'elsewhere'[]]"],
            consecutive=True,
        )


class TestRegistration:
    def test_kit_is_a_pytest11_entry_point(self) -> None:
        """pluginsdk registers the kit with pytest, so plugin projects need no conftest."""
        found = {ep.name: ep.value for ep in entry_points(group="pytest11") if ep.value == "pluginsdk.testing"}
        assert {"pluginsdk": "pluginsdk.testing"} == found


class TestIsolationUnavailable:
    def test_inprocess_always_runs(self) -> None:
        """The in-process level needs nothing and is always available."""
        assert None is isolation_unavailable("inprocess")

    def test_unknown_level_is_an_error(self) -> None:
        """A misspelt level is an error, not a silent skip."""
        with pytest.raises(ValueError, match="unknown isolation level 'wasi'"):
            isolation_unavailable("wasi")
