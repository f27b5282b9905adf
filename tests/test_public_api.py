"""The public surface: exports, errors that pickle, wrong calls, unknown plugins, per-plugin results."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import pluginsdk
from pluginsdk import HookSpec, Host, _errors, hookspec

from .plugin_factory import install_plugin
from .textkit import SPEC

# One instance of every PluginError subclass, each field set to something other than its default.
SAMPLES: list[pluginsdk.PluginError] = [
    _errors.PluginError("root", plugin="p"),
    _errors.SpecError("bad spec"),
    _errors.ConfigError("bad key", path="/etc/host.toml"),
    _errors.ManifestError("bad manifest", plugin="p", path="/x/pluginsdk.toml", problems=["a", "b"]),
    _errors.IncompatiblePlugin("wants textkit<1", plugin="p"),
    _errors.UnknownPlugin("uper", known=["upper", "lower"]),
    _errors.PluginLoadError("import failed", plugin="p", traceback="Traceback ...\n"),
    _errors.BackendUnavailable("no wasmtime", plugin="p", traceback="tb"),
    _errors.PluginHookError(plugin="p", hook="transform", exc_type="m.Oops", exc_message="no", traceback="tb", index=3),
    _errors.HookCallError(hook="transform", argnames=["text"], missing=["text"], unexpected=["txt"], index=1),
    _errors.CodecError("not encodable", plugin="p", hook="transform", argument="text", index=2),
    _errors.PluginCrashed("worker died", plugin="p", detail="signal 9"),
    _errors.PluginTimeout("too slow", plugin="p", timeout=2.5),
    _errors.PluginResourceError("too big", plugin="p", index=4),
    _errors.PluginProtocolError("replied twice", plugin="p", hook="transform", detail="request 3 answered twice"),
]


def _state(err: BaseException) -> tuple[object, ...]:
    return (type(err), err.args, str(err), vars(err))


class TestPickling:
    def test_every_error_class_is_sampled(self) -> None:
        """The samples cover every PluginError subclass _errors defines (a new one must be added here)."""
        defined = {
            obj
            for obj in vars(_errors).values()
            if isinstance(obj, type) and issubclass(obj, pluginsdk.PluginError) and obj.__module__ == _errors.__name__
        }
        assert defined == {type(err) for err in SAMPLES}

    @pytest.mark.parametrize("err", SAMPLES, ids=lambda e: type(e).__name__)
    def test_round_trip_keeps_every_field(self, err: pluginsdk.PluginError) -> None:
        """pickle (every protocol) and deepcopy give back the same class, message and attributes."""
        err.__notes__ = ["a note added by the host"]  # add_note() is 3.11+; the attribute is what it sets
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            back = pickle.loads(pickle.dumps(err, protocol=protocol))
            assert _state(err) == _state(back)
        assert _state(err) == _state(copy.deepcopy(err))

    def test_round_trip_in_another_process(self) -> None:
        """A pickled PluginHookError is rebuilt by a fresh interpreter, fields intact."""
        err = SAMPLES[8]
        script = (
            "import pickle, sys\n"
            "e = pickle.loads(sys.stdin.buffer.read())\n"
            "print(type(e).__name__, e.plugin, e.hook, e.exc_type, e.index, repr(e.traceback))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script], input=pickle.dumps(err), capture_output=True, check=True
        ).stdout
        assert "PluginHookError p transform m.Oops 3 'tb'" == out.decode().strip()


class TestExports:
    def test_all_names_resolve(self) -> None:
        """Every name in __all__ is importable from the package root."""
        for name in pluginsdk.__all__:
            assert getattr(pluginsdk, name) is not None

    def test_new_errors_are_plugin_errors(self) -> None:
        """HookCallError is also a TypeError and UnknownPlugin a KeyError, both rooted at PluginError."""
        assert issubclass(pluginsdk.HookCallError, (pluginsdk.PluginError, TypeError))
        assert issubclass(pluginsdk.UnknownPlugin, pluginsdk.PluginError)
        assert issubclass(pluginsdk.UnknownPlugin, KeyError)


class TestExceptionText:
    def test_str_that_raises(self) -> None:
        """exception_text reports a failing __str__ instead of raising."""

        class Bad(Exception):
            def __str__(self) -> str:
                raise RuntimeError("str exploded")

        assert "<str() of " in _errors.exception_text(Bad())
        assert "Bad failed: RuntimeError: str exploded>" in _errors.exception_text(Bad())

    def test_odd_class_names(self) -> None:
        """type_name copes with a non-string __module__ and a __qualname__ that raises."""

        class Meta(type):
            def __getattribute__(cls, name: str) -> object:
                if name == "__qualname__":
                    raise RuntimeError("no name")
                return super().__getattribute__(name)

        class NoModule(Exception):
            pass

        NoModule.__module__ = None  # type: ignore[assignment]
        Odd = Meta("Odd", (Exception,), {"__module__": "plugin.mod"})
        assert NoModule.__qualname__ == _errors.type_name(NoModule)
        assert "plugin.mod.Odd" == _errors.type_name(Odd)


UPPER = """
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    return text.upper()
"""
FLAKY = """
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    if text.startswith("bad"):
        raise ValueError("cannot take " + text)
    return text[::-1]
