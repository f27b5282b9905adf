"""The typed surface: ``hookimpl`` for plugin authors, typed hook calls for hosts, and what they cost at run time.

The checker tests run where mypy and pyright are installed (the ``typecheck``
dependency group) and are skipped elsewhere; in the ``typecheck`` nox session
(``PLUGINSDK_TYPECHECK=1``) a missing checker is a failure instead.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, get_origin

import pytest

from pluginsdk import HookSpec, Host, hookspec

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "typing" / "sample_host.py"

# Each function must keep its own type through the decorator, bare or with options.
GOOD = """
from collections.abc import Generator
from typing_extensions import assert_type

from pluginsdk import hookimpl


@hookimpl
def plain(text: str) -> str:
    return text.upper()


@hookimpl(tryfirst=True)
def first(text: str) -> str | None:
    return None


@hookimpl(trylast=True, specname="transform", optionalhook=True)
def renamed(lines: list[str], limit: int) -> list[int]:
    return [len(line) for line in lines[:limit]]


@hookimpl(wrapper=True)
def wrapping(text: str) -> Generator[None, object, object]:
    return (yield)


def later(text: str) -> bytes:
    return text.encode()


assert_type(plain("x"), str)
assert_type(first("x"), str | None)
assert_type(renamed(["a"], 1), list[int])
assert_type(hookimpl(later)("x"), bytes)
assert_type(hookimpl(specname="x")(later)("x"), bytes)
decorator = hookimpl(hookwrapper=False, trylast=False)
assert_type(decorator(later)("x"), bytes)
"""

# Lines that must be errors: a wrong option type, an unknown option, a call the kept type forbids.
BAD = """
from pluginsdk import hookimpl


@hookimpl(tryfirst="yes")  # E1
def bad_option(text: str) -> str:
    return text


@hookimpl(colour=True)  # E2
def unknown_option(text: str) -> str:
    return text


@hookimpl
def typed(text: str) -> str:
    return text


typed(1)  # E3
hookimpl("not a function")  # E4
"""


def _need(checker: str) -> None:
    """Skip without ``checker``; in the typecheck session (PLUGINSDK_TYPECHECK=1), fail."""
    if importlib.util.find_spec(checker) is None:
        message = f"{checker} is in the typecheck dependency group"
        if os.environ.get("PLUGINSDK_TYPECHECK") == "1":
            pytest.fail(message + ", which this session installs")
        pytest.skip(message)


def _mypy(tmp_path: Path, source: str, name: str = "sample.py") -> subprocess.CompletedProcess[str]:
    _need("mypy")
    sample = tmp_path / name
    sample.write_text(textwrap.dedent(source))
    cmd = [sys.executable, "-m", "mypy", "--strict", "--python-version", "3.10", "--config-file", ""]
    cmd += ["--cache-dir", str(tmp_path / "cache"), "--no-error-summary", "--show-error-codes", str(sample)]
    # This checkout's pluginsdk, whichever way it is installed.
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)


def _pyright(tmp_path: Path, source: str, name: str = "sample.py") -> list[dict[str, Any]]:
    """pyright's diagnostics (strict, Python 3.10) on ``source``, written to ``tmp_path / name``."""
    _need("pyright")
    (tmp_path / name).write_text(source)
    config = {"typeCheckingMode": "strict", "pythonVersion": "3.10", "include": [name]}
    config["extraPaths"] = [str(ROOT)]  # this checkout's pluginsdk, whichever way it is installed
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    try:
        diagnostics: list[dict[str, Any]] = json.loads(result.stdout)["generalDiagnostics"]
    except (ValueError, KeyError):
        pytest.fail(f"pyright gave no report: {result.stdout}{result.stderr}")
    return diagnostics


def _problems(diagnostics: list[dict[str, Any]]) -> list[str]:
    """pyright's errors and warnings, as ``line: message``."""
    found = [d for d in diagnostics if d["severity"] in ("error", "warning")]
    return [f"{d['range']['start']['line'] + 1}: {d['message']}" for d in found]


