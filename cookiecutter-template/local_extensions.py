"""Jinja filters that quote user input safely for the files the template writes.

Loaded by cookiecutter through ``_extensions`` in ``cookiecutter.json`` (the
template directory is on ``sys.path`` while it renders, hooks included, and
while it prompts, so the defaults can use :func:`default_requirement`).
"""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

from jinja2 import Environment
from jinja2.ext import Extension

# Distribution names: the plain names "pluginsdk" and "leakscan" on PyPI are other people's projects.
SDK_DIST = "pluginsdk-isolated"
HOST_DIST = "pluginsdk-leakscan"
# Longest project_slug the pre-gen hook accepts; the project directory is cut to it, so that
# a longer answer reaches the hook (and its message) instead of failing to create the directory.
MAX_SLUG = 100

_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_str(value: object) -> str:
    """``value`` as a TOML basic string, quotes included.

    Written by hand rather than with ``json.dumps``: JSON escapes characters
    outside the BMP as surrogate pairs, which TOML rejects.  Non-ASCII text is
    kept as is (TOML files are UTF-8); other control characters are escaped.
    """
    out = []
    for ch in str(value):
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def py_str(value: object) -> str:
    """``value`` as a double-quoted Python string literal (the style formatters use)."""
    out = []
    for ch in str(value):
        if ch in "\\\"":
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:  # newlines, control and format characters: repr's escape for each
            out.append(repr(ch)[1:-1])
    return '"' + "".join(out) + '"'


def md_line(value: object) -> str:
    """``value`` on one line, for Markdown headings and paragraphs."""
    return " ".join(str(value).split())


def sh_arg(value: object) -> str:
    """``value`` as one shell word, for the commands the README and the post-gen message show."""
    return shlex.quote(str(value))


def dir_name(value: object) -> str:
    """The project directory's name: ``value``, cut to :data:`MAX_SLUG` characters (see there)."""
    return str(value)[:MAX_SLUG]


def sdk_checkout() -> Path | None:
    """The pluginsdk checkout holding this template, if it is in one (its pyproject names the SDK)."""
    root = Path(__file__).resolve().parent.parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if re.search(rf'^name\s*=\s*"{SDK_DIST}"', text, re.M) else None


def default_requirement(kind: str, spec_name: str = "", host_dist: str = "") -> str:
    """Where a baked project gets the SDK (``kind="sdk"``) or the host from, for its tests.

    A local checkout when the template sits in one (nothing is fetched by name); else the
    distribution name, which must be on an index where its owners publish it.
    """
    checkout = sdk_checkout()
    if kind == "sdk":
        return f"{checkout}[wasm]" if checkout else f"{SDK_DIST}[wasm]"
    if spec_name == "leakscan" and host_dist == HOST_DIST and checkout:
        return str(checkout / "reference-plugins" / "leakscan")
    return host_dist


class _NoTracebackForHookFailures(logging.Filter):
    """Drop the traceback cookiecutter logs when a hook fails: the pre-gen hook has already said what is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if type(exc).__name__ == "FailedHookException":
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_hook_failures() -> None:
    hooks_logger = logging.getLogger("cookiecutter.hooks")
    # By name: this module may be loaded more than once in a process, each time with its own class.
    if not any(type(f).__name__ == "_NoTracebackForHookFailures" for f in hooks_logger.filters):
        hooks_logger.addFilter(_NoTracebackForHookFailures())


class TemplateFilters(Extension):
    """Registers the filters above and :func:`default_requirement` for ``cookiecutter.json``."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["toml_str"] = toml_str
        environment.filters["py_str"] = py_str
        environment.filters["md_line"] = md_line
        environment.filters["sh_arg"] = sh_arg
        environment.filters["dir_name"] = dir_name
        environment.globals["default_requirement"] = default_requirement
        _quiet_hook_failures()
