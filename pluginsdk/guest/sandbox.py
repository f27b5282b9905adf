"""The program the sandboxed interpreter runs: the guest loop, adapted to the sandbox.

Run as a script (``/lib/pluginsdk/guest/sandbox.py``), never imported by the host.

* Frames go through :mod:`.fastcodec` (msgpack's bytes, faster in pure Python;
  large host frames as marshal).
* Packages mounted at their own directory (the plugin, its declared
  dependencies) are found by a small finder: the mount point's parent is not
  a directory the guest can list, so ``sys.path`` cannot name it.

argv: ``[prog, MOUNTS]``, MOUNTS being ``kind:name=path`` entries joined by ``|``
(kind ``p`` a package directory, ``m`` a module file); json would cost an import.
Standard output is the reply channel, so the plugin's ``print`` goes to
standard error, each line marked with ``\\x01`` so the host logs it as stdout.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs start-up time in the sandbox: annotations only
if TYPE_CHECKING:
    from typing import Any


class _MountFinder:
    """Finds top-level packages/modules mounted at their own guest directory."""

    def __init__(self, packages: dict[str, str], modules: dict[str, str]) -> None:
        self.packages = packages
        self.modules = modules

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        # importlib.util's function, from the frozen module it lives in (no import needed).
        from _frozen_importlib_external import spec_from_file_location

        if name in self.packages:
            root = self.packages[name]
            return spec_from_file_location(name, f"{root}/__init__.py", submodule_search_locations=[root])
        if name in self.modules:
            return spec_from_file_location(name, self.modules[name])
        return None


class _MarkedStdout:
    """``sys.stdout`` for plugin code: lines to stderr, marked as stdout for the host."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self) -> None:
        self._buf = ""

    def write(self, text: str) -> int:
        import os

        self._buf += text
        if "\n" in self._buf:
            *lines, self._buf = self._buf.split("\n")
            os.write(2, "".join(f"\x01{line}\n" for line in lines).encode("utf-8", "replace"))
        return len(text)

    def flush(self) -> None:
        if self._buf:
            self.write("\n")

    def isatty(self) -> bool:
        return False


def main() -> int:
    import io
    import os

    # The fast encoders recurse in Python: allow the nesting msgpack's C encoder
    # on the host allows (1022 levels), so every level takes the same values.
    sys.setrecursionlimit(2500)

    found: dict[str, dict[str, str]] = {"p": {}, "m": {}}
    for entry in filter(None, (sys.argv[1] if len(sys.argv) > 1 else "").split("|")):
        kind, _, rest = entry.partition(":")
        name, _, path = rest.partition("=")
        found[kind][name] = path
    sys.path.insert(0, "/lib")  # -I leaves the script's directory off sys.path
    sys.pycache_prefix = "/pycache"  # bytecode the warm-up compiled (read-only here)
    sys.meta_path.append(_MountFinder(found["p"], found["m"]))
    sys.stdout = _MarkedStdout()
    sys.stdin = io.StringIO()

    from pluginsdk import codec
    from pluginsdk.guest.fastcodec import make_fast_pack, make_fast_unpack
    from pluginsdk.guest.loop import serve

    slow_packer: list[Any] = []

    def slow_pack(obj: Any) -> bytes:
        # msgpack is imported only for a value the fast codecs leave to it:
        # its import costs ~20 ms of start-up in the sandbox.
        if not slow_packer:
            slow_packer.append(codec.make_packer())
        return bytes(slow_packer[0](obj))

    codec.install_packer(make_fast_pack(slow_pack))

    def read(n: int) -> bytes:
        return os.read(0, n)

    def write(data: Any) -> int:
        return os.write(1, data)

    try:
        # The handshake names the codec without importing msgpack to find out:
        # MSGPACK_PUREPYTHON (set by the host) makes it the pure-Python one here.
        return serve(read, write, decode=make_fast_unpack(codec.decode), implementation="pure-python")
    except BrokenPipeError:  # the host went away
        return 0


if __name__ == "__main__":
    sys.exit(main())
