"""The value contract (docs/values.md), at every level, from one table.

One real installed plugin returns each kind of value, and receives each kind
of argument; the same call runs in-process, in-process with ``check_values``,
in worker processes and in the sandbox.  :data:`RESULTS` and :data:`ARGUMENTS`
say what each level gives; docs/values.md shows the same tables, rendered
from these by :func:`markdown` (a test checks they agree, so the documentation
cannot drift from what is tested).

Expected values and the plugin's values are Python source, evaluated with the
host's ``datetime`` and the types of the ``valueskit-types`` distribution, on
which both the spec and the plugin depend (the sandbox mounts it).  An
expectation ``CodecError at LOCATION: TYPE`` means the call raises
:class:`~pluginsdk.CodecError` naming the plugin, the hook, ``LOCATION``
(the argument or return value, and the path inside it) and ``TYPE``, the type
of the part to blame.
"""

from __future__ import annotations

import importlib
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pluginsdk import CodecError, Host, PluginHookError
from pluginsdk._values import ALLOWED

from .plugin_env import wasm_unavailable
from .plugin_factory import add_requires, install_library, install_plugin

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parent.parent / "docs" / "values.md"
PLUGIN = "values"
SAME = "same"


class Row(NamedTuple):
    """One line of the contract: ``hook`` with ``sent`` gives ``inprocess`` as is, ``crossed`` at a boundary."""

    kind: str
    hook: str  # the spec's hook, with the annotation the row is about
    sent: str  # Python source: what the plugin returns (RESULTS) or the host passes (ARGUMENTS)
    inprocess: str  # what an in-process call gives without check_values ("same": the very value)
    crossed: str  # what process, wasm and in-process with check_values give, or "CodecError at ...: TYPE"


WHEN = "datetime(2024, 5, 1, 12, 0)"
BAD = "CodecError at"

RESULTS = [
    Row("None", "value", "None", SAME, "None"),
    Row("bool", "value", "True", SAME, "True"),
    Row("int", "value", "-(2**63)", SAME, "-9223372036854775808"),
    Row("int over 64 bits", "value", "2**64", SAME, f"{BAD} `return value`: `int`"),
    Row("float", "value", "0.5", SAME, "0.5"),
    Row("str", "value", "'né'", SAME, "'né'"),
    Row("bytes", "value", "b'\\x00'", SAME, "b'\\x00'"),
    Row("list", "value", "[1, 'a']", SAME, "[1, 'a']"),
    Row("tuple", "value", "(1, 'a')", SAME, "[1, 'a']"),
    Row("tuple, annotated", "pair", "(1, 'a')", SAME, "(1, 'a')"),
    Row("dict, non-str keys", "value", "{1: 'a', b'k': None, (1, 2): True}", SAME, SAME),
    Row("set", "value", "{3}", SAME, "[3]"),
    Row("set, annotated", "numbers", "{3}", SAME, "{3}"),
    Row("frozenset, annotated", "labels", "frozenset({'a'})", SAME, "frozenset({'a'})"),
    Row("datetime", "value", WHEN, SAME, "'2024-05-01T12:00:00'"),
    Row("datetime, annotated", "when", WHEN, SAME, WHEN),
    Row("enum", "value", "Color.RED", SAME, "'red'"),
    Row("enum, annotated", "color", "Color.RED", SAME, "Color.RED"),
    Row("dataclass", "value", f"Record('a', {WHEN})", SAME, "{'name': 'a', 'when': '2024-05-01T12:00:00'}"),
    Row("dataclass, annotated", "record", f"Record('a', {WHEN})", SAME, f"Record('a', {WHEN})"),
    Row("attrs class, annotated", "point", "Point(1, 2)", SAME, "Point(1, 2)"),
    Row("dicts, annotated as dataclasses", "records", "[{'name': 'a', 'when': '2024-05-01'}]", SAME,
        "[Record('a', datetime(2024, 5, 1, 0, 0))]"),
    Row("custom class", "value", "Opaque()", SAME, f"{BAD} `return value`: `valueskit_types.Opaque`"),
    Row("custom class, nested", "value", "[1, 2, {'when': Opaque()}]", SAME,
        f"{BAD} `return value[2]['when']`: `valueskit_types.Opaque`"),
    Row("dataclass field holding a custom class", "value", "Record('a', Opaque())", SAME,
        f"{BAD} `return value.when`: `valueskit_types.Opaque`"),
    Row("not what the annotation says", "stats", "[1]", SAME, f"{BAD} `return value`: `list`"),
    Row("not what the annotation says, nested", "records",
        "[{'name': 'a', 'when': '2024-05-01'}, {'name': 'b', 'when': 'soon'}]", SAME,
        f"{BAD} `return value[1]['when']`: `str`"),
]  # fmt: skip

