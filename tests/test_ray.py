"""Isolated plugins on Ray (``executor = "ray"``): real actors on one real local cluster per session.

The cluster is started once (two CPUs, no dashboard, a small object store);
plugins are real installed distributions (``tests.plugin_factory``), their
workers real Ray actors running real worker processes or sandbox instances.
Tests marked ``ray`` are skipped where Ray is not installed (the ``ray``
extra); the policy and "no Ray" tests run everywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pluginsdk import (
    ConfigError,
    HookSpec,
    Host,
    Limits,
    PluginCrashed,
    PluginResourceError,
    PluginTimeout,
    Policy,
    hookspec,
)
from pluginsdk._ray.cluster import keep_signal_handlers
from pluginsdk._ray.settings import RaySettings
from pluginsdk.envs import EnvironmentSettings
from tests import procs
from tests.plugin_env import wasm_unavailable
from tests.plugin_factory import install_plugin
from tests.test_envs import make_wheel

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")  # before Ray is imported (see keep_signal_handlers)
try:
    import ray
except ImportError:  # the ray extra is not installed: the cluster tests skip
    ray = None


class Hooks:
    @hookspec
    def transform(self, text: str) -> str:  # type: ignore[empty-body]
        """A transformed copy of ``text``."""

    @hookspec
    def words(self, text: str) -> Iterator[str]:  # type: ignore[empty-body]
        """``text``'s words, streamed."""

    @hookspec
    def probe(self, what: str) -> Any:
        """Misbehave as asked (crash, hang, allocate...), or say where it runs."""


SPEC = HookSpec("raykit", version="1.0", hooks=Hooks)
GROUP = "raykit.plugins"
PLUGIN = """\
import os
import sys
import time
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    return f"{text[::-1]}|{len(text)}|{sorted(set(text))}"

@hookimpl
def words(text):
    for word in text.split():
        yield word.upper()

@hookimpl
def probe(what):
    if what == "pid":
        return os.getpid()
    if what == "crash":
        os._exit(3)
    if what == "kill-actor":  # the actor is the worker supervisor's parent
        with open(f"/proc/{os.getppid()}/stat") as f:
            actor = int(f.read().rsplit(")", 1)[1].split()[1])
        os.kill(actor, 9)
        time.sleep(30)
    if what == "hang":
        time.sleep(60)
    if what == "allocate":
        return len(bytearray(400 * 2**20))
    return what
"""


def manifest(isolation: str = "process", environment: str = "") -> str:
    return (
        f'[plugin]\nrequires = "raykit>=1.0"\nisolation = "{isolation}"\nhooks = ["transform", "words", "probe"]\n'
        + environment
    )


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """One local Ray cluster for the session: two CPUs, no dashboard, an 80 MB object store."""
    if ray is None:  # the tests-all sessions do not install the ray extra: its suite runs once, in `tests`
        pytest.skip("ray is not installed (the ray extra)")
    with keep_signal_handlers():  # wasm traps in this process must stay wasmtime's (see pluginsdk._ray.cluster)
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def plugin(site: Path) -> Path:
    install_plugin(site, "rev", PLUGIN, group=GROUP, manifest=manifest())
    return site


def _actors(host: Host, name: str) -> list[Any]:
    backend = host._plugins[name].backend
    assert backend is not None
    return [w.actor for w in backend.pool.all]  # type: ignore[attr-defined]


# -- policy: everywhere ----------------------------------------------------------------


def test_executor_is_checked_in_code_and_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="executor must be one of local, ray, not 'k8s'"):
        Policy(executor="k8s")
    with pytest.raises(ValueError, match="executor for plugin 'a' must be one of local, ray"):
        Policy(executors={"a": "cloud"})
    path = tmp_path / "host.toml"
    path.write_text('[policy]\nexecutor = "ray"\n[policy.ray]\naddress = ""\nnum_gpus = -1\nport = 1\n')
    with pytest.raises(ConfigError) as info:
        Policy.from_toml(path)
    assert str(path) in str(info.value)
    for problem in ("policy.ray.address: expected a non-empty string", "policy.ray.num_gpus: -1 is not allowed",
                    "unknown key policy.ray.port"):  # fmt: skip
        assert problem in info.value.message
    path.write_text(
        '[policy]\nexecutor = "ray"\n[policy.executors]\nlocal-one = "local"\n'
        '[policy.ray]\naddress = "auto"\nnum_cpus = 1\nresources = { accelerator = 1 }\ninstaller = "uv"\n'
    )
    policy = Policy.from_toml(path)
    assert RaySettings(address="auto", num_cpus=1.0, resources={"accelerator": 1.0}, installer="uv") == policy.ray
    assert ("ray", "local", "local") == (
        policy.executor_for("other", "process"),
        policy.executor_for("local-one", "wasm"),
        policy.executor_for("other", "inprocess"),  # in-process plugins never leave the host
    )


