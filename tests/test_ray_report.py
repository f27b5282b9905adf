"""``pluginsdk doctor`` and ``pluginsdk check`` say where isolated plugins run (this machine or Ray).

Real CLI runs in fresh processes, as a user runs them; "Ray not installed" is
Ray hidden from import in that process (as the doctor tests hide wasmtime).
Nothing here starts Ray: the reports only read the policy and what is installed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .plugin_factory import install_plugin
from .test_cli import GOOD_MANIFEST, UPPER, cli_env, make_project
from .test_doctor import findings

HIDE_RAY = """\
import sys, importlib.abc
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError("hidden for the test")
        return None
sys.meta_path.insert(0, Hide())
"""
RAY_INSTALLED = importlib.util.find_spec("ray") is not None
POLICY = """\
[policy]
executor = "ray"
[policy.executors]
small = "local"
[policy.ray]
address = "ray://head:10001"
namespace = "docs"
num_cpus = 1
resources = { big_memory = 2 }
[policy.ray.plugins.big]
num_gpus = 0.5
"""
ON_RAY = "on Ray (address ray://head:10001, namespace docs, 1 CPU per actor, 2 big_memory per actor)"
BIG_ON_RAY = ON_RAY.replace("1 CPU per actor,", "1 CPU per actor, 0.5 GPU per actor,")


def cli(tmp_path: Path, *args: str, hide_ray: bool = False) -> subprocess.CompletedProcess[str]:
    head = HIDE_RAY if hide_ray else "import sys\n"
    script = head + f"from pluginsdk.cli import main\nsys.exit(main({list(args)!r}))\n"
    env = cli_env(PLUGINSDK_CACHE_DIR=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)


def doctor(tmp_path: Path, *args: str, hide_ray: bool = False) -> tuple[int, dict[str, Any]]:
    result = cli(tmp_path, "doctor", "--json", *args, hide_ray=hide_ray)
    return result.returncode, json.loads(result.stdout)


@pytest.fixture
def plugins(site: Path, tmp_path: Path) -> list[str]:
    """Three plugins of textkit: one in-process, two isolated (one kept local per plugin); the policy file."""
    install_plugin(site, "inside", UPPER, isolation="inprocess")
    install_plugin(site, "big", UPPER, isolation="process")
    install_plugin(site, "small", UPPER, isolation="process")
    policy = tmp_path / "host.toml"
    policy.write_text(POLICY)
    return ["textkit.plugins", "--path", str(site), "--config", str(policy)]


def test_doctor_reports_each_plugins_executor(plugins: list[str], tmp_path: Path) -> None:
    """The policy's executor and Ray settings, and per plugin where it runs; in-process plugins stay in the host."""
    if not RAY_INSTALLED:
        pytest.skip("ray is not installed (the ray extra)")
    status, report = doctor(tmp_path, *plugins)
    assert (0, True) == (status, report["ok"]), report
    executor = findings(report, "executor")
    assert {
        "isolated plugins": ("ok", "ray: " + ON_RAY[len("on Ray (") : -1]),
        "per plugin": ("ok", "small: local"),
        "ray for big": ("ok", "1 CPU per actor, 0.5 GPU per actor, 2 big_memory per actor"),
    } == executor
    installed = findings(report, "installed")
    assert "ok" == installed["ray"][0] and 'for executor "ray"' in installed["ray"][1]
    listed = findings(report, "plugins")
    assert ("ok", f"available (textkit-big 1.0, process, {BIG_ON_RAY})") == listed["big"]
    assert ("ok", "available (textkit-small 1.0, process, on this machine)") == listed["small"]
    assert ("ok", "available (textkit-inside 1.0, inprocess)") == listed["inside"]


def test_doctor_says_when_ray_is_selected_but_not_installed(plugins: list[str], tmp_path: Path) -> None:
    """Ray selected, Ray missing: an error naming the extra; the plugins it would run are errors; the rest are fine."""
    status, report = doctor(tmp_path, *plugins, hide_ray=True)
    assert (1, False) == (status, report["ok"])
    assert ("note", "not installed (the ray extra)") == findings(report, "installed")["ray"]
    state, detail = findings(report, "executor")["ray"]
    assert "error" == state
    assert "the policy puts plugins on Ray, but Ray is not installed" in detail
    assert 'pip install "pluginsdk-isolated[ray]"' in detail
    listed = findings(report, "plugins")
    assert "error" == listed["big"][0]
    assert listed["big"][1].startswith(
        f'unavailable (textkit-big 1.0, process, {BIG_ON_RAY}): executor "ray" needs Ray'
    )
    assert ("ok", "ok") == (listed["small"][0], listed["inside"][0])
    # The text report says the same, in its own section.
    result = cli(tmp_path, "doctor", *plugins, hide_ray=True)
    assert 1 == result.returncode
    assert "executor (where isolated plugins run):" in result.stdout.splitlines()
    assert "  [error]   ray: the policy puts plugins on Ray, but Ray is not installed" in result.stdout


def test_doctor_without_a_policy_and_without_ray(site: Path, tmp_path: Path) -> None:
    """No --config: the default policy, every plugin on this machine; a missing Ray is a note, not a problem."""
    install_plugin(site, "big", UPPER, isolation="process")
    status, report = doctor(tmp_path, "textkit.plugins", "--path", str(site), hide_ray=True)
    assert (0, True) == (status, report["ok"])
    assert not findings(report, "executor")
    assert ("ok", "available (textkit-big 1.0, process, on this machine)") == findings(report, "plugins")["big"]


@pytest.mark.parametrize("hide_ray", [False, True])
def test_check_notes_where_a_host_may_run_the_plugin(tmp_path: Path, hide_ray: bool) -> None:
    """``check`` has no host policy: it notes both places, and what Ray would need here."""
    manifest = GOOD_MANIFEST + 'isolation = "process"\n'
    project = make_project(tmp_path / "project", UPPER, manifest)
    result = cli(tmp_path, "check", "--no-build", str(project), hide_ray=hide_ray)
    assert 0 == result.returncode, result.stderr
    note = next(line for line in result.stdout.splitlines() if "Ray actors" in line)
    assert note.startswith("ok: plugin 'upper': a host runs it (process) on its own machine, or as Ray actors")
    missing = 'Ray is not installed here: such a host needs pip install "pluginsdk-isolated[ray]"'
    assert (missing in note) == (hide_ray or not RAY_INSTALLED)
    assert "single module" not in note
    inprocess = make_project(tmp_path / "inprocess", UPPER, GOOD_MANIFEST)
    result = cli(tmp_path, "check", "--no-build", str(inprocess), hide_ray=hide_ray)
    assert 0 == result.returncode and "Ray actors" not in result.stdout
