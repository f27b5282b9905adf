"""Whether a distribution's C extensions keep it out of the sandbox, judged per module (host side).

The sandbox cannot load extension modules (``.so``, ``.pyd``): they are left
out of what it mounts.  Many binary distributions still work without them,
because they only speed up code that has a pure-Python fallback (markupsafe's
``_speedups``, msgpack's ``_cmsgpack``, PyYAML's ``_yaml``).  Others cannot
(``pydantic_core``'s package imports ``._pydantic_core``, which exists only
as an extension).  The rule, applied to each distribution's own files:

* an extension module with a Python module or package of the same name beside
  it is fine (the sandbox imports the Python one);
* a *top-level* module that exists only as an extension is refused;
* otherwise an extension module is refused if importing the distribution's
  top-level packages reaches it *unconditionally*: through module-level
  ``import`` statements that are neither inside a ``try`` catching
  ``ImportError`` (or a base of it) nor inside an ``if``, followed from module
  to module through the distribution's own ``.py`` files.  Imports inside
  functions, ``if`` blocks and guarded ``try`` blocks are taken to have a way
  around a missing module.

This reads source, it does not run it: an extension imported by other means
(``importlib.import_module``) is not seen, and fails when the plugin imports
it, with the sandbox's error naming the extension files left out.
"""

from __future__ import annotations

import ast
import importlib.machinery
import os
from collections.abc import Iterable, Iterator

__all__ = ["EXTENSION_SUFFIXES", "extension_module", "package_extensions", "refuse_extensions", "refusal"]

EXTENSION_SUFFIXES = (*importlib.machinery.EXTENSION_SUFFIXES, ".so", ".pyd", ".dylib")
_CATCHES_IMPORT_ERROR = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def extension_module(path: str) -> str | None:
    """The dotted module name of extension file ``path`` (``pkg/_x.cpython-312-x86_64-linux-gnu.so`` -> ``pkg._x``)."""
    if not path.endswith(EXTENSION_SUFFIXES):
        return None
    parts = path.split("/")
    stem = parts[-1].split(".")[0]
    return ".".join([*parts[:-1], stem]) if stem.isidentifier() else None


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(
        (isinstance(n, ast.Name) and n.id in _CATCHES_IMPORT_ERROR)
        or (isinstance(n, ast.Attribute) and n.attr in _CATCHES_IMPORT_ERROR)
        for n in names
    )


def _unconditional_imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[str]:
    """Dotted names ``module``'s body imports whatever happens (see the module docstring)."""
    package = module if is_package else module.rpartition(".")[0]

    def walk(body: Iterable[ast.stmt]) -> Iterator[str]:
        for node in body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                yield target
                for alias in node.names:  # ``from pkg import sub`` may import a submodule
                    yield f"{target}.{alias.name}"
            elif isinstance(node, ast.Try):
                if not any(_catches_import_error(h) for h in node.handlers):
                    yield from walk(node.body)
                yield from walk(node.finalbody)
            elif isinstance(node, ast.With):
                yield from walk(node.body)
            # if/while/for/def/class bodies: conditional or deferred, not followed

    yield from walk(tree.body)


def refusal(dist: str, files: Iterable[str], read: dict[str, str] | None = None, *, root: str = "") -> str | None:
    """Why distribution ``dist`` cannot run in the sandbox, or ``None``.

    Args:
        dist: Its name, for the message.
        files: Its installed files, relative to ``root`` (its search-path entry), ``/``-separated.
        read: Sources by relative path (for tests); else read from ``root``.
        root: The search-path entry holding the files.
    """
    files = list(files)
    python: dict[str, str] = {}  # dotted module -> file
    packages: set[str] = set()
    for path in files:
        if path.endswith(".py") and "__pycache__" not in path:
            parts = path[:-3].split("/")
            if parts[-1] == "__init__":
                parts = parts[:-1]
                packages.add(".".join(parts))
            python[".".join(parts)] = path
    native = {m: p for p in files if (m := extension_module(p)) is not None and m not in python}
    if not native:
        return None
    for module, path in sorted(native.items()):
        if "." not in module:
            return f"distribution {dist!r}: top-level module {module!r} exists only as a C extension ({path})"
    tops = sorted(m for m in python if "." not in m)
    todo: list[tuple[str, tuple[str, ...]]] = [(m, (m,)) for m in tops]
    done: set[str] = set()
    while todo:
        module, via = todo.pop()
        if module in done:
            continue
        done.add(module)
        path = python[module]
        try:
            if read is not None:
                source = read[path]
            else:
                with open(os.path.join(root, path), "rb") as f:
                    source = f.read().decode("utf-8", "replace")
            tree = ast.parse(source, path)
        except (OSError, SyntaxError, ValueError, KeyError):
            continue  # unreadable here: nothing to follow (the import itself will say)
        for name in _unconditional_imports(tree, module, module in packages):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c imports a and a.b first
                prefix = ".".join(parts[:i])
                if prefix in native:
                    chain = " -> ".join((*via, prefix))
                    return (
                        f"distribution {dist!r}: {native[prefix]} is a C extension with no Python source, and"
                        f" importing it is unconditional ({chain})"
                    )
                if prefix in python and prefix not in done:
                    todo.append((prefix, (*via, prefix)))
    return None


_EXTENSION_FILES = (".so", ".pyd", ".dylib")


def package_extensions(root: str) -> list[str]:
    """The C extension files under ``root`` (a plugin's own package), relative to it, sorted."""
    from pathlib import Path

    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.suffix in _EXTENSION_FILES)


def refuse_extensions(plugin: str, package_dir: str) -> None:
    """Raise :class:`~pluginsdk.PluginLoadError` if ``plugin``'s own package holds C extensions (no sandbox can)."""
    found = package_extensions(package_dir)
    if found:
        from ._errors import PluginLoadError

        raise PluginLoadError(
            f"isolation 'wasm' cannot load C extensions, found {', '.join(found)} in {package_dir}", plugin=plugin
        )