def test_ray_options_per_plugin_are_the_hosts_alone(tmp_path: Path) -> None:
    """``[policy.ray.plugins.NAME]``: a plugin's actors' resources and installer; never the connection."""
    path = tmp_path / "host.toml"
    path.write_text(
        '[policy]\nexecutor = "ray"\n[policy.ray]\nnum_cpus = 1\nresources = { a = 1 }\n'
        '[policy.ray.plugins.big]\nnum_gpus = 0.5\nresources = { big_memory = 2 }\ninstaller = "uv"\n'
    )
    ray_settings = Policy.from_toml(path).ray
    assert RaySettings(num_cpus=1.0, num_gpus=0.5, resources={"big_memory": 2.0}, installer="uv") == (
        ray_settings.for_plugin("big")
    )
    assert RaySettings(num_cpus=1.0, resources={"a": 1.0}) == ray_settings.for_plugin("other")
    path.write_text('[policy.ray.plugins.big]\naddress = "auto"\nnum_cpus = -1\n[policy.ray.plugins.small]\nx = 1\n')
    with pytest.raises(ConfigError) as info:
        Policy.from_toml(path)
    for problem in ("big.address: not settable per plugin", "big.num_cpus: -1 is not allowed",
                    "small.x: not settable per plugin"):  # fmt: skip
        assert problem in info.value.message


def test_without_ray_its_plugins_are_unavailable_and_the_rest_works(site: Path) -> None:
    """Ray blocked from import: the Ray plugin says why (naming the extra); an in-process one still runs."""
    install_plugin(site, "rev", PLUGIN, group=GROUP, manifest=manifest())
    install_plugin(site, "local", PLUGIN, group=GROUP, manifest=manifest("inprocess"), dist="raykit-local")
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "ray":
                    raise ImportError("ray is blocked")
        sys.meta_path.insert(0, Block())
        sys.path[:0] = [{str(ROOT)!r}, {str(site)!r}]
        """
    )
    code += textwrap.dedent(
        f"""
        from pluginsdk import Host, Policy
        from tests.test_ray import SPEC
        with Host(SPEC, policy=Policy(executor="ray"), path=[{str(site)!r}]) as host:
            info = {{p.name: p for p in host.plugins()}}
            print(info["rev"].status, "|", info["rev"].reason)
            print(host.hook.transform(text="ab"))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert 0 == result.returncode, result.stderr
    status, second = result.stdout.splitlines()
    assert status.startswith("unavailable | ") and 'pip install "pluginsdk-isolated[ray]"' in status
    assert "[\"ba|2|['a', 'b']\"]" == second


# -- on the cluster --------------------------------------------------------------------


@pytest.mark.usefixtures("cluster")
@pytest.mark.parametrize("level", ["process", "wasm"])
def test_results_equal_every_level(plugin: Path, level: str) -> None:
    """The same plugin, unchanged: in-process, local and on Ray give the same calls, maps and streams."""
    if level == "wasm" and wasm_unavailable() is not None:
        pytest.skip(f"wasm unavailable: {wasm_unavailable()}")
    items = [{"text": f"item {i} {'x' * i}"} for i in range(40)]

    def run(policy: Policy, force: str) -> tuple[Any, ...]:
        with Host(SPEC, policy=policy, path=[str(plugin)], force_isolation=force, prewarm=True) as host:
            results = (
                host.hook.transform(text="hello ray"),
                host.hook.transform.map(items),
                list(host.hook.words(text="a stream of words")[0]),
            )
            info = host.plugin("rev")
            assert "loaded" == info.status
            return (*results, info.runtime)

    limits = Limits(workers=2)
    expected = run(Policy(limits=limits), "inprocess")[:3]
    local = run(Policy(limits=limits), level)
    on_ray = run(Policy(limits=limits, executors={"rev": "ray"}), level)
    assert expected == local[:3] == on_ray[:3]
    assert f"{level} on Ray (2/2 actors)" == on_ray[3]


@pytest.mark.usefixtures("cluster")
def test_map_spreads_over_the_actors(plugin: Path) -> None:
    with Host(SPEC, policy=Policy(executor="ray", limits=Limits(workers=2)), path=[str(plugin)], prewarm=True) as host:
        pids = host.hook.probe.map([{"what": "pid"}] * 20)
        assert 2 == len({p[0] for p in pids})


