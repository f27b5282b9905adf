"""The typed surface plugin authors see: ``hookimpl`` under ``mypy --strict``, and its run-time cost.

The mypy tests run where mypy is installed (the ``typecheck`` dependency
group) and are skipped elsewhere.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Each function must keep its own type through the decorator, bare or with options.
GOOD = """
from collections.abc import Callable
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
def wrapping(text: str) -> object:
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


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy", reason="mypy is in the typecheck dependency group")
    sample = tmp_path / "sample.py"
    sample.write_text(textwrap.dedent(source))
    cmd = [sys.executable, "-m", "mypy", "--strict", "--python-version", "3.10", "--config-file", ""]
    cmd += ["--cache-dir", str(tmp_path / "cache"), "--no-error-summary", "--show-error-codes", str(sample)]
    # This checkout's pluginsdk, whichever way it is installed.
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)


class TestHookimplTyping:
    def test_decorated_functions_keep_their_types(self, tmp_path: Path) -> None:
        """@hookimpl and @hookimpl(...) with any pluggy option pass mypy --strict and return the function's type."""
        result = _mypy(tmp_path, GOOD)
        assert (0, "") == (result.returncode, result.stdout + result.stderr)

    def test_misuse_is_reported(self, tmp_path: Path) -> None:
        """Wrong options, unknown options and calls against the kept signature are mypy errors."""
        result = _mypy(tmp_path, BAD)
        source_lines = textwrap.dedent(BAD).splitlines()
        expected = {n + 1 for n, line in enumerate(source_lines) if re.search(r"# E\d$", line)}
        reported = {int(m.group(1)) for m in re.finditer(r"sample\.py:(\d+): error", result.stdout)}
        assert (1, expected) == (result.returncode, reported), result.stdout


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
