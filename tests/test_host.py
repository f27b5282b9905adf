"""Tests for pluginsdk.host with in-process plugins: laziness, spec versions, failures, policy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pluginsdk import (
    HookCallError,
    HookSpec,
    Host,
    PluginError,
    PluginHookError,
    PluginLoadError,
    Policy,
    hookspec,
)

from .plugin_factory import install_plugin
from .textkit import SPEC, SPEC_1_0

UPPER = """
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    return text.upper()
"""
REVERSE = """
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    return text[::-1]

@hookimpl
def detect_language(text):
    return "en" if text.isascii() else None
"""
GUESS_FR = """
from pluginsdk import hookimpl

@hookimpl(tryfirst=True)
def detect_language(text):
    return "fr" if "bonjour" in text else None
"""
RAISES = """
from pluginsdk import hookimpl

class Oops(ValueError):
    pass

@hookimpl
def transform(text):
    raise Oops("cannot transform " + text)
"""

# Exceptions that resist being described: issue 11, case 11.
ODD_EXCEPTIONS = """
from pluginsdk import hookimpl

class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("str exploded")

class Unrepresentable(Exception):
    def __repr__(self):
        raise RuntimeError("repr exploded")

class Moduleless(Exception):
    pass

Moduleless.__module__ = 42

class Meta(type):
    def __getattribute__(cls, name):
        if name == "__qualname__":
            raise RuntimeError("no qualname")
        return super().__getattribute__(name)

Nameless = Meta("Nameless", (Exception,), {"__module__": __name__})

@hookimpl
def transform(text):
    raise {"str": Unprintable, "repr": Unrepresentable, "module": Moduleless, "qualname": Nameless}[text]("boom")
"""


def host_for(site: Path, **kw: object) -> Host:
    return Host(SPEC, path=[str(site)], **kw)  # type: ignore[arg-type]


class TestLazyLoading:
    def test_nothing_imported_until_called(self, site: Path) -> None:
        """Host start and plugins() import no plugin; the first call imports only the plugins of that hook."""
        install_plugin(site, "upper", UPPER)
        install_plugin(site, "fr", GUESS_FR, hooks=("detect_language",))
        with host_for(site) as host:
            assert {"available"} == {p.status for p in host.plugins()}
            assert not {"textkit_upper", "textkit_fr"} & set(sys.modules)
            assert ["HI"] == host.hook.transform(text="hi")
            assert "textkit_upper" in sys.modules
            assert "textkit_fr" not in sys.modules
            assert ("loaded", "available") == (host.plugin("upper").status, host.plugin("fr").status)

    def test_after_loading_calls_go_straight_to_the_plugin(self, site: Path) -> None:
        """Once loaded, pluggy holds the plugin's own function: no SDK frame in between."""
        install_plugin(site, "upper", UPPER)
        with host_for(site) as host:
            host.hook.transform(text="x")
            (impl,) = host.hook.transform.get_hookimpls()
            assert sys.modules["textkit_upper"].transform is impl.function

    def test_call_order_does_not_depend_on_load_order(self, site: Path) -> None:
        """Results come in registration order whichever plugin happened to load first."""
        install_plugin(site, "a", UPPER)
        install_plugin(site, "b", REVERSE, hooks=("transform", "detect_language"))
        with host_for(site) as one, host_for(site) as two:
            two.hook.detect_language(text="x")  # loads b first in the second host
            assert one.hook.transform(text="ab") == two.hook.transform(text="ab")

    def test_methods_bound_before_the_first_call_still_work_after_it(self, site: Path) -> None:
        """A method bound while the hook was lazy (say, handed to a thread pool) runs after another call loaded it."""
        install_plugin(site, "upper", UPPER)
        with host_for(site) as host:
            hook = host.hook.transform
            bound = [
                (hook.__call__, {"text": "a"}, ["A"]),
                (hook.by_plugin, {"text": "a"}, {"upper": "A"}),
                (hook.map, [{"text": "a"}], [["A"]]),
            ]
            results, map_results = hook.results, hook.map_results
            assert ["X"] == hook(text="x")
            for method, arg, expected in bound:
                assert expected == (method(arg) if isinstance(arg, list) else method(**arg))
            assert [("upper", "A")] == [(r.plugin, r.value) for r in results(text="a")]
            assert [("upper", ["A"])] == [(r.plugin, r.value) for r in map_results([{"text": "a"}])]

    def test_explicit_load(self, site: Path) -> None:
        """Host.load imports a plugin before its first call."""
        install_plugin(site, "upper", UPPER)
        with host_for(site) as host:
            assert "loaded" == host.load("upper").status

    def test_explicit_load_of_unloadable_plugins_raises(self, site: Path) -> None:
        """Host.load names why a plugin cannot load, with the matching exception type."""
        from pluginsdk import IncompatiblePlugin

        install_plugin(site, "old", UPPER, manifest='[plugin]\nrequires = "textkit<1"\nhooks = ["transform"]\n')
        install_plugin(site, "broken", "raise RuntimeError('nope')\n")
        install_plugin(site, "off", UPPER)
        with host_for(site, policy=Policy(disabled={"off"})) as host:
            with pytest.raises(IncompatiblePlugin, match="textkit<1") as incompatible:
                host.load("old")
            with pytest.raises(PluginLoadError, match="nope"):
                host.load("broken")
            with pytest.raises(PluginLoadError, match="disabled"):
                host.load("off")
        assert "old" == incompatible.value.plugin


