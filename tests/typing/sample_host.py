"""A typed host, as a host author writes one: checked, never run, by mypy --strict and pyright (strict).

``tests/test_typing_surface.py`` runs both checkers on this file and compares what they report with the
expectations written here, line by line:

- ``# R: TYPE``: the line's ``reveal_type`` must show TYPE in both checkers (module prefixes dropped);
- ``# E: MYPY-CODES / PYRIGHT-RULES``: each checker must report exactly these errors on the line (comma
  separated, by error code and rule); no other line may have an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pluginsdk import HookSpec, Host, PluginResult, hookspec

if TYPE_CHECKING:
    from typing_extensions import reveal_type


class TextHooks:
    """The README's spec, and one hook of each other kind."""

    @hookspec
    def transform(self, text: str) -> str: ...  # E: empty-body / -

    # mypy's empty-body check (above) is for any method, not this SDK's: a body that raises avoids it.

    @hookspec(firstresult=True, since="1.1")
    def detect_language(self, text: str) -> str | None:
        """A body that is only a docstring is fine too."""

    @hookspec()
    def count(self, text: str, limit: int = 10) -> int:
        raise NotImplementedError

    @hookspec(historic=True)
    def configure(self, settings: dict[str, str]) -> None: ...

    @hookspec(firstresult=False, historic=False)
    def tokens(self, text: str) -> Iterator[str]:
        """A stream from an isolated plugin."""
        raise NotImplementedError


class OtherHooks:
    @hookspec(firstresult=True)
    def describe(self) -> str | None: ...

    @hookspec
    def label(self, *, text: str, width: int = 10) -> str:
        """Keyword-only arguments: a positional call is an error for checkers too."""
        raise NotImplementedError


SPEC = HookSpec("textkit", version="1.1", hooks=TextHooks)
OTHER = HookSpec("otherkit", version="1.0", hooks=OtherHooks)
reveal_type(SPEC)  # R: HookSpec[TextHooks]
reveal_type(SPEC.hooks)  # R: type[TextHooks]
reveal_type(Host(SPEC))  # R: Host[TextHooks]
with Host(OTHER) as other:
    reveal_type(other)  # R: Host[OtherHooks]
    reveal_type(other.hook.describe())  # R: str | None
    reveal_type(other.hook.describe.by_plugin())  # R: dict[str, str | None]
    reveal_type(other.hook.label(text="x", width=3))  # R: list[str]
    other.hook.label("x")  # E: call-arg / reportCallIssue


def sync_calls(host: Host[TextHooks], pool: ThreadPoolExecutor) -> None:
    reveal_type(host.hook.transform(text="x"))  # R: list[str]
    reveal_type(host.hook.detect_language(text="x"))  # R: str | None
    reveal_type(host.hook.count(text="x"))  # R: list[int]
    reveal_type(host.hook.count(text="x", limit=3))  # R: list[int]
    reveal_type(host.hook.tokens(text="x"))  # R: list[Iterator[str]]
    reveal_type(host.hook.transform.map([{"text": "a"}, {"text": "b"}]))  # R: list[list[str]]
    reveal_type(host.hook.detect_language.map([{"text": "a"}]))  # R: list[str | None]
    reveal_type(host.hook.transform.by_plugin(text="x"))  # R: dict[str, str]
    reveal_type(host.hook.transform.results(text="x"))  # R: list[PluginResult]
    reveal_type(host.hook.transform.results(pool, text="x"))  # R: list[PluginResult]
    reveal_type(host.hook.transform.map_results([{"text": "a"}], pool))  # R: list[PluginResult]
    reveal_type(host.hook.configure.call_historic(kwargs={"settings": {}}))  # R: None
    host.hook.configure.call_historic(print, {"settings": {}})
    first: PluginResult = host.hook.transform.results(text="x")[0]
    assert first.ok

    host.hook.transfrom(text="x")  # E: attr-defined / reportAttributeAccessIssue, reportUnknownMemberType
    host.hook.transform(txt="x")  # E: call-arg / reportCallIssue
    host.hook.transform()  # E: call-arg / reportCallIssue
    host.hook.transform(text="x", extra=1)  # E: call-arg / reportCallIssue
    host.hook.transform(text=1)  # E: arg-type / reportArgumentType
    host.hook.count(text="x", limit="3")  # E: arg-type / reportArgumentType
    host.hook.transform.by_plugin(txt="x")  # E: call-arg / reportCallIssue
    host.hook.transform.results(pool, txt="x")  # E: call-arg / reportCallIssue
    host.hook.detect_language(text="x").upper()  # E: union-attr / reportOptionalMemberAccess
    wrong: list[int] = host.hook.transform(text="x")  # E: assignment / reportAssignmentType
    print(wrong)
    host.hook.configure(settings={})  # E: operator / reportCallIssue
    host.hook.transform.call_historic()  # E: attr-defined / reportAttributeAccessIssue, reportUnknownMemberType


