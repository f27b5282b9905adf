"""Unit tests for batching input and for the progress bar."""

from __future__ import annotations

import io

from leakscan.progress import Progress
from leakscan.scanner import batches


class TestBatches:
    def test_groups_lines_and_keeps_originals(self) -> None:
        """Lines are grouped by size, numbered from 1, stripped for plugins and kept whole for redaction."""
        got = list(batches(io.StringIO("a\nb\r\nc"), size=2))
        assert [(1, ["a", "b"], ["a\n", "b\r\n"], 5), (3, ["c"], ["c"], 6)] == got

    def test_empty_input_has_no_batches(self) -> None:
        """Nothing to scan, nothing to call."""
        assert [] == list(batches(io.StringIO(""), size=10))


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestProgress:
    def test_non_tty_prints_plain_lines_per_tenth(self) -> None:
        """Off a terminal, progress is one plain line per 10%, no carriage returns."""
        out = io.StringIO()
        bar = Progress(100, stream=out, label="f")
        for done in range(0, 101, 5):
            bar.update(done, done)
        bar.finish(100, 100)
        text = out.getvalue()
        assert (11, "\r" in text) == (text.count("\n"), False)

    def test_tty_redraws_in_place(self) -> None:
        """On a terminal, the bar is redrawn on one line and ends with a newline."""
        out = _Tty()
        bar = Progress(100, stream=out, label="f")
        bar.update(50, 50)
        bar.finish(100, 100)
        last = out.getvalue().rsplit("\r", 1)[-1]
        assert (True, 1) == (last.startswith("f [##############################] 100%"), out.getvalue().count("\n"))

    def test_unknown_total_counts_lines(self) -> None:
        """Without a total (stdin), the line count is shown instead of a bar."""
        out = io.StringIO()
        bar = Progress(None, stream=out, label="<stdin>")
        bar.update(0, 10)
        bar.finish(0, 10)
        assert out.getvalue().startswith("<stdin> 10 lines")
