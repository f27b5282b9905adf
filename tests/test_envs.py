"""Private environments per plugin (``[environment]`` in the manifest; ``pluginsdk.envs``).

Real environments, built by the real installer (uv when it is installed,
else ``venv`` and pip), offline: every distribution comes from a wheelhouse
these tests write (``pinme`` 1.0 and 2.0), through the host's policy
(``no_index`` + ``find_links``).  Real worker processes run the plugins.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from pluginsdk import Host, Policy
from pluginsdk._errors import BackendUnavailable, ConfigError, ManifestError, PluginLoadError
from pluginsdk.envs import EnvironmentSettings, environment_key, list_environments, provision, prune, worker_path
from pluginsdk.envs.builder import INSTALLER_VARIABLE, Installer, find_installer, find_uv, installer_problem
from pluginsdk.envs.store import MARKER
from pluginsdk.manifest import parse_manifest
from tests.plugin_factory import install_plugin
from tests.textkit import SPEC

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = """\
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    import importlib.util
    import sys

    import pinme

    # The host's own packages (pluggy, say) are not on this worker's path.
    assert importlib.util.find_spec("pluggy") is None, sys.path
    return f"{text}:{pinme.__version__}:{sys.prefix}"
"""


def manifest(dependencies: list[str], isolation: str = "process") -> str:
    return textwrap.dedent(
        f"""\
        [plugin]
        requires = "textkit>=1.0,<2"
        isolation = "{isolation}"
        hooks = ["transform"]

        [environment]
        dependencies = {json.dumps(dependencies)}
        """
    )


def make_wheel(dest: Path, name: str, version: str, source: str) -> Path:
    """A pure-Python wheel of one package, written directly (no build backend, no network)."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": source,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: pluginsdk-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    out = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return out


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("wheelhouse")
    for version in ("1.0", "2.0"):
        make_wheel(dest, "pinme", version, f"__version__ = {version!r}\n")
    return dest