class TestHookimplTyping:
    @pytest.mark.parametrize("checker", ["mypy", "pyright"])
    def test_decorated_functions_keep_their_types(self, tmp_path: Path, checker: str) -> None:
        """@hookimpl and @hookimpl(...) with any pluggy option pass the checker and return the function's type."""
        source = textwrap.dedent(GOOD)
        if checker == "mypy":
            result = _mypy(tmp_path, source)
            assert (0, "") == (result.returncode, result.stdout + result.stderr)
        else:
            assert [] == _problems(_pyright(tmp_path, source))

    @pytest.mark.parametrize("checker", ["mypy", "pyright"])
    def test_misuse_is_reported(self, tmp_path: Path, checker: str) -> None:
        """Wrong options, unknown options and calls against the kept signature are errors, and nothing else is."""
        source = textwrap.dedent(BAD)
        expected = {n + 1 for n, line in enumerate(source.splitlines()) if re.search(r"# E\d$", line)}
        if checker == "mypy":
            result = _mypy(tmp_path, source)
            reported = {int(m.group(1)) for m in re.finditer(r"sample\.py:(\d+): error", result.stdout)}
            assert (1, expected) == (result.returncode, reported), result.stdout
        else:
            problems = _problems(_pyright(tmp_path, source))
            assert expected == {int(p.split(":")[0]) for p in problems}, problems


class TestRuntimeCost:
    def test_hookimpl_imports_neither_typing_nor_pluggy(self) -> None:
        """The overloads are for type checkers only: importing the marker loads no typing and no pluggy."""
        script = (
            "import sys\n"
            "before = set(sys.modules)\n"
            "from pluginsdk import hookimpl\n"
            "@hookimpl(tryfirst=True)\n"
            "def f(text): return text\n"
            "@hookimpl\n"
            "def g(text): return text\n"
            "new = set(sys.modules) - before\n"
            "print(sorted(new & {'typing', 'pluggy', 'pluginsdk._dispatch'}), f.pluginsdk_impl['tryfirst'],"
            " g.pluginsdk_impl['tryfirst'])\n"
        )
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        assert "[] True False" == out.strip()


# -- typed hook calls: the sample host, as each checker sees it -------------------------------------------

Report = tuple[dict[int, set[str]], dict[int, str]]  # error codes by line, revealed types by line


def _expected(source: str) -> dict[str, Report]:
    """Each checker's expectations, read from the sample's ``# E:`` and ``# R:`` comments."""
    expected: dict[str, Report] = {"mypy": ({}, {}), "pyright": ({}, {})}
    for number, line in enumerate(source.splitlines(), 1):
        error = re.search(r"\S  # E: ([^#]*?)\s*(?:# noqa.*)?$", line)
        if error:
            for checker, codes in zip(("mypy", "pyright"), error.group(1).split("/"), strict=True):
                wanted = {c.strip() for c in codes.split(",")} - {"-"}
                if wanted:
                    expected[checker][0][number] = wanted
        reveal = re.search(r"\S  # R: (.+)$", line)
        if reveal:
            for checker in expected:
                expected[checker][1][number] = reveal.group(1).strip()
    return expected


def _plain_type(shown: str) -> str:
    """A revealed type as both checkers can agree on it: no module prefixes, NamedTuples by name.

    mypy shows ``builtins.list[pluginsdk._dispatch.PluginResult]`` where pyright
    shows ``list[PluginResult]``, and a NamedTuple as ``tuple[..., fallback=Name]``.
    """
    shown = re.sub(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])", "", shown)
    while match := re.search(r", fallback=(\w+)\]", shown):
        depth, i = 1, match.start()
        while depth:  # back to the "tuple[" this fallback closes
            i -= 1
            depth += {"]": 1, "[": -1}.get(shown[i], 0)
        shown = shown[: i - len("tuple")] + match.group(1) + shown[match.end() :]
    return shown