class TestPluggySemantics:
    def test_list_and_firstresult(self, site: Path) -> None:
        """Plain hooks return every result; firstresult hooks the first non-None, tryfirst honoured."""
        install_plugin(site, "upper", UPPER)
        install_plugin(site, "rev", REVERSE, hooks=("transform", "detect_language"))
        install_plugin(site, "fr", GUESS_FR, hooks=("detect_language",))
        with host_for(site) as host:
            assert ["HELLO", "olleh"] == sorted(host.hook.transform(text="hello"))
            assert "fr" == host.hook.detect_language(text="bonjour")
            assert "en" == host.hook.detect_language(text="hello")

    def test_map(self, site: Path) -> None:
        """map returns, per item, what a single call would."""
        install_plugin(site, "upper", UPPER)
        install_plugin(site, "rev", REVERSE, hooks=("transform", "detect_language"))
        with host_for(site) as host:
            items = [{"text": "ab"}, {"text": "cd"}]
            assert [host.hook.transform(**i) for i in items] == host.hook.transform.map(items)
            assert ["en", None] == host.hook.detect_language.map([{"text": "x"}, {"text": "é"}])

    def test_by_plugin(self, site: Path) -> None:
        """by_plugin attributes each result to its plugin."""
        install_plugin(site, "upper", UPPER)
        install_plugin(site, "rev", REVERSE, hooks=("transform", "detect_language"))
        with host_for(site) as host:
            assert {"upper": "AB", "rev": "ba"} == host.hook.transform.by_plugin(text="ab")


class TestSpecVersions:
    def test_future_hook_plugin_skipped_before_import(self, site: Path) -> None:
        """On spec 1.0 a plugin implementing a 1.1 hook is incompatible and never imported."""
        install_plugin(site, "rev", REVERSE, hooks=("transform", "detect_language"))
        install_plugin(site, "upper", UPPER)
        with Host(SPEC_1_0, path=[str(site)]) as host:
            info = host.plugin("rev")
            assert "incompatible" == info.status
            assert "added in textkit 1.1" in info.reason
            assert ["HI"] == host.hook.transform(text="hi")
        assert "textkit_rev" not in sys.modules

    def test_undeclared_implementation_fails_that_plugin(self, site: Path) -> None:
        """Code implementing a hook its manifest omits fails only that plugin, at load."""
        install_plugin(site, "rev", REVERSE, hooks=("transform",))
        install_plugin(site, "upper", UPPER)
        with host_for(site) as host:
            assert ["HI"] == host.hook.transform(text="hi")
            info = host.plugin("rev")
            assert "failed" == info.status
            assert "implements ['detect_language'] but its manifest does not declare" in info.reason

    def test_wrong_arguments_fail_that_plugin(self, site: Path) -> None:
        """pluggy's argument validation applies, to that plugin only."""
        install_plugin(
            site,
            "bad",
            "from pluginsdk import hookimpl\n@hookimpl\ndef transform(text, colour):\n    return text\n",
        )
        install_plugin(site, "upper", UPPER)
        with host_for(site) as host:
            assert ["HI"] == host.hook.transform(text="hi")
            assert "colour" in host.plugin("bad").reason