ARGUMENTS = [
    Row("tuple", "echo", "(1, 'a')", SAME, "[1, 'a']"),
    Row("set", "echo", "{3}", SAME, "[3]"),
    Row("dict, non-str keys", "echo", "{1: 'a', (1, 2): True}", SAME, SAME),
    Row("dataclass", "echo", f"Record('a', {WHEN})", SAME, "{'name': 'a', 'when': '2024-05-01T12:00:00'}"),
    Row("dataclass, annotated by the implementation", "describe", f"Record('a', {WHEN})", "'Record'", "'Record'"),
    Row("dict, annotated as a dataclass by the implementation", "describe", "{'name': 'a', 'when': '2024-05-01'}",
        "'dict'", "'Record'"),
    Row("int over 64 bits", "echo", "2**64", SAME, f"{BAD} `argument 'doc'`: `int`"),
    Row("custom class, nested", "echo", "{'items': [Opaque()]}", SAME,
        f"{BAD} `argument 'doc'['items'][0]`: `valueskit_types.Opaque`"),
    Row("not what the implementation's annotation says", "describe", "{'name': 'a', 'when': 'soon'}", "'dict'",
        f"{BAD} `argument 'doc'['when']`: `str`"),
]  # fmt: skip

# --- the installed distributions ---------------------------------------------------

TYPES = """\
import dataclasses
import enum
from datetime import datetime
from typing import Any

import attrs


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Record:
    name: str
    when: datetime


@attrs.frozen
class Point:
    x: int
    y: int


class Opaque:
    '''A class with no plain form: it cannot cross.'''

    def __eq__(self, other: object) -> bool:
        return type(other) is Opaque

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "Opaque()"
"""

SPEC_MODULE = """\
from datetime import datetime
from typing import Any

from pluginsdk import HookSpec, hookspec
from valueskit_types import Color, Point, Record


class ValueHooks:
    @hookspec
    def value(self, kind: str) -> Any: ...
    @hookspec
    def pair(self, kind: str) -> tuple[int, str]: ...
    @hookspec
    def numbers(self, kind: str) -> set[int]: ...
    @hookspec
    def labels(self, kind: str) -> frozenset[str]: ...
    @hookspec
    def when(self, kind: str) -> datetime: ...
    @hookspec
    def color(self, kind: str) -> Color: ...
    @hookspec
    def record(self, kind: str) -> Record: ...
    @hookspec
    def point(self, kind: str) -> Point: ...
    @hookspec
    def stats(self, kind: str) -> dict[str, int]: ...
    @hookspec
    def records(self, kind: str) -> list[Record]: ...
    @hookspec
    def echo(self, doc: Any) -> Any: ...
    @hookspec
    def describe(self, doc: Any) -> str: ...


SPEC = HookSpec("valueskit", version="1.0", hooks=ValueHooks)
"""

RESULT_HOOKS = ("value", "pair", "numbers", "labels", "when", "color", "record", "point", "stats", "records")


def plugin_source() -> str:
    """The plugin: every result hook returns the value :data:`RESULTS` names; ``describe`` annotates ``doc``."""
    values = "".join(f"    {row.kind!r}: lambda: {row.sent},\n" for row in RESULTS)
    impls = "".join(f"\n@hookimpl\ndef {hook}(kind):\n    return VALUES[kind]()\n" for hook in RESULT_HOOKS)
    return (
        "from datetime import datetime\n\nfrom pluginsdk import hookimpl\n"
        "from valueskit_types import Color, Opaque, Point, Record\n\n"
        f"VALUES = {{\n{values}}}\n{impls}\n"
        "@hookimpl\ndef echo(doc):\n    return doc\n\n"
        "@hookimpl\ndef describe(doc: Record) -> str:\n    return type(doc).__name__\n"
    )


