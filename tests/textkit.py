"""The spec the SDK's own tests host: the README's example."""

from __future__ import annotations

from pluginsdk import HookSpec, hookspec


class TextHooks:
    @hookspec
    def transform(self, text: str) -> str:  # type: ignore[empty-body]
        """Return a transformed copy of ``text``."""

    @hookspec(firstresult=True, since="1.1")
    def detect_language(self, text: str) -> str | None:
        """Guess the language of ``text``; the first answer wins."""

    @hookspec(since="2.0")
    def summarize(self, text: str, words: int) -> str:  # type: ignore[empty-body]
        """A hook of a future spec version (2.0)."""


SPEC = HookSpec("textkit", version="1.1", hooks=TextHooks)
SPEC_1_0 = HookSpec("textkit", version="1.0", hooks=TextHooks)
