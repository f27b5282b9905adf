"""Tests for pluginsdk.spec: versioned hook specifications."""

from __future__ import annotations

import pytest

from pluginsdk import HookSpec, SpecError, hookspec
from pluginsdk.spec import parse_release

from .textkit import SPEC, SPEC_1_0, TextHooks


class TestParseRelease:
    def test_trailing_zeros_compare_equal(self) -> None:
        """1.0 and 1 are the same release."""
        assert parse_release("1.0") == parse_release("1")

    def test_numeric_ordering(self) -> None:
        """1.10 comes after 1.9, as numbers do."""
        assert parse_release("1.10") > parse_release("1.9")

    @pytest.mark.parametrize("bad", ["1.0rc1", "v1", "", "1..2", "1.x"])
    def test_rejects_non_release(self, bad: str) -> None:
        """Anything but dotted numbers is refused with a SpecError."""
        with pytest.raises(SpecError, match="release number"):
            parse_release(bad)


class TestHookSpec:
    def test_default_group(self) -> None:
        """The entry-point group defaults to NAME.plugins."""
        assert "textkit.plugins" == SPEC.group

    def test_hooks_of_this_version(self) -> None:
        """A hook whose ``since`` is newer than the spec version is left out."""
        assert ["detect_language", "transform"] == sorted(SPEC.hook_defs)
        assert ["transform"] == sorted(SPEC_1_0.hook_defs)

    def test_future_hook_is_known(self) -> None:
        """Hooks from a later version are known as such, with their version."""
        future = SPEC.future_hook("summarize")
        assert future is not None
        assert "2.0" == future.since
        assert SPEC.future_hook("transform") is None

    def test_argnames_and_options(self) -> None:
        """Argument names exclude self; firstresult is carried."""
        d = SPEC.hook_defs["detect_language"]
        assert (("text",), True) == (d.argnames, d.firstresult)

    def test_types_are_resolved(self) -> None:
        """Annotations resolve to real types for boundary codecs."""
        params, ret = SPEC.types("transform")
        assert ({"text": str}, str) == (params, ret)

    def test_no_hooks_is_an_error(self) -> None:
        """A spec class without marked hooks is refused."""

        class Empty:
            def nothing(self) -> None: ...

        with pytest.raises(SpecError, match="no hooks"):
            HookSpec("empty", version="1", hooks=Empty)

    def test_bad_since(self) -> None:
        """``since`` must be a release number too."""
        with pytest.raises(SpecError):
            hookspec(since="soon")

    def test_bad_name(self) -> None:
        """Spec names follow project-name rules."""
        with pytest.raises(SpecError, match="not a valid project name"):
            HookSpec("no spaces", version="1", hooks=TextHooks)