async def async_calls(host: Host[TextHooks]) -> None:
    reveal_type(await host.ahook.transform(text="x"))  # R: list[str]
    reveal_type(await host.ahook.detect_language(text="x"))  # R: str | None
    reveal_type(await host.ahook.transform.map([{"text": "a"}]))  # R: list[list[str]]
    reveal_type(await host.ahook.detect_language.map([{"text": "a"}]))  # R: list[str | None]
    reveal_type(await host.ahook.transform.by_plugin(text="x"))  # R: dict[str, str]
    reveal_type(await host.ahook.transform.results(text="x"))  # R: list[PluginResult]
    reveal_type(await host.ahook.transform.map_results([{"text": "a"}]))  # R: list[PluginResult]
    task = asyncio.create_task(host.ahook.transform(text="x"))
    reveal_type(await task)  # R: list[str]
    both = await asyncio.gather(host.ahook.transform(text="x"), host.ahook.detect_language(text="y"))
    reveal_type(both)  # R: tuple[list[str], str | None]

    await host.ahook.transfrom(text="x")  # E: attr-defined / reportAttributeAccessIssue, reportUnknownMemberType
    await host.ahook.transform(txt="x")  # E: call-arg / reportCallIssue
    await host.ahook.transform.results(None, text="x")  # E: misc, arg-type / reportCallIssue
    await host.ahook.configure(settings={})  # E: operator / reportCallIssue
    host.ahook.transform(text="x")  # E: unused-coroutine / reportUnusedCoroutine


def wrong_host(host: Host[TextHooks]) -> None:
    sync_calls(Host(OTHER), ThreadPoolExecutor())  # E: arg-type / reportArgumentType
    host.hook.describe()  # E: attr-defined / reportAttributeAccessIssue, reportUnknownMemberType


def untyped(spec: HookSpec[Any], hooks: type[Any], bare: Host) -> None:
    """A spec without a (typed) hooks class: every call is Any, and nothing is an error."""
    reveal_type(Host(spec))  # R: Host[Any]
    reveal_type(Host(HookSpec("anykit", "1.0", hooks=hooks)).hook.anything(x=1))  # R: Any
    reveal_type(bare)  # R: Host[Any]
    reveal_type(bare.hook.transfrom(txt=1))  # R: Any
    reveal_type(bare.hook.transform.map([]))  # R: Any


class BadHooks:
    """Options of the wrong type: no overload of hookspec matches, and the hook is left untyped."""

    @hookspec(firstresult="yes")  # E: call-overload, untyped-decorator / reportCallIssue, reportArgumentType, reportUntypedFunctionDecorator  # noqa: E501
    def one(self, text: str) -> str:
        raise NotImplementedError

    @hookspec(since=1.1)  # E: call-overload, untyped-decorator / reportCallIssue, reportArgumentType, reportUntypedFunctionDecorator  # noqa: E501
    def two(self, text: str) -> str:
        raise NotImplementedError
