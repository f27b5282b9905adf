"""pytest fixtures for plugin authors: test a plugin under every isolation level.

Installed with pluginsdk and loaded by pytest automatically (``pytest11``
entry point), so a plugin project's tests just ask for the fixtures::

    def test_finds_keyword(plugin_host):
        result = plugin_host.hook.scan_lines.by_plugin(lines=["CONFIDENTIAL"])
        assert [{"line": 0, ...}] == result["keywords"]

``plugin_host`` depends on ``isolation``, which is parametrized over
``inprocess``, ``process`` and ``wasm``: the test runs three times, each time
with the plugin *as installed* (``pip install -e .``) forced to that level,
which proves it behaves the same everywhere.  A level this machine cannot
provide (no wasm runtime, say) is skipped with the backend's reason.

Configuration, all optional:

* ``[tool.pluginsdk] spec = "module:SPEC"`` in the project's
  ``pyproject.toml`` (the file ``pluginsdk check`` reads too), or the ini
  option ``pluginsdk_spec``: the host spec to test against.
* ini option ``pluginsdk_plugins``: the plugins under test.  By default,
  the entry points the project's ``pyproject.toml`` declares in the spec's
  group, or, failing that, every plugin of the spec that is installed.
* ini option ``pluginsdk_isolation``: the levels to run at (default: all).
* marker ``@pytest.mark.pluginsdk_isolation("inprocess", "process")``:
  the levels one test runs at.
* ini option ``pluginsdk_check_values`` (default true): in-process hosts
  apply the value contract of the isolated levels (``Host(...,
  check_values=True)``), so an in-process test sees the values, and the
  errors, a worker or the sandbox would give; ``host_factory(...,
  check_values=False)`` for one host.

Fixtures: ``pluginsdk_spec``, ``pluginsdk_plugins``, ``isolation``,
``host_factory``, ``plugin_host``, ``same_everywhere``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from .backends.base import ISOLATION_LEVELS

if TYPE_CHECKING:
    from .host import Host
    from .policy import Policy
    from .spec import HookSpec

__all__ = ["HostFactory", "isolation_unavailable", "load_spec"]

_T = TypeVar("_T")
_MARKER = "pluginsdk_isolation"
# Statuses a plugin under test may have once found: anything else is a failure to report.
_RUNNABLE = ("available", "loaded")


def isolation_unavailable(level: str) -> str | None:
    """Why isolation ``level`` cannot run on this machine, or ``None`` if it can."""
    from . import _resolve

    return _resolve.isolation_unavailable(level)


def load_spec(ref: str) -> HookSpec:
    """Import the ``HookSpec`` named by ``module:ATTRIBUTE`` (a usage error for pytest if it cannot)."""
    from . import _resolve
    from ._errors import ConfigError

    try:
        return _resolve.load_spec(ref)
    except ConfigError as exc:
        raise pytest.UsageError(f"pluginsdk: {exc.message} (is the host installed?)") from None


# -- pytest hooks ------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("pluginsdk_spec", "host spec the plugin is tested against, as module:ATTRIBUTE", default="")
    parser.addini(
        "pluginsdk_plugins", "names of the plugins under test (default: the project's entry points)", type="args"
    )
    parser.addini("pluginsdk_isolation", "isolation levels to test at (default: all)", type="args")
    parser.addini(
        "pluginsdk_check_values",
        "in-process hosts apply the isolated levels' value contract (default: true)",
        type="bool",
        default=True,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{_MARKER}(*levels): run this test's isolation-parametrized fixtures at these levels only"
    )


# -- reading the project's configuration ---------------------------------------


def _pyproject(config: pytest.Config) -> dict[str, Any]:
    """The rootdir's ``pyproject.toml`` as data (empty if there is none)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib

    path = Path(config.rootpath) / "pyproject.toml"
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise pytest.UsageError(f"cannot read {path}: {exc}") from None
    return data


@pytest.fixture(scope="session")
def pluginsdk_spec(pytestconfig: pytest.Config) -> HookSpec:
    """The host spec under test, from ``pluginsdk_spec`` or ``[tool.pluginsdk] spec``."""
    ref = str(pytestconfig.getini("pluginsdk_spec") or "")
    if not ref:
        ref = _pyproject(pytestconfig).get("tool", {}).get("pluginsdk", {}).get("spec", "")
    if not ref:
        raise pytest.UsageError(
            "pluginsdk.testing: no host spec configured; set [tool.pluginsdk] spec = 'module:SPEC' "
            "in pyproject.toml or the pluginsdk_spec ini option"
        )
    return load_spec(ref)


@pytest.fixture(scope="session")
def pluginsdk_plugins(pytestconfig: pytest.Config, pluginsdk_spec: HookSpec) -> tuple[str, ...]:
    """Names of the plugins under test (empty: every installed plugin of the spec)."""
    names = [str(n) for n in pytestconfig.getini("pluginsdk_plugins")]
    if names:
        return tuple(names)
    entry_points = _pyproject(pytestconfig).get("project", {}).get("entry-points", {})
    return tuple(entry_points.get(pluginsdk_spec.group, {}))


def _configured_levels(config: pytest.Config) -> tuple[str, ...]:
    levels = tuple(str(x) for x in config.getini("pluginsdk_isolation")) or ISOLATION_LEVELS
    for level in levels:
        if level not in ISOLATION_LEVELS:
            raise pytest.UsageError(
                f"pluginsdk_isolation: unknown level {level!r} (expected {', '.join(ISOLATION_LEVELS)})"
            )
    return levels