def _mypy_report(tmp_path: Path) -> tuple[Report, list[str]]:
    """What ``mypy --strict`` reports on the sample; and any error elsewhere (in pluginsdk, say)."""
    result = _mypy(tmp_path, SAMPLE.read_text(), name=SAMPLE.name)
    errors: dict[int, set[str]] = {}
    reveals: dict[int, str] = {}
    others = []
    for line in result.stdout.splitlines():
        if m := re.match(rf"{re.escape(SAMPLE.name)}:(\d+): error: .*\[([\w-]+)\]$", line):
            errors.setdefault(int(m.group(1)), set()).add(m.group(2))
        elif m := re.match(rf'{re.escape(SAMPLE.name)}:(\d+): note: Revealed type is "(.*)"$', line):
            reveals[int(m.group(1))] = _plain_type(m.group(2))
        elif ": error:" in line or not re.match(rf"{re.escape(SAMPLE.name)}:\d+: note: ", line):
            others.append(line)
    return (errors, reveals), others + result.stderr.splitlines()


def _pyright_report(tmp_path: Path) -> tuple[Report, list[str]]:
    """What pyright (strict, Python 3.10) reports on the sample; and anything it says of other files."""
    diagnostics = _pyright(tmp_path, SAMPLE.read_text(), name=SAMPLE.name)
    errors: dict[int, set[str]] = {}
    reveals: dict[int, str] = {}
    others = []
    for d in diagnostics:
        line = d["range"]["start"]["line"] + 1
        if Path(d["file"]).name != SAMPLE.name:
            others.append(f"{d['file']}:{line}: {d['message']}")
        elif d["severity"] == "information" and d["message"].startswith('Type of "'):
            reveals[line] = _plain_type(d["message"].rsplit(' is "', 1)[1][:-1])
        else:  # errors and warnings alike: nothing may slip through as a warning
            errors.setdefault(line, set()).add(d.get("rule", d["severity"]))
    return (errors, reveals), others


class TestTypedHookCalls:
    """``tests/typing/sample_host.py``: typed hook calls, checked by mypy and pyright against its comments."""

    def test_expectations_are_read(self) -> None:
        """The comparison compares something: the sample's comments cover every kind of call."""
        expected = _expected(SAMPLE.read_text())
        for checker in ("mypy", "pyright"):
            errors, reveals = expected[checker]
            assert len(errors) >= 15 and len(reveals) >= 25, checker
        assert "list[str]" in expected["mypy"][1].values()

    def test_plain_type(self) -> None:
        """mypy's and pyright's spellings of one type compare equal once normalised."""
        fields = "builtins.str, Any, pluginsdk._errors.PluginError | None, float"
        mypy = f"builtins.list[tuple[{fields}, fallback=pluginsdk._dispatch.PluginResult]]"
        assert "list[PluginResult]" == _plain_type(mypy) == _plain_type("list[PluginResult]")
        assert "dict[str, str | None]" == _plain_type("builtins.dict[builtins.str, builtins.str | None]")

    @pytest.mark.parametrize("checker", ["mypy", "pyright"])
    def test_sample_host(self, tmp_path: Path, checker: str) -> None:
        """Each checker reports exactly the sample's expected errors, and reveals its expected types."""
        (errors, reveals), others = (_mypy_report if checker == "mypy" else _pyright_report)(tmp_path)
        source = SAMPLE.read_text()
        want_errors, want_reveals = _expected(source)[checker]
        lines = source.splitlines()
        wrong = [
            f"line {n}: {what} {want.get(n)}, reported {got.get(n)}: {lines[n - 1].strip()}"
            for what, want, got in (("expected", want_reveals, reveals), ("expected errors", want_errors, errors))
            for n in sorted(want.keys() | got.keys())
            if want.get(n) != got.get(n)
        ]
        assert [] == others
        assert not wrong, "\n".join([f"{checker} on {SAMPLE.name}:", *wrong])


# -- typed hook calls at run time: nothing changes, nothing costs -----------------------------------------


class _Hooks:
    @hookspec
    def transform(self, text: str) -> str:
        raise NotImplementedError

    @hookspec(firstresult=True)
    def detect_language(self, text: str) -> str | None:
        raise NotImplementedError

    @hookspec(historic=True)
    def configure(self, settings: dict[str, str]) -> None:
        raise NotImplementedError