"""
SILENT = """
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    return None
"""
GUESS_FR = """
from pluginsdk import hookimpl

@hookimpl(tryfirst=True)
def detect_language(text):
    return "fr" if "bonjour" in text else None
"""
GUESS_EN = """
from pluginsdk import hookimpl

@hookimpl
def detect_language(text):
    return "en"
"""


def host_for(site: Path, **kw: Any) -> Host:
    return Host(SPEC, path=[str(site)], **kw)


class TestWrongArguments:
    @pytest.mark.parametrize(
        ("kwargs", "missing", "unexpected"),
        [
            ({"txt": 1}, ("text",), ("txt",)),
            ({}, ("text",), ()),
            ({"text": "x", "colour": "red"}, (), ("colour",)),
        ],
    )
    def test_call(
        self, site: Path, kwargs: dict[str, Any], missing: tuple[str, ...], unexpected: tuple[str, ...]
    ) -> None:
        """A call with other arguments than the spec's raises HookCallError naming the hook and the spec's arguments."""
        install_plugin(site, "upper", UPPER)
        with host_for(site) as host:
            for _ in range(2):  # the first call (lazy) and a later one (straight through pluggy)
                with pytest.raises(pluginsdk.HookCallError) as info:
                    host.hook.transform(**kwargs)
                err = info.value
                assert ("transform", ("text",), missing, unexpected, None) == (
                    err.hook,
                    err.argnames,
                    err.missing,
                    err.unexpected,
                    err.index,
                )
                assert "hook 'transform' called with wrong arguments" in str(err)
                assert "(the spec's arguments: text)" in str(err)
                assert ["X"] == host.hook.transform(text="x")

    def test_every_calling_form(self, site: Path) -> None:
        """by_plugin, results, map and map_results refuse wrong arguments the same way; batches name the item."""
        install_plugin(site, "upper", UPPER)
        with host_for(site) as host:
            hook = host.hook.transform
            for call in (lambda: hook.by_plugin(txt="x"), lambda: hook.results(txt="x")):
                with pytest.raises(pluginsdk.HookCallError, match="missing 'text'; unexpected 'txt'"):
                    call()
            for batch in (hook.map, hook.map_results):
                with pytest.raises(pluginsdk.HookCallError, match=r"\(batch item 1\): unexpected 'extra'") as info:
                    batch([{"text": "a"}, {"text": "b", "extra": 1}])
                assert 1 == info.value.index

    def test_isolated_plugin_is_not_even_started(self, site: Path) -> None:
        """The arguments are checked before dispatch: a worker-process plugin is not started by a wrong call."""
        install_plugin(site, "upper", UPPER, isolation="process")
        with host_for(site) as host:
            with pytest.raises(pluginsdk.HookCallError, match="missing 'text'"):
                host.hook.transform(txt="x")
            assert ("available", "") == (host.plugin("upper").status, host.plugin("upper").runtime)

    def test_spec_defaults(self, site: Path) -> None:
        """A defaulted spec argument may be omitted where pluggy reads spec defaults; elsewhere it is missing."""
        install_plugin(
            site,
            "scaler",
            "from pluginsdk import hookimpl\n@hookimpl\ndef scale(value, factor):\n    return value * factor\n",
            group="scalekit.plugins",
            manifest='[plugin]\nrequires = "scalekit>=1"\nisolation = "process"\nhooks = ["scale"]\n',
        )
        with Host(SCALES, path=[str(site)]) as host:
            assert [6] == host.hook.scale(value=2, factor=3)
            if getattr(host.hook.scale.spec, "kwargdefaults", None):  # pluggy 1.7 and later
                assert [2] == host.hook.scale(value=2)
            else:
                with pytest.raises(pluginsdk.HookCallError, match="missing 'factor'"):
                    host.hook.scale(value=2)
            with pytest.raises(pluginsdk.HookCallError, match="unexpected 'size'"):
                host.hook.scale(value=2, size=3)

    def test_hook_without_plugins(self, site: Path) -> None:
        """No plugin implements the hook: a wrong call is refused all the same (pluggy would return [])."""
        with host_for(site) as host:
            with pytest.raises(pluginsdk.HookCallError):
                host.hook.transform(txt="x")
            assert [] == host.hook.transform(text="x")


class TestUnknownPlugin:
    def test_did_you_mean(self, site: Path) -> None:
        """host.plugin and host.load name the plugins there are, and the close ones."""
        for name in ("upper", "lower", "reverse"):
            install_plugin(site, name, UPPER)
        with host_for(site) as host:
            for lookup in (host.plugin, host.load):
                with pytest.raises(pluginsdk.UnknownPlugin) as info:
                    lookup("uper")
                assert (
                    "plugin 'uper': no such plugin; the host has: lower, reverse, upper (did you mean 'upper'?)"
                    == str(info.value)
                )
                assert ("uper", ("lower", "reverse", "upper")) == (info.value.plugin, info.value.known)
            with pytest.raises(KeyError):  # what it raised before, still caught as such
                host.plugin("zzz")
            with pytest.raises(pluginsdk.UnknownPlugin) as far:
                host.plugin("zzz")
            assert "did you mean" not in str(far.value)

    def test_no_plugins_at_all(self, site: Path) -> None:
        """A host with no plugins says so."""
        with host_for(site) as host, pytest.raises(pluginsdk.UnknownPlugin, match="found no plugins at all"):
            host.plugin("upper")

    def test_long_lists_are_cut(self, site: Path) -> None:
        """Past twenty names, the message counts the rest."""
        for i in range(25):
            install_plugin(site, f"p{i:02d}", UPPER)
        with host_for(site) as host, pytest.raises(pluginsdk.UnknownPlugin, match=r"p19 and 5 more$"):
            host.plugin("nosuch")


class TestResults:
    def test_values_errors_and_times_in_call_order(self, site: Path) -> None:
        """One PluginResult per plugin, in pluggy's call order; a failing plugin is reported, not raised."""
        install_plugin(site, "a_upper", UPPER)
        install_plugin(site, "b_flaky", FLAKY)
        install_plugin(site, "c_silent", SILENT)
        with host_for(site) as host:
            order = [impl.plugin_name for impl in reversed(host.hook.transform.get_hookimpls())]
            good = host.hook.transform.results(text="ab")
            bad = host.hook.transform.results(text="bad")
        assert order == [r.plugin for r in good] == [r.plugin for r in bad]
        assert {"a_upper": ("AB", None), "b_flaky": ("ba", None), "c_silent": (None, None)} == {
            r.plugin: (r.value, r.error) for r in good
        }
        assert all(r.ok and r.seconds > 0 for r in good)
        failed = {r.plugin: r for r in bad}
        assert ("BAD", True) == (failed["a_upper"].value, failed["a_upper"].ok)
        err = failed["b_flaky"].error
        assert isinstance(err, pluginsdk.PluginHookError)
        assert ("b_flaky", "transform", "ValueError", "cannot take bad") == (
            err.plugin,
            err.hook,
            err.exc_type,
            err.exc_message,
        )
        assert isinstance(err.__cause__, ValueError)
        assert (None, False) == (failed["b_flaky"].value, failed["b_flaky"].ok)

    def test_firstresult_hook_reports_every_plugin(self, site: Path) -> None:
        """On a firstresult hook every plugin still answers, tryfirst first, None kept."""
        install_plugin(site, "en", GUESS_EN, hooks=("detect_language",))
        install_plugin(site, "fr", GUESS_FR, hooks=("detect_language",))
        with host_for(site) as host:
            assert "en" == host.hook.detect_language(text="hello")
            got = host.hook.detect_language.results(text="hello")
        assert [("fr", None), ("en", "en")] == [(r.plugin, r.value) for r in got]

    def test_worker_process_plugin(self, site: Path) -> None:
        """An isolated plugin's result and failure arrive the same way, with its crossing timed."""
        install_plugin(site, "upper", UPPER)
        install_plugin(site, "flaky", FLAKY, isolation="process")
        with host_for(site) as host:
            good = {r.plugin: r for r in host.hook.transform.results(text="ab")}
            bad = {r.plugin: r for r in host.hook.transform.results(text="bad")}
            info = host.plugin("flaky")
        assert ("process", "loaded") == (info.isolation, info.status)
        assert info.runtime.startswith("process")
        assert ("ba", None) == (good["flaky"].value, good["flaky"].error)
        assert ("BAD", None) == (bad["upper"].value, bad["upper"].error)
        err = bad["flaky"].error
        assert isinstance(err, pluginsdk.PluginHookError)
        assert ("flaky", "ValueError", "cannot take bad") == (err.plugin, err.exc_type, err.exc_message)
        assert bad["flaky"].seconds > 0

    def test_map_results(self, site: Path) -> None:
        """The batch form: a list of values per plugin; a failure names the item; isolated plugins cross once."""
        install_plugin(site, "upper", UPPER)
        install_plugin(site, "flaky", FLAKY)
        install_plugin(site, "remote", FLAKY, isolation="process")
        items = [{"text": "ab"}, {"text": "bad"}, {"text": "cd"}]
        with host_for(site) as host:
            ok = {r.plugin: r for r in host.hook.transform.map_results(items[::2])}
            mixed = {r.plugin: r for r in host.hook.transform.map_results(items)}
        assert {"upper": ["AB", "CD"], "flaky": ["ba", "dc"], "remote": ["ba", "dc"]} == {
            name: r.value for name, r in ok.items()
        }
        assert (["AB", "BAD", "CD"], None) == (mixed["upper"].value, mixed["upper"].error)
        for name in ("flaky", "remote"):
            err = mixed[name].error
            assert isinstance(err, pluginsdk.PluginHookError), name
            assert (None, name, 1, "ValueError") == (mixed[name].value, err.plugin, err.index, err.exc_type)

    def test_executor_runs_plugins_at_once(self, site: Path) -> None:
        """With an executor every plugin's call runs at once (two plugins meet at a barrier); order is kept."""
        (site / "meeting.py").write_text("import threading\nbarrier = threading.Barrier(2, timeout=20)\n")
        meet = (
            "import meeting\nfrom pluginsdk import hookimpl\n"
            "@hookimpl\ndef transform(text):\n    meeting.barrier.wait()\n    return __name__ + ':' + text\n"
        )
        install_plugin(site, "one", meet)
        install_plugin(site, "two", meet)
        with host_for(site) as host, ThreadPoolExecutor(2) as pool:
            order = [impl.plugin_name for impl in reversed(host.hook.transform.get_hookimpls())]
            got = host.hook.transform.results(pool, text="x")
            batch = host.hook.transform.map_results([{"text": "y"}], pool)
        assert [(name, f"textkit_{name}:x", None) for name in order] == [(r.plugin, r.value, r.error) for r in got]
        assert [(name, [f"textkit_{name}:y"]) for name in order] == [(r.plugin, r.value) for r in batch]

    def test_executor_is_positional_only(self, site: Path) -> None:
        """A hook argument may be called ``executor``: results() passes it to the plugins."""
        install_plugin(
            site,
            "runner",
            "from pluginsdk import hookimpl\n@hookimpl\ndef run(executor):\n    return executor * 2\n",
            group="runkit.plugins",
            manifest='[plugin]\nrequires = "runkit>=1"\nhooks = ["run"]\n',
        )
        with Host(RUNS, path=[str(site)]) as host:
            assert [("runner", 42)] == [(r.plugin, r.value) for r in host.hook.run.results(executor=21)]

    def test_exported_lazily(self) -> None:
        """pluginsdk.PluginResult is in __all__; importing pluginsdk does not import the host side for it."""
        script = (
            "import sys, pluginsdk\n"
            "print('PluginResult' in pluginsdk.__all__, 'pluginsdk._dispatch' in sys.modules)\n"
            "from pluginsdk._dispatch import PluginResult\n"
            "print(pluginsdk.PluginResult is PluginResult)\n"
        )
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        assert ["True False", "True"] == out.splitlines()

    def test_stats_records_exported_lazily(self, site: Path) -> None:
        """HookStats and Latency are in __all__, typed records; host.stats() returns them."""
        script = (
            "import sys, pluginsdk\n"
            "names = pluginsdk.__all__\n"
            "print('HookStats' in names, 'Latency' in names, 'pluginsdk._stats' in sys.modules)\n"
            "from pluginsdk._stats import HookStats, Latency\n"
            "print(pluginsdk.HookStats is HookStats, pluginsdk.Latency is Latency, HookStats._fields[:2])\n"
        )
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        assert ["True True False", "True True ('plugin', 'hook')"] == out.splitlines()
        install_plugin(site, "upper", UPPER, isolation="process")
        with Host(SPEC, path=[str(site)]) as host:
            host.hook.transform(text="a")
            (row,) = host.stats()
        assert isinstance(row, pluginsdk.HookStats) and isinstance(row.latency, pluginsdk.Latency)
        assert ("upper", "transform", 1) == (row.plugin, row.hook, row.calls)


