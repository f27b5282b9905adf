"""Progress for long work on the command line: a live line on a terminal, one log line otherwise.

On a terminal (stderr is a TTY) the current step and the seconds spent are
redrawn in place every tenth of a second and erased when the work ends;
anywhere else (a log file, CI) each step is one plain line, so logs stay
readable.  Either way the final word is the caller's, on stdout.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TextIO

__all__ = ["Progress"]

_FRAMES = "|/-\\"


class Progress:
    """``with Progress("building the wheel") as p: ...; p.step("checking it")``.

    Nothing is shown for work that ends within ``delay`` seconds (a cache
    hit stays quiet); past it, a terminal gets a live line, anything else
    one line per step.
    """

    def __init__(
        self, message: str, *, stream: TextIO | None = None, interval: float = 0.1, delay: float = 0.5
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._message = message
        self._interval = interval
        self._delay = delay
        self._live = _is_tty(self._stream)
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._drawn = False
        self.started = self._step_started = time.monotonic()

    @property
    def elapsed(self) -> float:
        """Seconds since the work began."""
        return time.monotonic() - self.started

    def __enter__(self) -> Progress:
        self.started = self._step_started = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="pluginsdk-progress", daemon=True)
        self._thread.start()
        return self

    def step(self, message: str) -> None:
        """Say that the work moved on to ``message``."""
        with self._lock:
            if message != self._message:
                self._message = message
                self._step_started = time.monotonic()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        if self._drawn:
            self._write("\r\x1b[2K")  # erase the live line: the caller prints the outcome

    def _watch(self) -> None:
        frame = 0
        logged = None
        while not self._done.wait(self._interval):
            with self._lock:
                message, since = self._message, self._step_started
            if time.monotonic() - since < self._delay and not self._drawn:
                continue
            if self._live:
                self._write(f"\r\x1b[2K{_FRAMES[frame % len(_FRAMES)]} {message}... {self.elapsed:.1f} s")
                self._drawn = True
                frame += 1
            elif message != logged and time.monotonic() - since >= self._delay:
                self._write(f"pluginsdk: {message}...\n")
                logged = message

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed stderr: progress is not worth failing for
            pass


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