class TestTypedRuntime:
    def test_hookspec_returns_the_function(self) -> None:
        """The descriptors are for checkers: at run time a hook is still its plain, marked function."""
        assert inspect.isfunction(vars(_Hooks)["transform"])
        assert {"firstresult": True, "historic": False} == {
            k: v for k, v in vars(_Hooks)["detect_language"].pluginsdk_spec.items() if k in ("firstresult", "historic")
        }

    def test_generic_at_run_time(self) -> None:
        """``HookSpec[H]`` and ``Host[H]`` can be written where annotations are evaluated."""
        assert (HookSpec, Host) == (get_origin(HookSpec[_Hooks]), get_origin(Host[_Hooks]))

    def test_typing_costs_nothing(self) -> None:
        """Building a spec and a host never imports the checkers' protocols."""
        script = (
            "import sys\n"
            "from pluginsdk import HookSpec, Host, hookspec\n"
            "class Hooks:\n"
            "    @hookspec(firstresult=True)\n"
            "    def f(self, x): pass\n"
            "Host(HookSpec('costkit', '1.0', hooks=Hooks), path=[]).close()\n"
            "print('pluginsdk._typed' in sys.modules)\n"
        )
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        assert "False" == out.stdout.strip()

    def test_callers_have_what_their_types_promise(self, tmp_path: Path) -> None:
        """Every method the sync caller protocols name exists on ``host.hook.NAME`` and runs."""
        from pluginsdk import _typed

        with Host(HookSpec("shapekit", "1.0", hooks=_Hooks), path=[str(tmp_path)], use_index=False) as host:
            relay: Any = host.hook
            for hook, protocol in [
                ("transform", _typed.HookCaller),
                ("detect_language", _typed.FirstResultCaller),
                ("configure", _typed.HistoricCaller),
            ]:
                assert set() == _members(protocol) - set(dir(getattr(relay, hook))), hook
            assert ([], None, [[]], [None]) == (
                host.hook.transform(text="x"),
                host.hook.detect_language(text="x"),
                host.hook.transform.map([{"text": "x"}]),
                host.hook.detect_language.map([{"text": "x"}]),
            )

    @pytest.mark.skipif(not hasattr(Host, "ahook"), reason="host.ahook is not in this build yet (issue 14, item 1)")
    def test_async_callers_have_what_their_types_promise(self, tmp_path: Path) -> None:
        """``host.ahook.NAME`` has every method the async protocols name, and each returns a coroutine."""
        from pluginsdk import _typed

        async def run(host: Any) -> list[Any]:
            calls = [
                host.ahook.transform(text="x"),
                host.ahook.detect_language(text="x"),
                host.ahook.transform.map([{"text": "x"}]),
                host.ahook.transform.by_plugin(text="x"),
                host.ahook.transform.results(text="x"),
                host.ahook.transform.map_results([{"text": "x"}]),
            ]
            # Coroutines, as the types say: asyncio.create_task takes them.
            assert all(inspect.iscoroutine(c) for c in calls), calls
            return [await asyncio.create_task(c) for c in calls]

        with Host(HookSpec("shapekit", "1.0", hooks=_Hooks), path=[str(tmp_path)], use_index=False) as host:
            relay: Any = host.ahook
            for hook, protocol in [
                ("transform", _typed.AsyncHookCaller),
                ("detect_language", _typed.AsyncFirstResultCaller),
                ("configure", _typed.AsyncHistoricCaller),
            ]:
                assert set() == _members(protocol) - set(dir(getattr(relay, hook))), hook
            assert [[], None, [[]], {}, [], []] == asyncio.run(run(host))


def _members(protocol: type) -> set[str]:
    """The methods a caller protocol names (its own and its bases', ``__call__`` included)."""
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls.__module__ == "pluginsdk._typed":
            names |= {n for n in vars(cls) if not n.startswith("_") or n == "__call__"}
    return names
