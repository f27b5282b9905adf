from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the suite's discovery index and WASM cache out of the user's cache.

    One directory for the whole session, so the sandbox interpreter is
    compiled once; discovery indexes are keyed by search path, and every
    test's site directory is its own.
    """
    old = os.environ.get("PLUGINSDK_CACHE_DIR")
    os.environ["PLUGINSDK_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        del os.environ["PLUGINSDK_CACHE_DIR"]
    else:
        os.environ["PLUGINSDK_CACHE_DIR"] = old


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """A fresh site-packages-like directory on ``sys.path``; its modules are forgotten afterwards."""
    root = tmp_path / "site"
    root.mkdir()
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    before = set(sys.modules)
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        for name in set(sys.modules) - before:
            module = sys.modules.get(name)
            if module is not None and str(getattr(module, "__file__", "") or "").startswith(str(root)):
                del sys.modules[name]
        importlib.invalidate_caches()
