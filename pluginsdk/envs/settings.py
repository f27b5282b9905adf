"""The host's word on private environments: ``[policy.environments]``.

Kept import-free beyond the standard library: :class:`~pluginsdk.Policy`
imports it on every host start.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._table import checked_table

__all__ = ["DEFAULT_BUILD_TIMEOUT", "EnvironmentSettings"]

#: Seconds an environment build may take (both the resolver and waiting for another process's build).
DEFAULT_BUILD_TIMEOUT = 600.0


class EnvironmentSettings(NamedTuple):
    """How (and whether) the host makes private environments for plugins that declare ``[environment]``.

    Index settings left unset come from the installer's own configuration
    (``uv.toml``, ``pip.conf``, ``UV_*``/``PIP_*`` variables).

    Attributes:
        allowed: Whether plugins may have private environments at all; if not,
            such plugins are ``unavailable``.
        index_url: The package index (``--index-url``).
        extra_index_urls: More indexes (``--extra-index-url``).
        find_links: Directories or pages of distributions (``--find-links``).
        no_index: Use no index at all (``--no-index``): ``find_links`` only.
        timeout: Seconds a build may take, and another process's build be waited for.
        allow_builds: Whether a dependency may be built from source (an sdist's build
            runs its code on the host, outside any worker's limits); by default only
            wheels are installed (``--only-binary :all:``).
    """

    allowed: bool = True
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    timeout: float = DEFAULT_BUILD_TIMEOUT
    allow_builds: bool = False

    @classmethod
    def checked(cls, value: object, *, where: str = "policy.environments") -> EnvironmentSettings:
        """Settings from an instance or a mapping of the same keys, every problem reported at once."""
        return checked_table(cls, value, where, _check)

    def installer_args(self) -> list[str]:
        """The index options, as both ``uv pip install`` and ``pip install`` spell them."""
        args = [] if self.allow_builds else ["--only-binary", ":all:"]
        if self.no_index:
            args.append("--no-index")
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        return args


def _check(key: str, value: object) -> tuple[str | None, Any]:
    """``(problem or None, value normalised)`` for one setting."""
    if key in ("allowed", "no_index", "allow_builds"):
        return (None, value) if isinstance(value, bool) else (f"expected true or false, got {value!r}", value)
    if key == "index_url":
        ok = value is None or (isinstance(value, str) and value.strip() != "")
        return (None, value) if ok else (f"expected a URL, got {value!r}", value)
    if key in ("extra_index_urls", "find_links"):
        items = list(value) if isinstance(value, (list, tuple)) else None
        if items is None or not all(isinstance(v, str) and v.strip() for v in items):
            return f"expected a list of strings, got {value!r}", value
        return None, tuple(items)
    # timeout
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return f"{value!r} is not allowed; expected a finite number > 0", value
    return None, float(value)