@pytest.mark.usefixtures("cluster")
def test_crash_timeout_and_memory_cap_are_recovered(plugin: Path) -> None:
    """Each fault is the SDK's error, its actor is replaced, the incident recorded; the next call works."""
    policy = Policy(executor="ray", limits=Limits(timeout=3, memory_mb=300))
    with Host(SPEC, policy=policy, path=[str(plugin)]) as host:
        call = host.hook.probe
        with pytest.raises(PluginCrashed, match=r"exit code 3"):
            call(what="crash")
        guest = call(what="pid")[0]
        with pytest.raises(PluginCrashed, match=r"its Ray actor died"):
            call(what="kill-actor")
        assert procs.wait_until(lambda: not procs.alive(guest)), "the guest outlived its actor"
        guest = call(what="pid")[0]
        with pytest.raises(PluginTimeout):
            call(what="hang")
        assert procs.wait_until(lambda: not procs.alive(guest)), "the guest outlived its timed-out actor"
        with pytest.raises(PluginResourceError):
            call(what="allocate")
        assert ["ok"] == call(what="ok")
        info = host.plugin("rev")
        assert ["crashed", "crashed", "timeout", "resource"] == [i.kind for i in info.incidents]
        assert 1 == len(_actors(host, "rev"))


@pytest.mark.usefixtures("cluster")
def test_close_leaves_no_actor_behind(plugin: Path) -> None:
    assert ray is not None
    memory = ray.cluster_resources()["memory"]
    host = Host(SPEC, policy=Policy(executor="ray", limits=Limits(workers=2, memory_mb=256)), path=[str(plugin)])
    host.plugin("rev")
    pids = {p[0] for p in host.hook.probe.map([{"what": "pid"}] * 4)}  # start both
    actors = _actors(host, "rev")
    assert 2 == len(actors)
    assert ray.available_resources().get("memory", 0) <= memory - 2 * 256 * 2**20
    host.close()
    for actor in actors:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.node.remote(), timeout=30)
    assert procs.wait_until(lambda: not any(procs.alive(p) for p in pids))
    assert procs.wait_until(lambda: ray.available_resources().get("memory", 0) == memory)


@pytest.mark.usefixtures("cluster")
def test_a_plugins_own_ray_options_reach_its_actors(site: Path) -> None:
    """A plugin given ``num_cpus = 1`` of its own holds a CPU per actor while it lives; the other holds none."""
    assert ray is not None
    install_plugin(site, "held", PLUGIN, group=GROUP, manifest=manifest(), dist="raykit-held")
    install_plugin(site, "free", PLUGIN, group=GROUP, manifest=manifest(), dist="raykit-free")
    cpus = ray.cluster_resources()["CPU"]
    policy = Policy(executor="ray", ray={"plugins": {"held": {"num_cpus": 1}}})
    with Host(SPEC, policy=policy, path=[str(site)]) as host:
        assert {"held": "x", "free": "x"} == host.hook.probe.by_plugin(what="x")
        assert 1 == len(_actors(host, "held")) == len(_actors(host, "free"))
        assert cpus - 1 == ray.available_resources().get("CPU", 0)
    assert procs.wait_until(lambda: ray.available_resources().get("CPU", 0) == cpus)


@pytest.mark.usefixtures("cluster")
def test_conflicting_environments_on_ray(site: Path, tmp_path: Path) -> None:
    """Two plugins pin two versions of one library; Ray installs each (offline) as its actors' runtime_env."""
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    for version in ("1.0", "2.0"):
        make_wheel(wheelhouse, "pinme", version, f"__version__ = {version!r}\n")
    source = PLUGIN.replace(
        "def transform(text):\n    return", "def transform(text):\n    import pinme\n    return pinme.__version__ +"
    )
    for name, version in (("old", "1.0"), ("new", "2.0")):
        env = f'[environment]\ndependencies = ["pinme=={version}"]\n'
        install_plugin(site, name, source, group=GROUP, manifest=manifest(environment=env), dist=f"raykit-{name}")
    settings = EnvironmentSettings(find_links=(str(wheelhouse),), no_index=True, timeout=300)
    with Host(SPEC, policy=Policy(executor="ray", environments=settings), path=[str(site)]) as host:
        assert {"old": "1.0", "new": "2.0"} == {k: v[:3] for k, v in host.hook.transform.by_plugin(text="x").items()}
