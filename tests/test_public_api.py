"""The public surface: exports, errors that pickle, wrong calls, unknown plugins, per-plugin results."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import pytest

import pluginsdk
from pluginsdk import _errors

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
        err.add_note("a note added by the host")
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
