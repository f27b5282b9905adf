"""Jinja filters that quote user input safely for the files the template writes.

Loaded by cookiecutter through ``_extensions`` in ``cookiecutter.json`` (the
template directory is on ``sys.path`` while it renders, hooks included).
"""

from __future__ import annotations

from jinja2 import Environment
from jinja2.ext import Extension

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


class TemplateFilters(Extension):
    """Registers :func:`toml_str`, :func:`py_str` and :func:`md_line`."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["toml_str"] = toml_str
        environment.filters["py_str"] = py_str
        environment.filters["md_line"] = md_line