@pytest.fixture(scope="module")
def values_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The types, the spec and the plugin, installed; on ``sys.path`` for the module."""
    root = tmp_path_factory.mktemp("values-site")
    install_library(root, "valueskit-types", "valueskit_types", TYPES)
    (root / "valueskit_spec.py").write_text(SPEC_MODULE)
    hooks = ", ".join(f'"{h}"' for h in (*RESULT_HOOKS, "echo", "describe"))
    install_plugin(
        root, PLUGIN, plugin_source(), module="valueskit_values", dist="valueskit-values", group="valueskit.plugins",
        manifest=f'[plugin]\nrequires = "valueskit>=1.0,<2"\nisolation = "inprocess"\nhooks = [{hooks}]\n',
    )  # fmt: skip
    add_requires(root, "valueskit-values", "1.0", ["valueskit-types"])
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        for name in ("valueskit_types", "valueskit_spec", "valueskit_values"):
            sys.modules.pop(name, None)


def _wasm() -> Any:
    why = wasm_unavailable()
    return pytest.param("wasm", marks=[pytest.mark.wasm, pytest.mark.skipif(why is not None, reason=str(why))])


LEVELS = [pytest.param("inprocess", id="inprocess"), pytest.param("checked", id="inprocess-check_values"),
          "process", _wasm()]  # fmt: skip


@pytest.fixture(scope="module", params=LEVELS)
def level_host(request: pytest.FixtureRequest, values_site: Path) -> Iterator[tuple[str, Host]]:
    """One host per level: ``checked`` is in-process with ``check_values=True``."""
    level = request.param
    spec = importlib.import_module("valueskit_spec").SPEC
    isolation = "inprocess" if level == "checked" else level
    with Host(spec, path=[str(values_site)], force_isolation=isolation, check_values=level == "checked") as host:
        info = host.load(PLUGIN)
        assert ("loaded", "") == (info.status, info.reason)
        yield level, host


def namespace() -> dict[str, Any]:
    types = importlib.import_module("valueskit_types")
    return {"datetime": datetime, **{n: getattr(types, n) for n in ("Color", "Record", "Point", "Opaque")}}


def strictly_equal(a: Any, b: Any) -> bool:
    """Equal with the same types throughout (``True`` is not ``1``, a tuple is not a list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(strictly_equal, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(strictly_equal(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def expectation(row: Row, level: str) -> str:
    text = row.inprocess if level == "inprocess" else row.crossed
    return row.sent if text == SAME else text


def check(level: str, host: Host, row: Row, call: dict[str, Any]) -> None:
    """``row.hook`` called with ``call`` at ``level`` gives what ``row`` says (one plugin: one result)."""
    expected = expectation(row, level)
    (result,) = getattr(host.hook, row.hook).results(**call)
    if expected.startswith(BAD):
        match = re.fullmatch(r"CodecError at `(.+)`: `(.+)`", expected)
        assert match is not None, expected
        location, culprit = match.groups()
        error = result.error
        assert isinstance(error, CodecError), (result.value, error)
        assert (PLUGIN, row.hook) == (error.plugin, error.hook)
        where = "return value" if error.argument == "return value" else f"argument {error.argument!r}"
        assert location == where + error.path
        text = str(error)
        assert text.startswith(f"plugin {PLUGIN!r}: hook {row.hook!r}, {location}: "), text
        assert culprit in text
        assert ALLOWED in text or "as annotated" in text, text
        return
    assert result.error is None, result.error
    want = eval(expected, namespace())  # the table's own source text
    assert strictly_equal(want, result.value), (want, result.value)


@pytest.mark.parametrize("row", RESULTS, ids=[r.kind for r in RESULTS])
def test_results(level_host: tuple[str, Host], row: Row) -> None:
    """The plugin returns each kind of value; each level gives what the table says."""
    level, host = level_host
    check(level, host, row, {"kind": row.kind})


@pytest.mark.parametrize("row", ARGUMENTS, ids=[r.kind for r in ARGUMENTS])
def test_arguments(level_host: tuple[str, Host], row: Row) -> None:
    """The host passes each kind of argument; each level gives what the table says."""
    level, host = level_host
    check(level, host, row, {"doc": eval(row.sent, namespace())})


def test_a_batch_names_the_item(level_host: tuple[str, Host]) -> None:
    """In a batch, the item whose result cannot cross is named with the path inside it."""
    level, host = level_host
    items = [{"kind": "list"}, {"kind": "custom class, nested"}]
    (result,) = host.hook.value.map_results(items)
    if level == "inprocess":
        assert result.error is None
        return
    assert isinstance(result.error, CodecError)
    assert (1, "return value", "[2]['when']") == (result.error.index, result.error.argument, result.error.path)
    assert "(batch item 1)" in str(result.error)


def test_a_plugin_error_keeps_its_kind(level_host: tuple[str, Host]) -> None:
    """An implementation that raises is a PluginHookError at every level, check_values or not."""
    _level, host = level_host
    with pytest.raises(PluginHookError) as info:
        host.hook.value(kind="no such kind")
    assert (PLUGIN, "value", "KeyError") == (info.value.plugin, info.value.hook, info.value.exc_type)


# --- the documentation shows these tables --------------------------------------------


def markdown(rows: list[Row], sent: str) -> str:
    """``rows`` as docs/values.md shows them."""

    def cell(text: str) -> str:
        if text.startswith(BAD):
            return text.replace(BAD, "`CodecError` at", 1)
        return f"`{text}`".replace("|", "\\|")

    head = f"| kind | hook | {sent} | `inprocess` | `process`, `wasm`, `check_values=True` |\n"
    head += "|---|---|---|---|---|\n"
    return head + "".join(
        f"| {r.kind} | `{r.hook}` | {cell(r.sent)} | {'the same' if r.inprocess == SAME else cell(r.inprocess)} | "
        f"{'the same' if r.crossed == SAME else cell(r.crossed)} |\n"
        for r in rows
    )


@pytest.mark.parametrize(
    ("name", "rows", "sent"), [("results", RESULTS, "returned"), ("arguments", ARGUMENTS, "passed")]
)
def test_the_docs_show_the_tested_tables(name: str, rows: list[Row], sent: str) -> None:
    """docs/values.md holds these very tables, between markers (regenerate with :func:`markdown`)."""
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {name} table: tests/test_values.py -->\n(.*?)<!-- end -->", text, re.S)
    assert match is not None, f"docs/values.md has no {name} table"
    assert markdown(rows, sent) == match.group(1)


def test_the_docs_name_the_annotations() -> None:
    """The hook names in the tables are explained: each one's annotation is listed on the page."""
    text = DOCS.read_text(encoding="utf-8")
    for line in SPEC_MODULE.splitlines():
        found = re.match(r"    def (\w+)\(self, (\w+): (.+)\) -> (.+): \.\.\.", line)
        if found:
            hook, arg, arg_tp, returns = found.groups()
            assert f"`{hook}({arg}: {arg_tp}) -> {returns}`" in text


def test_the_happy_path_never_walks_a_value() -> None:
    """Values that cross cost what they did: the contract's walk (``pluginsdk._values``) is never imported."""
    code = (
        "import sys, dataclasses\n"
        "from pluginsdk import codec\n"
        "@dataclasses.dataclass\nclass R:\n    x: int\n"
        "value = codec.decode(codec.encode([{'a': 1}, (2, 3), {4}, R(5), None, b'x', 2.5]))\n"
        "assert codec.structure(value[3], R) == R(5) and codec.structure(value[2], set[int]) == {4}\n"
        "print('pluginsdk._values' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "False" == result.stdout.strip()


# --- the pytest kit checks values in-process ------------------------------------------

KIT_SPEC = """
from typing import Any
from pluginsdk import HookSpec, hookspec

class TagHooks:
    @hookspec
    def tags(self, text: str) -> Any: ...

SPEC = HookSpec("kitvalues", version="1.0", hooks=TagHooks)
"""
KIT_PYPROJECT = """
[project]
name = "kitvalues-tagger"
version = "1.0"

[project.entry-points."kitvalues.plugins"]
tagger = "kitvalues_tagger"

[tool.pluginsdk]
spec = "kitvalues_spec:SPEC"

[tool.pytest.ini_options]
pluginsdk_isolation = ["inprocess", "process"]
{ini}
"""
KIT_TESTS = """
def test_tags(plugin_host):
    assert [["a"]] == plugin_host.hook.tags(text="a")   # a set crosses as a list

def test_own_host(host_factory):
    host = host_factory("inprocess", check_values=False)
    assert [{"a"}] == host.hook.tags(text="a")          # the very object
"""


@pytest.mark.parametrize("ini", ["", "pluginsdk_check_values = false"])
def test_the_kit_checks_values_in_process(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ini: str
) -> None:
    """The kit's in-process hosts give what a worker gives (a set as a list), unless told not to."""
    monkeypatch.setenv("PLUGINSDK_CACHE_DIR", str(tmp_path / "cache"))
    site = tmp_path / "site"
    install_plugin(
        site, "tagger", "from pluginsdk import hookimpl\n@hookimpl\ndef tags(text):\n    return {text}\n",
        module="kitvalues_tagger", dist="kitvalues-tagger", group="kitvalues.plugins",
        manifest='[plugin]\nrequires = "kitvalues>=1,<2"\nisolation = "inprocess"\nhooks = ["tags"]\n',
    )  # fmt: skip
    monkeypatch.setenv("PYTHONPATH", str(site))
    pytester.makepyfile(kitvalues_spec=KIT_SPEC, test_tags=KIT_TESTS)
    pytester.makefile(".toml", pyproject=KIT_PYPROJECT.format(ini=ini))
    kit = (
        []
        if any(ep.value == "pluginsdk.testing" for ep in entry_points(group="pytest11"))
        else ["-p", "pluginsdk.testing"]
    )
    result = pytester.runpytest_subprocess(*kit, "-p", "no:cacheprovider")
    if ini:  # in-process, the very set: the [inprocess] run fails where the [process] run passes
        result.assert_outcomes(passed=2, failed=1, skipped=1)
        result.stdout.fnmatch_lines(["*test_tags?inprocess?*"])
    else:
        result.assert_outcomes(passed=3, skipped=1)  # wasm: not in pluginsdk_isolation
