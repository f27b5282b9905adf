"""A spec whose hooks take keyword-only arguments (so that type checkers refuse positional calls).

pluggy ignores keyword-only parameters of a spec; the SDK hands pluggy a stand-in with them
positional, so they are real arguments at every level.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pluginsdk import HookCallError, HookSpec, Host, hookspec

from .plugin_factory import install_plugin


class KwHooks:
    @hookspec
    def transform(self, text: str, *, times: int, sep: str = "") -> str:
        raise NotImplementedError

    @hookspec(firstresult=True)
    def pick(self, *, items: list[str], default: str | None = None) -> str | None:
        raise NotImplementedError


SPEC = HookSpec("textkit", version="1.0", hooks=KwHooks)

PLUGIN = """
from pluginsdk import hookimpl

@hookimpl
def transform(text, times, sep):
    return sep.join([text] * times)

@hookimpl
def pick(items, default):
    return items[0] if items else default
"""


def test_keyword_only_arguments_are_the_hooks_arguments() -> None:
    """Keyword-only parameters count, in declared order; ``self`` does not."""
    assert ("text", "times", "sep") == SPEC.hook_defs["transform"].argnames
    assert ("items", "default") == SPEC.hook_defs["pick"].argnames
    params, ret = SPEC.types("transform")
    assert ({"text": str, "times": int, "sep": str}, str) == (params, ret)


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
def test_calls_defaults_map_and_errors(site: Path, isolation: str) -> None:
    """Defaults of keyword-only parameters apply; wrong arguments name the spec's, keyword-only ones too."""
    install_plugin(site, "kw", PLUGIN, isolation=isolation, hooks=("transform", "pick"))
    with Host(SPEC, path=[str(site)]) as host:
        (info,) = host.plugins()
        assert "available" == info.status, info.reason
        assert ["ab"] == host.hook.transform(text="ab", times=1)
        assert ["x-x-x"] == host.hook.transform(text="x", times=3, sep="-")
        assert "a" == host.hook.pick(items=["a", "b"])
        assert "z" == host.hook.pick(items=[], default="z")
        items = [{"text": "y", "times": 2}, {"text": "q", "times": 2, "sep": "."}]
        assert [["yy"], ["q.q"]] == host.hook.transform.map(items)
        assert ["y-y"] == asyncio.run(host.ahook.transform(text="y", times=2, sep="-"))
        with pytest.raises(HookCallError, match="times") as missing:
            host.hook.transform(text="ab")
        assert ("times",) == missing.value.missing
        with pytest.raises(HookCallError) as unexpected:
            host.hook.transform(text="ab", times=1, extra=2)
        assert ("extra",) == unexpected.value.unexpected
        with pytest.raises(TypeError):
            host.hook.transform("ab", times=1)  # type: ignore[misc]  # pluggy's rule: keywords only


def test_positional_specs_unchanged() -> None:
    """A spec without keyword-only parameters gives pluggy its own functions, as before."""

    class Plain:
        @hookspec
        def transform(self, text: str) -> str:
            raise NotImplementedError

    spec = HookSpec("plainkit", version="1.0", hooks=Plain)
    assert spec.namespace().transform is Plain.transform