def _requested_levels(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """Levels the test asks for: its marker if any, else the ini option."""
    marker = request.node.get_closest_marker(_MARKER)
    if marker is None:
        return _configured_levels(request.config)
    for level in marker.args:
        if level not in ISOLATION_LEVELS:
            raise pytest.UsageError(f"{_MARKER}: unknown level {level!r} (expected {', '.join(ISOLATION_LEVELS)})")
    return tuple(marker.args)


# -- fixtures ----------------------------------------------------------------


@pytest.fixture(params=ISOLATION_LEVELS)
def isolation(request: pytest.FixtureRequest) -> str:
    """Each isolation level in turn; skipped where not requested or not available here."""
    level: str = request.param
    if level not in _requested_levels(request):
        pytest.skip(f"isolation {level!r} not requested for this test")
    why = isolation_unavailable(level)
    if why is not None:
        pytest.skip(f"isolation {level!r} is unavailable here: {why}")
    return level


class HostFactory:
    """Builds hosts around the plugins under test; closes them all at teardown.

    Call it as ``host_factory(isolation)``; keyword arguments override the
    defaults: ``plugins`` (names allowed to load), ``spec``, ``policy``
    (replaces the allow-list policy), and any other :class:`~pluginsdk.Host`
    argument (``path``, ``prewarm``...).  ``check_values`` (default: the
    factory's, from the ``pluginsdk_check_values`` ini option) makes in-process
    plugins meet the isolated levels' value contract.
    """

    def __init__(self, spec: HookSpec, plugins: Sequence[str], *, check_values: bool = True) -> None:
        self.spec = spec
        self.plugins = tuple(plugins)
        self.check_values = check_values
        self._hosts: list[Host] = []

    def __call__(
        self,
        isolation: str | None = None,
        *,
        plugins: Sequence[str] | None = None,
        spec: HookSpec | None = None,
        policy: Policy | None = None,
        **host_kwargs: Any,
    ) -> Host:
        from .host import Host
        from .policy import Policy

        names = self.plugins if plugins is None else tuple(plugins)
        if policy is None:
            # Only the plugins under test: other plugins of the same spec installed
            # in the environment must not change the results.
            policy = Policy(allow=frozenset(names)) if names else Policy()
        host_kwargs.setdefault("check_values", self.check_values)
        host = Host(spec or self.spec, policy=policy, force_isolation=isolation, **host_kwargs)
        self._hosts.append(host)
        if names:
            _check_found(host, names, isolation)
        return host

    def close(self) -> None:
        for host in reversed(self._hosts):
            host.close()
        self._hosts.clear()


def _check_found(host: Host, names: Sequence[str], isolation: str | None) -> None:
    """Fail (or skip) now, with the reason, if a plugin under test cannot run."""
    found = {info.name: info for info in host.plugins()}
    for name in names:
        info = found.get(name)
        if info is None:
            host.close()
            pytest.fail(
                f"plugin {name!r} is not installed for spec {host.spec.name!r} "
                f"(entry-point group {host.spec.group!r}); install the project first: pip install -e . "
                f"(found: {', '.join(sorted(found)) or 'none'})",
                pytrace=False,
            )
        if info.status == "unavailable":
            host.close()
            pytest.skip(f"plugin {name!r} cannot run at {isolation or info.isolation!r} here: {info.reason}")
        if info.status not in _RUNNABLE:
            host.close()
            pytest.fail(f"plugin {name!r} is {info.status}: {info.reason}", pytrace=False)


@pytest.fixture
def host_factory(
    pluginsdk_spec: HookSpec, pluginsdk_plugins: tuple[str, ...], pytestconfig: pytest.Config
) -> Iterator[HostFactory]:
    """A :class:`HostFactory` for the spec and plugins under test."""
    check_values = bool(pytestconfig.getini("pluginsdk_check_values"))
    factory = HostFactory(pluginsdk_spec, pluginsdk_plugins, check_values=check_values)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def plugin_host(host_factory: HostFactory, isolation: str) -> Host:
    """A host running only the plugins under test, all forced to ``isolation``."""
    return host_factory(isolation)


@pytest.fixture
def same_everywhere(host_factory: HostFactory, request: pytest.FixtureRequest) -> Callable[[Callable[[Host], _T]], _T]:
    """Run ``fn(host)`` at every available level; fail unless all results are equal.

    Returns the common result, so the test can then assert what it is::

        result = same_everywhere(lambda host: host.hook.scan_lines(lines=LINES))
        assert EXPECTED == result
    """

    def run(fn: Callable[[Host], _T]) -> _T:
        results: dict[str, _T] = {}
        skipped: dict[str, str] = {}
        for level in _requested_levels(request):
            why = isolation_unavailable(level)
            if why is not None:
                skipped[level] = why
                continue
            host = host_factory(level)
            try:
                results[level] = fn(host)
            finally:
                host.close()
        if not results:
            pytest.skip(f"no isolation level available: {skipped}")
        first = next(iter(results.values()))
        differing = {lvl: r for lvl, r in results.items() if r != first}
        if differing:
            lines = [f"  {lvl}: {r!r}" for lvl, r in results.items()]
            pytest.fail("results differ between isolation levels:\n" + "\n".join(lines), pytrace=False)
        return first

    return run