class TestBrokenPlugins:
    def test_each_kind_of_breakage_is_contained(self, site: Path) -> None:
        """Import errors, module-body exceptions and SystemExit fail one plugin each; the good one answers."""
        install_plugin(site, "upper", UPPER)
        install_plugin(site, "importerror", "import no_such_module_anywhere\n")
        install_plugin(site, "body", "raise RuntimeError('module body exploded')\n")
        install_plugin(site, "exits", "raise SystemExit(3)\n")
        install_plugin(site, "noattr", UPPER, entry_value="textkit_noattr:missing")
        with host_for(site) as host:
            assert ["HI"] == host.hook.transform(text="hi")
            assert ["HO"] == host.hook.transform(text="ho")
            infos = {p.name: p for p in host.plugins()}
        assert "loaded" == infos["upper"].status
        assert "ModuleNotFoundError" in infos["importerror"].reason
        assert "Traceback" in infos["importerror"].reason
        assert "module body exploded" in infos["body"].reason
        assert "SystemExit" in infos["exits"].reason
        assert "AttributeError" in infos["noattr"].reason
        assert {"failed"} == {infos[n].status for n in ("importerror", "body", "exits", "noattr")}

    def test_strict_raises_at_load(self, site: Path) -> None:
        """strict=True turns a plugin's import failure into a PluginLoadError for the caller."""
        install_plugin(site, "body", "raise RuntimeError('module body exploded')\n")
        with host_for(site, strict=True) as host, pytest.raises(PluginLoadError, match="exploded") as info:
            host.hook.transform(text="hi")
        assert "body" == info.value.plugin

    def test_strict_raises_at_discovery(self, site: Path) -> None:
        """strict=True refuses to start with a broken manifest."""
        install_plugin(site, "nomanifest", UPPER, manifest="")
        with pytest.raises(PluginLoadError, match=r"no pluginsdk\.toml"):
            host_for(site, strict=True)

    def test_hook_exception_names_the_plugin(self, site: Path) -> None:
        """An exception in a hook reaches the caller as PluginHookError with the plugin, hook and original."""
        install_plugin(site, "upper", UPPER)
        install_plugin(site, "raiser", RAISES)
        with host_for(site) as host:
            for _ in range(2):  # the first call (lazy load) and later ones (straight through pluggy)
                with pytest.raises(PluginHookError) as info:
                    host.hook.transform(text="x")
                err = info.value
                assert ("raiser", "transform", "textkit_raiser.Oops") == (err.plugin, err.hook, err.exc_type)
                assert "cannot transform x" == err.exc_message
                assert isinstance(err.__cause__, ValueError)
                assert "raise Oops" in err.traceback
                assert isinstance(err, PluginError)


    @pytest.mark.parametrize(
        ("kind", "exc_type", "exc_message"),
        [
            ("str", "textkit_odd.Unprintable", "<str() of textkit_odd.Unprintable failed: RuntimeError: str exploded>"),
            ("repr", "textkit_odd.Unrepresentable", "boom"),
            ("module", "Moduleless", "boom"),
            ("qualname", "textkit_odd.Nameless", "boom"),
        ],
    )
    def test_exception_that_resists_description(self, site: Path, kind: str, exc_type: str, exc_message: str) -> None:
        """An exception whose str() or repr() raises, or whose class names are odd, still arrives as PluginHookError."""
        install_plugin(site, "odd", ODD_EXCEPTIONS)
        with host_for(site) as host:
            for _ in range(2):  # lazy first call, then straight through pluggy
                with pytest.raises(PluginHookError) as info:
                    host.hook.transform(text=kind)
                err = info.value
                got = (err.plugin, err.hook, err.exc_type, err.exc_message)
                assert ("odd", "transform", exc_type, exc_message) == got
                assert "Traceback" in err.traceback
                assert type(err.__cause__).__name__ in exc_type
                assert exc_type in str(err)

    def test_module_body_raising_an_unprintable_exception_fails_that_plugin(self, site: Path) -> None:
        """A module body raising an exception whose str() raises fails that plugin, with a reason saying so."""
        install_plugin(
            site,
            "unprintable",
            "class Unprintable(Exception):\n    def __str__(self):\n        raise RuntimeError('str exploded')\n"
            "raise Unprintable()\n",
        )
        install_plugin(site, "upper", UPPER)
        with host_for(site) as host:
            assert ["HI"] == host.hook.transform(text="hi")
            info = host.plugin("unprintable")
        assert "failed" == info.status
        assert "str() of textkit_unprintable.Unprintable failed: RuntimeError: str exploded" in info.reason