class ScaleHooks:
    @hookspec
    def scale(self, value: int, factor: int = 1) -> int:  # type: ignore[empty-body]
        """A hook with a defaulted argument (pluggy lets calls omit it)."""


SCALES = HookSpec("scalekit", version="1.0", hooks=ScaleHooks)


class RunHooks:
    @hookspec
    def run(self, executor: int) -> int:  # type: ignore[empty-body]
        """A hook whose argument has the name of results()' positional-only parameter."""


RUNS = HookSpec("runkit", version="1.0", hooks=RunHooks)


class EventHooks:
    @hookspec(historic=True)
    def started(self, when: str) -> str:  # type: ignore[empty-body]
        """Tell plugins the host started."""


EVENTS = HookSpec("eventkit", version="1.0", hooks=EventHooks)


class TestHistoric:
    def test_call_historic_checks_arguments_and_answers(self, site: Path) -> None:
        """call_historic refuses wrong arguments like a plain call, and hands results to the callback."""
        install_plugin(
            site,
            "listener",
            "from pluginsdk import hookimpl\n@hookimpl\ndef started(when):\n    return 'heard ' + when\n",
            group="eventkit.plugins",
            manifest='[plugin]\nrequires = "eventkit>=1"\nhooks = ["started"]\n',
        )
        with Host(EVENTS, path=[str(site)]) as host:
            with pytest.raises(pluginsdk.HookCallError, match="unexpected 'wen'"):
                host.hook.started.call_historic(kwargs={"wen": "now"})
            heard: list[str] = []
            host.hook.started.call_historic(heard.append, kwargs={"when": "now"})
        assert ["heard now"] == heard
