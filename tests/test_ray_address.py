"""A host connecting to an existing Ray cluster by ``address`` (``[policy.ray] address = ...``).

A separate Ray head is started here (``ray start --head --block``, one CPU, no
dashboard, its own temp dir, its ports chosen free on localhost), and a host in
a fresh process (this one may hold the session's local cluster, which the SDK
would reuse) connects to it through its policy file.  The head is stopped
afterwards, and nothing it or the host started is left running.  One head per
test session, and one test: it costs a Ray start (a few seconds).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pluginsdk import Host
from tests import procs
from tests.plugin_factory import install_plugin
from tests.test_ray import GROUP, PLUGIN, SPEC, manifest

ROOT = Path(__file__).resolve().parent.parent
RAY = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
#: Seconds the head gets to come up, and to stop after SIGTERM before the rest of its group is killed.
START_TIMEOUT, STOP_GRACE = 90.0, 20.0

pytestmark = [
    pytest.mark.ray,
    pytest.mark.once,  # a Ray head of its own: run by the `tests` session only
    pytest.mark.skipif(RAY is None, reason="ray is not installed (the ray extra)"),
]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _env() -> dict[str, str]:
    """The head's and the host's environment: no crash handler (see keep_signal_handlers), no address from
    outside, and no token authentication (a loopback cluster of this test's own; Ray would otherwise make
    the head and the host look for a token of the user's)."""
    env = {**os.environ, "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    return env


def _session_members(sid: int) -> set[int]:
    """Live processes of session ``sid`` (the head and everything Ray started below it)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[4]) == sid:
                found.add(int(entry))
    return found


@pytest.fixture(scope="module")
def head() -> Iterator[str]:
    """A Ray head in a session of its own; yields its address (``127.0.0.1:PORT``)."""
    assert RAY is not None
    temp = tempfile.mkdtemp(prefix="rh-")  # short: Ray's socket paths live under it
    port, client, agent, metrics, env_agent = _free_ports(5)
    cmd = [
        RAY, "start", "--head", "--block", "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats",
        f"--port={port}", f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={env_agent}",
        f"--object-store-memory={80 * 2**20}", f"--temp-dir={temp}",
    ]  # fmt: skip
    log = open(Path(temp) / "head.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=_env())
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while b"will now block" not in (Path(temp) / "head.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the Ray head did not start:\n" + (Path(temp) / "head.log").read_text()[-3000:])
            time.sleep(0.1)
        yield address
    finally:
        members = _session_members(proc.pid)
        proc.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever did not stop in time
        except ProcessLookupError:
            pass
        proc.wait(10)
        log.close()
        left = {p for p in members | _session_members(proc.pid) if procs.alive(p)}
        assert procs.wait_until(lambda: not any(procs.alive(p) for p in left)), f"left running: {left}"
        shutil.rmtree(temp, ignore_errors=True)


def test_a_host_connects_to_a_cluster_by_address(head: str, site: Path, tmp_path: Path) -> None:
    """``[policy.ray] address``: the host's job is on that head; results equal in-process; nothing stays behind."""
    install_plugin(site, "rev", PLUGIN, group=GROUP, manifest=manifest())
    items = [{"text": f"item {i} {'x' * i}"} for i in range(12)]
    with Host(SPEC, path=[str(site)], force_isolation="inprocess") as host:
        expected = [host.hook.transform(text="over there"), host.hook.transform.map(items)]
    policy = tmp_path / "host.toml"
    policy.write_text(f'[policy]\nexecutor = "ray"\n[policy.ray]\naddress = "{head}"\nnamespace = "pluginsdk-test"\n')
    code = textwrap.dedent(
        f"""
        import json, sys
        sys.path[:0] = [{str(ROOT)!r}, {str(site)!r}]
        from pluginsdk import Host, Limits, Policy
        from tests.test_ray import SPEC
        policy = Policy.from_toml({str(policy)!r}).replace(limits=Limits(workers=2))
        with Host(SPEC, policy=policy, path=[{str(site)!r}], prewarm=True) as host:
            results = [host.hook.transform(text="over there"), host.hook.transform.map({items!r})]
            pids = sorted({{p[0] for p in host.hook.probe.map([{{"what": "pid"}}] * 8)}})
            import ray
            context = ray.get_runtime_context()
            info = host.plugin("rev")
            print("RESULT " + json.dumps({{
                "results": results, "runtime": info.runtime, "pids": pids, "gcs": context.gcs_address,
                "namespace": context.namespace, "incidents": [str(i) for i in info.incidents],
            }}))
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_env())
    assert 0 == run.returncode, run.stdout[-2000:] + run.stderr[-4000:]
    found = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert found, run.stdout[-2000:] + run.stderr[-4000:]
    out = json.loads(found[-1][len("RESULT ") :])
    assert [] == out["incidents"], out
    assert expected == out["results"]
    assert "process on Ray (2/2 actors)" == out["runtime"], out
    assert head.rsplit(":", 1)[1] == out["gcs"].rsplit(":", 1)[1]  # the head started here, not a cluster of its own
    assert "pluginsdk-test" == out["namespace"]
    assert 2 == len(out["pids"]), out
    # The host closed: its actors' worker processes are gone, while the head still runs.
    assert procs.wait_until(lambda: not any(procs.alive(p) for p in out["pids"]), timeout=30)