class TestPolicy:
    def test_disabled_and_allow_list(self, site: Path) -> None:
        """Disabled plugins and plugins outside the allow-list are never loaded."""
        for name in ("a", "b", "c"):
            install_plugin(site, name, UPPER)
        policy = Policy(disabled={"a"}, allow={"a", "b"})
        with host_for(site, policy=policy) as host:
            assert ["HI"] == host.hook.transform(text="hi")
            infos = {p.name: (p.status, p.reason) for p in host.plugins()}
        assert ("disabled", "disabled by the host's policy") == infos["a"]
        assert "loaded" == infos["b"][0]
        assert ("disabled", "not in the host's allow-list") == infos["c"]

    def test_isolation_only_goes_up(self) -> None:
        """Overrides and the minimum raise a plugin's level; nothing lowers it; trusted plugins skip the floor."""
        policy = Policy(isolation={"a": "wasm", "b": "inprocess"}, min_isolation="process", trusted={"t"})
        assert "wasm" == policy.isolation_for("a", "inprocess")
        assert "wasm" == policy.isolation_for("b", "wasm")
        assert "process" == policy.isolation_for("c", "inprocess")
        assert "inprocess" == policy.isolation_for("t", "inprocess")

    def test_limits(self) -> None:
        """Per-plugin limits win; a manifest may ask for less than the host cap, never more."""
        from pluginsdk import Limits

        policy = Policy(limits=Limits(memory_mb=512, timeout=10.0), plugin_limits={"big": Limits(memory_mb=2048)})
        small = policy.limits_for("small", {"memory_mb": 4096, "timeout": 2.0, "workers": 3})
        assert (512, 2.0, 1) == (small.memory_mb, small.timeout, small.workers)  # workers: capped by the default
        assert 2048 == policy.limits_for("big", {"memory_mb": 64}).memory_mb
        assert 64.0 == policy.limits_for("x", {}).max_message_mb
        # Without a host cap the SDK's defaults cap manifests; bad hints are ignored.
        unset = Policy().limits_for("greedy", {"memory_mb": 10**6, "timeout": float("nan")})
        assert (1024, 30.0) == (unset.memory_mb, unset.timeout)

    def test_from_toml(self, tmp_path: Path, site: Path) -> None:
        """A host reads its policy from a TOML file's [policy] table."""
        config = tmp_path / "host.toml"
        config.write_text(
            '[policy]\ndisabled = ["a"]\nmin_isolation = "process"\ntrusted = ["b"]\n'
            '[policy.isolation]\nb = "process"\n[policy.limits]\ntimeout = 5\n'
        )
        policy = Policy.from_toml(config)
        assert (frozenset({"a"}), "process", "process", 5.0) == (
            policy.disabled,
            policy.min_isolation,
            policy.isolation["b"],
            policy.limits.timeout,
        )
        install_plugin(site, "a", UPPER)
        with host_for(site, config=config) as host:
            assert "disabled" == host.plugin("a").status

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ('[policy]\nmin_isolation = "vm"\n', "min_isolation"),
            ('[policy]\ncolour = "red"\n', "colour"),
            ('[policy]\ndisabled = "a"\n', "list of names"),
            ("[policy\n", "cannot read"),
        ],
    )
    def test_bad_toml(self, tmp_path: Path, text: str, fragment: str) -> None:
        """A malformed policy file is a ConfigError naming the file."""
        from pluginsdk import ConfigError

        config = tmp_path / "host.toml"
        config.write_text(text)
        with pytest.raises(ConfigError, match=fragment) as info:
            Policy.from_toml(config)
        assert str(config) in str(info.value)


