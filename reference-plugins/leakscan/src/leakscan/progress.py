"""A small progress bar on stderr, written by hand to keep the host free of dependencies.

On a terminal it redraws one line in place; elsewhere (CI logs, files) it
prints a plain line every 10% so the log shows progress without control
characters.  Without a known total (stdin) it counts lines instead.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30


class Progress:
    """Reports how much of the input has been scanned.

    Args:
        total: Total size in bytes, or ``None`` when unknown.
        stream: Where to draw (default ``sys.stderr``).
        label: Shown before the bar.
    """

    def __init__(self, total: int | None, *, stream: TextIO | None = None, label: str = "scanning") -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1
        self._drawn = False

    def update(self, done: int, lines: int) -> None:
        """Record that ``done`` bytes (``lines`` lines) have been scanned."""
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw >= 0.1:  # at most 10 redraws a second
                self._last_draw = now
                self.stream.write("\r" + self._render(done, lines, now))
                self.stream.flush()
                self._drawn = True
            return
        decile = (done * 10 // self.total) if self.total else lines // 100_000
        if decile > self._last_decile:
            self._last_decile = decile
            self.stream.write(self._render(done, lines, now) + "\n")
            self.stream.flush()

    def finish(self, done: int, lines: int) -> None:
        """Draw the final state and end the line."""
        text = self._render(done, lines, time.monotonic())
        if self.tty:
            self.stream.write("\r" + text + "\n")
        elif self._last_decile < (10 if self.total else lines // 100_000):
            self.stream.write(text + "\n")
        self.stream.flush()

    def _render(self, done: int, lines: int, now: float) -> str:
        elapsed = now - self._start
        rate = lines / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = min(1.0, done / self.total)
            filled = int(frac * _WIDTH)
            bar = "#" * filled + "-" * (_WIDTH - filled)
            return f"{self.label} [{bar}] {frac:4.0%} {lines:,} lines {rate:,.0f} lines/s"
        return f"{self.label} {lines:,} lines {rate:,.0f} lines/s"
