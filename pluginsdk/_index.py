"""The on-disk discovery index.

Reading distribution metadata is the expensive part of start-up, so the
result of a scan is stored as JSON in the user cache directory and reused
while nothing it depends on has changed.  It is keyed on the spec (name,
version, hooks), the interpreter and the search path, and stamped with the
modification time of every search-path directory (installing or removing a
distribution adds or removes a ``.dist-info`` entry there, which changes the
directory's mtime) and of every manifest read.

Kept cheap on purpose: this module runs on every warm start, so it imports
neither ``importlib.metadata`` nor ``platformdirs`` nor ``hashlib``, and the
file is ``marshal`` data, which loads with no import at all.  That is the
trust model of Python's own ``__pycache__`` (the user's cache, written by
this code for this interpreter); a CRC of the payload makes a truncated or
garbled file a rescan rather than a surprise.
"""

from __future__ import annotations

import marshal
import os
import sys
import time
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._paths import cache_dir as cache_dir  # re-exported: _wasm.interpreter still imports it from here

if TYPE_CHECKING:
    from .spec import HookSpec

_FORMAT = 4  # 3: duplicate plugin names are stored as found, settled after loading; 4: Candidate.environment
# Directory mtimes have coarse granularity (a clock tick): a change in the same
# tick as the scan would go unseen, so stamps that recent are not trusted
# (git's "racily clean" rule).
_RACY_NS = 2_000_000_000


def key(spec: HookSpec, search: Sequence[str]) -> str:
    hooks = sorted((n, d.argnames) for n, d in spec.hook_defs.items())
    return repr((_FORMAT, spec.group, spec.name, spec.version, hooks, sys.executable, sys.version, list(search)))


def _file(k: str) -> str:
    return os.path.join(cache_dir(), "discovery", f"{zlib.crc32(k.encode()):08x}.marshal")


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path or ".").st_mtime_ns
    except OSError:
        return None


def load(k: str, search: Sequence[str]) -> list[dict[str, Any]] | None:
    """The stored scan for key ``k``, or ``None`` if absent or stale."""
    try:
        with open(_file(k), "rb") as f:
            raw = f.read()
        if len(raw) < 4 or int.from_bytes(raw[:4], "little") != zlib.crc32(raw[4:]):
            return None
        data = marshal.loads(raw[4:])
        if data["key"] != k:
            return None
        written = data["written"]
        for path, stamp in zip(search, data["paths"]):
            now = _mtime(path)
            if now != stamp or (now is not None and now >= written - _RACY_NS):
                return None
        for path, stamp in data["watched"]:
            now = _mtime(path)
            if now != stamp or (now is not None and now >= written - _RACY_NS):
                return None
        plugins: list[dict[str, Any]] = data["plugins"]
        return plugins
    except (OSError, ValueError, KeyError, TypeError, EOFError):  # missing or corrupt: rescan
        return None


def store(k: str, search: Sequence[str], watched: Sequence[str], plugins: list[dict[str, Any]]) -> None:
    """Write the scan atomically; a read-only cache only costs speed."""
    target = _file(k)
    data = {
        "key": k,
        "written": time.time_ns(),
        "paths": [_mtime(p) for p in search],
        "watched": [[m, _mtime(m)] for m in watched],
        "plugins": plugins,
    }
    tmp = f"{target}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        payload = marshal.dumps(data)
        with open(tmp, "wb") as f:
            f.write(zlib.crc32(payload).to_bytes(4, "little") + payload)
        os.replace(tmp, target)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