UNAVAILABLE_SCRIPT = """
import sys, importlib.abc
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "wasmtime" or name.startswith("wasmtime."):
            raise ModuleNotFoundError("hidden for the test")
        return None
sys.meta_path.insert(0, Hide())
sys.path[:0] = [{site!r}, {tests!r}]
from textkit import SPEC
from pluginsdk import Host
with Host(SPEC, path=[{site!r}]) as host:
    print(host.plugin("sandboxed").status, "|", host.plugin("sandboxed").reason)
    print(host.hook.transform(text="hi"))
print("textkit_sandboxed" in sys.modules)
try:
    Host(SPEC, path=[{site!r}], strict=True)
except Exception as exc:
    print(type(exc).__name__, exc.plugin)
"""


class TestUnavailableBackend:
    def test_missing_wasm_extra_is_reported_not_run_in_process(self, site: Path) -> None:
        """Without wasmtime a wasm plugin is 'unavailable' (never run in-process); strict=True refuses to start."""
        install_plugin(site, "sandboxed", UPPER, isolation="wasm")
        install_plugin(site, "upper", UPPER)
        script = UNAVAILABLE_SCRIPT.format(site=str(site), tests=str(Path(__file__).parent))
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        status, reason = out.splitlines()[0].split(" | ")
        assert "unavailable" == status
        assert "wasm" in reason
        assert ["['HI']", "False", "BackendUnavailable sandboxed"] == out.splitlines()[1:]


class TestPolicyValue:
    def test_replace(self) -> None:
        """replace() returns a changed copy and leaves the original alone."""
        policy = Policy(disabled={"a"})
        changed = policy.replace(min_isolation="process")
        assert (frozenset({"a"}), "process", "inprocess") == (
            changed.disabled,
            changed.min_isolation,
            policy.min_isolation,
        )

    def test_immutable(self) -> None:
        """A policy cannot be changed in place."""
        with pytest.raises(AttributeError, match="immutable"):
            Policy().min_isolation = "wasm"  # type: ignore[misc]

    def test_bad_level(self) -> None:
        """An unknown isolation level is refused at construction."""
        with pytest.raises(ValueError, match="min_isolation"):
            Policy(min_isolation="vm")


class MathHooks:
    @hookspec
    def add(self, a: int, b: int) -> int:  # type: ignore[empty-body]
        """Add two numbers."""

    @hookspec
    def ping(self) -> str:  # type: ignore[empty-body]
        """Answer."""


MATH = HookSpec("mathkit", version="1.0", hooks=MathHooks)