@pytest.fixture
def settings(wheelhouse: Path) -> EnvironmentSettings:
    return EnvironmentSettings(find_links=(str(wheelhouse),), no_index=True, timeout=300)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of this test's own: environments built here are this test's."""
    path = tmp_path / "cache"
    monkeypatch.setenv("PLUGINSDK_CACHE_DIR", str(path))
    return path


def pip_freeze() -> str:
    result = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True)
    assert 0 == result.returncode, result.stderr
    return result.stdout


# -- manifest and policy: fast -------------------------------------------------------


def test_manifest_environment_table_is_parsed_and_checked() -> None:
    base = {"plugin": {"requires": "textkit>=1.0", "hooks": ["transform"], "isolation": "process"}}
    parsed = parse_manifest(
        {**base, "environment": {"dependencies": ["six==1.16.0", "attrs>=23; python_version>'3'"]}}, path="m"
    )
    assert parsed.environment is not None
    assert ("six==1.16.0", "attrs>=23; python_version>'3'") == parsed.environment.dependencies
    assert parse_manifest(base, path="m").environment is None
    assert () == parse_manifest({**base, "environment": {}}, path="m").environment.dependencies  # type: ignore[union-attr]
    with pytest.raises(ManifestError) as info:
        parse_manifest(
            {**base, "environment": {"dependencies": ["--index-url=http://x", "a @ https://x/a.whl"]}}, path="m"
        )
    assert "is not a PEP 508 requirement" in info.value.message
    assert "direct references are not allowed" in info.value.message
    with pytest.raises(ManifestError, match=r"unknown key environment\.python"):
        parse_manifest({**base, "environment": {"python": "3.9"}}, path="m")


def test_policy_environments_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text(
        '[policy.environments]\nindex_url = "https://example.invalid/simple"\nfind_links = ["/wheelhouse"]\n'
        "allowed = true\ntimeout = 120\n"
    )
    env = Policy.from_toml(path).environments
    assert EnvironmentSettings(True, "https://example.invalid/simple", (), ("/wheelhouse",), False, 120.0) == env
    assert [
        "--only-binary",
        ":all:",
        "--index-url",
        "https://example.invalid/simple",
        "--find-links",
        "/wheelhouse",
    ] == (env.installer_args())
    assert "--only-binary" not in env._replace(allow_builds=True).installer_args()
    path.write_text('[policy.environments]\nallowed = "yes"\nfind_link = []\n')
    with pytest.raises(ConfigError) as info:
        Policy.from_toml(path)
    assert "policy.environments.allowed: expected true or false" in info.value.message
    assert "unknown key policy.environments.find_link" in info.value.message


def test_key_is_decided_by_dependencies_interpreter_and_index(settings: EnvironmentSettings) -> None:
    key = environment_key(["b==1", "a==2"], settings)
    assert key == environment_key(["a==2", "b==1", "a == 2"], settings)  # sorted, normalised, no repeats
    assert key != environment_key(["a==2"], settings)
    assert key != environment_key(["b==1", "a==2"], settings._replace(find_links=("/elsewhere",)))
    assert key != environment_key(["b==1", "a==2"], EnvironmentSettings())
    assert key != environment_key(["b==1", "a==2"], settings._replace(allow_builds=True))


def test_worker_path_shows_the_plugin_and_the_sdk_not_the_hosts_packages(site: Path, cache: Path) -> None:
    import msgpack
    import pluggy

    import pluginsdk

    pkg = install_plugin(site, "pinned", PLUGIN, manifest=manifest(["pinme==1.0"]))
    front, back = worker_path(str(pkg), str(site), "textkit-pinned", "1.0")
    assert (front, back) == worker_path(str(pkg), str(site), "textkit-pinned", "1.0")  # made once, then reused
    (view,) = front
    shown = {p.name: p.resolve() for p in Path(view).iterdir()}
    assert {"textkit_pinned", "pluginsdk", "textkit_pinned-1.0.dist-info"} == set(shown)
    assert Path(pluginsdk.__file__).parent.resolve() == shown["pluginsdk"]
    support = {p.name: p.resolve() for p in Path(back[0]).iterdir()}
    assert Path(msgpack.__file__).parent.resolve() == support["msgpack"]
    assert "pluggy" not in support and all(p.parent != Path(pluggy.__file__).parent for p in shown.values())


def test_inprocess_with_an_environment_is_a_load_error_saying_how_to_fix_it(site: Path) -> None:
    install_plugin(site, "pinned", PLUGIN, manifest=manifest(["pinme==1.0"], isolation="inprocess"))
    with Host(SPEC, path=[str(site)]) as host:
        info = host.plugin("pinned")
        assert "failed" == info.status
        assert 'isolation = "process"' in info.reason and "[policy.isolation] pinned" in info.reason
        with pytest.raises(PluginLoadError, match="cannot run in the host's interpreter"):
            host.load("pinned")
        assert [] == host.hook.transform(text="x")
    with pytest.raises(PluginLoadError, match="cannot run in the host's interpreter"):
        Host(SPEC, path=[str(site)], strict=True)


def test_the_policy_can_forbid_private_environments(site: Path) -> None:
    install_plugin(site, "pinned", PLUGIN, manifest=manifest(["pinme==1.0"]))
    with Host(SPEC, path=[str(site)], policy=Policy(environments={"allowed": False})) as host:
        info = host.plugin("pinned")
        assert "unavailable" == info.status
        assert "allowed = false" in info.reason
        with pytest.raises(BackendUnavailable):
            host.load("pinned")


# -- real environments -----------------------------------------------------------------


@pytest.mark.slow
def test_two_plugins_pin_two_versions_and_the_host_is_unchanged(
    site: Path, wheelhouse: Path, settings: EnvironmentSettings, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install_plugin(site, "old", PLUGIN, manifest=manifest(["pinme==1.0"]))
    install_plugin(site, "new", PLUGIN, manifest=manifest(["pinme==2.0"]))
    before = pip_freeze()
    policy = Policy(environments=settings)
    with Host(SPEC, path=[str(site)], policy=policy) as host:
        results = host.hook.transform.by_plugin(text="v")
        assert {"old", "new"} == set(results)
        assert results["old"].startswith("v:1.0:") and results["new"].startswith("v:2.0:")
        prefixes = {results[n].split(":", 2)[2] for n in results}
        assert len(prefixes) == 2 and all(p.startswith(str(cache / "envs")) for p in prefixes)
        assert ["v:1.0", "v:2.0"] == sorted(r.rsplit(":", 1)[0] for r in host.hook.transform(text="v"))
    assert before == pip_freeze()
    with pytest.raises(ImportError):
        __import__("pinme")
    # A second host start reuses both environments: no installer run, the markers untouched.
    markers = sorted((cache / "envs").glob(f"*/{MARKER}"))
    assert 2 == len(markers)
    stamps = [m.stat().st_mtime_ns for m in markers]
    caplog.set_level(logging.INFO, logger="pluginsdk")
    with Host(SPEC, path=[str(site)], policy=policy) as host:
        assert "v:2.0" == host.hook.transform.by_plugin(text="v")["new"].rsplit(":", 1)[0]
    assert stamps == [m.stat().st_mtime_ns for m in markers]
    assert any("reused" in r.getMessage() for r in caplog.records)
    assert not any("built" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_an_unresolvable_pin_fails_only_that_plugin_with_the_resolvers_message(
    site: Path, settings: EnvironmentSettings, cache: Path
) -> None:
    install_plugin(site, "impossible", PLUGIN, manifest=manifest(["pinme==9.9"]))
    install_plugin(site, "fine", PLUGIN, manifest=manifest(["pinme==2.0"]))
    install_plugin(
        site, "plain", "from pluginsdk import hookimpl\n\n@hookimpl\ndef transform(text):\n    return text\n"
    )
    with Host(SPEC, path=[str(site)], policy=Policy(environments=settings)) as host:
        results = host.hook.transform.by_plugin(text="v")
        assert {"fine", "plain"} == set(results)
        info = host.plugin("impossible")
        assert "failed" == info.status
        assert "plugin 'impossible'" in info.reason and "pinme==9.9" in info.reason
        # The resolver's own words: pip's, or uv's.
        assert "No matching distribution" in info.reason or "No solution found" in info.reason, info.reason
        assert "loaded" == host.plugin("fine").status
    assert [["pinme==2.0"]] == [e["dependencies"] for e in list_environments() if e["complete"]]


def _installers() -> list[object]:
    uv = find_uv()
    return [
        pytest.param(Installer("pip", host_pip=True), id="host-pip"),
        pytest.param(Installer("pip"), id="venv-ensurepip"),
        pytest.param(
            Installer("uv", uv=uv), id="uv", marks=pytest.mark.skipif(uv is None, reason="uv is not installed")
        ),
    ]


def test_the_installer_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INSTALLER_VARIABLE, "pip")
    found = find_installer()
    assert found is not None and "pip" == found.name
    if find_uv() is None:
        monkeypatch.setenv(INSTALLER_VARIABLE, "uv")
        assert find_installer() is None
        assert "uv is not installed" in (installer_problem() or "")


@pytest.mark.slow
@pytest.mark.parametrize("installer", _installers())
def test_a_damaged_environment_is_rebuilt(settings: EnvironmentSettings, cache: Path, installer: Installer) -> None:
    first = provision(["pinme==1.0"], settings, plugin="p", installer=installer)
    assert first.built and installer.name == first.installer
    again = provision(["pinme==1.0"], settings, plugin="p")
    assert not again.built and again.root == first.root
    os.unlink(first.python)  # damaged: its interpreter is gone
    rebuilt = provision(["pinme==1.0"], settings, plugin="p", installer=installer)
    assert rebuilt.built and rebuilt.root == first.root
    check = subprocess.run(
        [rebuilt.python, "-c", "import pinme; print(pinme.__version__)"], capture_output=True, text=True
    )
    assert "1.0" == check.stdout.strip()
    if installer.name == "pip" and not installer.host_pip:
        return  # ensurepip makes a build cost seconds: once is proof enough
    os.unlink(os.path.join(first.root, MARKER))  # damaged: half-built (no marker)
    assert provision(["pinme==1.0"], settings, plugin="p", installer=installer).built
    assert [first.key] == [e["key"] for e in list_environments() if e["complete"]]


CONCURRENT = """\
import sys, time
from pluginsdk.envs import EnvironmentSettings, provision
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
env = provision(["pinme==2.0"], EnvironmentSettings(find_links=(sys.argv[1],), no_index=True, timeout=300))
print("built" if env.built else "reused", env.key)
"""


@pytest.mark.slow
def test_two_processes_starting_together_build_once(wheelhouse: Path, cache: Path) -> None:
    env = {**os.environ, "PLUGINSDK_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    start = str(time.time() + 1.5)  # both are up and waiting by then: they ask at the same moment
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(wheelhouse), start],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert 0 == proc.returncode, err
        outs.append(out.split())
    assert ["built", "reused"] == sorted(o[0] for o in outs)
    assert outs[0][1] == outs[1][1]


@pytest.mark.slow
def test_build_timeout_is_a_clear_failure(settings: EnvironmentSettings, cache: Path) -> None:
    with pytest.raises(PluginLoadError, match=r"took longer than the build timeout|no time left"):
        provision(["pinme==1.0"], settings._replace(timeout=0.01), plugin="slowpoke")
    assert [] == [e for e in list_environments() if e["complete"]]


@pytest.mark.slow
def test_prune_removes_unused_environments(settings: EnvironmentSettings, cache: Path) -> None:
    env = provision(["pinme==1.0"], settings)
    assert [] == [p for p in prune(days=1) if p == env.root]
    assert env.root in prune(days=0)
    assert not os.path.exists(env.root)


@pytest.mark.slow
def test_cli_env_sync_list_prune(
    site: Path, wheelhouse: Path, cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pluginsdk.cli import main

    install_plugin(site, "a", PLUGIN, manifest=manifest(["pinme==1.0"]))
    install_plugin(site, "b", PLUGIN, manifest=manifest(["pinme==1.0"]))  # the same environment: made once
    install_plugin(site, "c", PLUGIN, manifest=manifest(["pinme==9.9"]))
    install_plugin(site, "d", "from pluginsdk import hookimpl\n")
    config = tmp_path / "host.toml"
    config.write_text(f"[policy.environments]\nno_index = true\nfind_links = [{json.dumps(str(wheelhouse))}]\n")
    sync = ["env", "sync", "textkit.plugins", "--path", str(site), "--config", str(config)]
    assert 1 == main(sync)  # c cannot be resolved
    out, err = capsys.readouterr()
    assert out.startswith("built ") and "for a, b (pinme==1.0;" in out
    assert "failed c: " in err and "pinme==9.9" in err
    assert 1 == main(sync)
    out, _ = capsys.readouterr()
    assert out.startswith("reused ")
    assert 0 == main(["env", "list", "--json"])
    listed = json.loads(capsys.readouterr().out)
    assert [["pinme==1.0"]] == [e["dependencies"] for e in listed]
    assert 0 == main(["env", "list"])
    assert "pinme==1.0" in capsys.readouterr().out
    # A host started afterwards finds the environment made ahead of time.
    with Host(SPEC, path=[str(site)], policy=Policy.from_toml(config)) as host:
        assert "v:1.0" == host.hook.transform.by_plugin(text="v")["a"].rsplit(":", 1)[0]
    assert 2 == main(["env", "prune", "--days", "-1"])
    assert "pluginsdk: --days must not be negative" == capsys.readouterr().err.strip()
    assert 0 == main(["env", "prune", "--days", "30", "--json"])  # used just now: kept
    assert {"removed": [], "count": 0} == json.loads(capsys.readouterr().out)
    assert 0 == main(["env", "prune", "--days", "0"])
    assert listed[0]["root"] in capsys.readouterr().out
    assert 0 == main(["env", "list", "--json"])
    assert [] == json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_only_wheels_unless_the_policy_allows_builds(
    settings: EnvironmentSettings, wheelhouse: Path, cache: Path, tmp_path: Path
) -> None:
    import io
    import tarfile

    sdists = tmp_path / "sdists"
    sdists.mkdir()
    with tarfile.open(sdists / "fromsource-1.0.tar.gz", "w:gz") as tar:  # a source distribution: building runs code
        for name, text in {
            "fromsource-1.0/PKG-INFO": "Metadata-Version: 2.1\nName: fromsource\nVersion: 1.0\n",
            "fromsource-1.0/setup.py": "raise SystemExit('this build must never run')\n",
        }.items():
            data = text.encode()
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    wheels_only = settings._replace(find_links=(*settings.find_links, str(sdists)))
    with pytest.raises(PluginLoadError) as info:
        provision(["fromsource==1.0"], wheels_only, plugin="src")
    assert "only wheels are installed" in info.value.message and "allow_builds = true" in info.value.message, (
        info.value.message
    )
    assert "this build must never run" not in info.value.message
