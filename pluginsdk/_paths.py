"""Where the SDK keeps its files: one function, shared by the discovery index and the sandbox cache.

Standard library only, and cheap: the discovery index asks on every warm start.
"""

from __future__ import annotations

import os
import sys

__all__ = ["cache_dir"]


def cache_dir() -> str:
    """The SDK's cache directory (``PLUGINSDK_CACHE_DIR`` overrides it).

    On Linux this applies the XDG rule directly, which is what platformdirs
    would answer, without its import cost on the start-up path.
    """
    override = os.environ.get("PLUGINSDK_CACHE_DIR")
    if override:
        return override
    if sys.platform == "linux":
        base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.expanduser("~/.cache")
        return os.path.join(base, "pluginsdk")
    import platformdirs  # type: ignore[unreachable,unused-ignore]

    return platformdirs.user_cache_dir("pluginsdk", appauthor=False)