class TestMapArguments:
    def test_several_and_no_arguments(self, site: Path) -> None:
        """map passes each item's arguments in spec order, for two-argument and argument-less hooks alike."""
        install_plugin(
            site,
            "adder",
            "from pluginsdk import hookimpl\n@hookimpl\ndef add(b, a):\n    return a * 10 + b\n"
            "@hookimpl\ndef ping():\n    return 'pong'\n",
            group="mathkit.plugins",
            manifest='[plugin]\nrequires = "mathkit>=1"\nhooks = ["add", "ping"]\n',
        )
        with Host(MATH, path=[str(site)]) as host:
            assert [[12], [34]] == host.hook.add.map([{"a": 1, "b": 2}, {"b": 4, "a": 3}])
            assert [["pong"], ["pong"]] == host.hook.ping.map([{}, {}])

    def test_missing_argument(self, site: Path) -> None:
        """An item without one of the hook's arguments is a HookCallError (a TypeError) naming it and the item."""
        install_plugin(
            site,
            "adder",
            "from pluginsdk import hookimpl\n@hookimpl\ndef add(a, b):\n    return a + b\n",
            group="mathkit.plugins",
            manifest='[plugin]\nrequires = "mathkit>=1"\nhooks = ["add"]\n',
        )
        with Host(MATH, path=[str(site)]) as host, pytest.raises(TypeError, match=r"item 1\): missing 'b'") as info:
            host.hook.add.map([{"a": 1, "b": 2}, {"a": 1}])
        assert isinstance(info.value, HookCallError)
        assert ("add", ("a", "b"), ("b",), (), 1) == (
            info.value.hook,
            info.value.argnames,
            info.value.missing,
            info.value.unexpected,
            info.value.index,
        )


class TestLifetime:
    def test_forgotten_host_leaves_no_record(self, site: Path) -> None:
        """A host dropped without close() is forgotten by the exit hook once collected."""
        import gc

        from pluginsdk import host as host_module

        install_plugin(site, "upper", UPPER)
        host = host_for(site)
        key = id(host)
        assert key in host_module._live_hosts
        del host
        gc.collect()
        assert key not in host_module._live_hosts

    def test_close_is_idempotent(self, site: Path) -> None:
        """Closing twice is harmless, and a closed host is no longer tracked for exit."""
        from pluginsdk import host as host_module

        install_plugin(site, "upper", UPPER)
        host = host_for(site)
        host.close()
        host.close()
        assert id(host) not in host_module._live_hosts


class TestConcurrentFirstCalls:
    def test_threads_racing_the_first_call_agree(self, site: Path) -> None:
        """Threads making a hook's first call at once all wait for its plugins: tryfirst counts for every one."""
        import threading

        install_plugin(
            site,
            "aa",
            "import time\ntime.sleep(0.3)\nfrom pluginsdk import hookimpl\n"
            "@hookimpl(tryfirst=True)\ndef detect_language(text):\n    return 'aa'\n",
            hooks=("detect_language",),
        )
        install_plugin(
            site,
            "zz",
            "from pluginsdk import hookimpl\n@hookimpl\ndef detect_language(text):\n    return 'zz'\n",
            hooks=("detect_language",),
        )
        with host_for(site) as host:
            answers: list[str] = []
            threads = [
                threading.Thread(target=lambda: answers.append(host.hook.detect_language(text="x"))) for _ in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert ["aa"] * 4 == answers


class TestPluginInfoIncidents:
    def test_in_process_plugin_has_none(self, site: Path) -> None:
        """An in-process plugin has no worker to recover: its hook raising leaves no incident, loaded or not."""
        install_plugin(site, "raises", RAISES)
        with host_for(site) as host:
            before = host.plugin("raises")
            with pytest.raises(PluginHookError):
                host.hook.transform(text="x")
            after = host.plugin("raises")
        assert [("available", (), 0), ("loaded", (), 0)] == [
            (info.status, info.incidents, info.incident_count) for info in (before, after)
        ]

    def test_incident_is_exported_lazily(self) -> None:
        """``pluginsdk.Incident`` is in ``__all__`` and its module is imported only when it is first used."""
        script = (
            "import sys, pluginsdk\n"
            "print('Incident' in pluginsdk.__all__, 'pluginsdk.backends.base' in sys.modules)\n"
            "from pluginsdk.backends.base import Incident\n"
            "print(pluginsdk.Incident is Incident)\n"
        )
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        assert ["True False", "True"] == out.splitlines()
