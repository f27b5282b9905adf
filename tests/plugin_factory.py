"""Write real plugin distributions for tests.

A "site" is a directory laid out like site-packages: each plugin gets its
package directory and a real ``NAME-VERSION.dist-info`` (METADATA,
entry_points.txt, RECORD), exactly what an installer leaves behind, so
``importlib.metadata`` and the SDK's own index see a genuine installation.
"""

from __future__ import annotations

import base64
import hashlib
import textwrap
from pathlib import Path

DEFAULT_MANIFEST = """\
[plugin]
requires = "textkit>=1.0,<2"
isolation = "{isolation}"
hooks = {hooks}
"""


def _record_line(root: Path, path: Path) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=")
    return f"{path.relative_to(root).as_posix()},sha256={digest.decode()},{path.stat().st_size}"


def install_plugin(
    site: Path,
    name: str,
    source: str,
    *,
    module: str | None = None,
    dist: str | None = None,
    version: str = "1.0",
    group: str = "textkit.plugins",
    entry_value: str | None = None,
    manifest: str | None = None,
    isolation: str = "inprocess",
    hooks: tuple[str, ...] = ("transform",),
    files: dict[str, str] | None = None,
) -> Path:
    """Install plugin ``name`` into ``site``; return its package directory.

    ``source`` becomes the package's ``__init__.py``; ``manifest`` (TOML text)
    its ``pluginsdk.toml``, or one built from ``isolation`` and ``hooks`` when
    omitted; pass ``manifest=""`` to ship no manifest at all.  ``files`` adds
    more files inside the package, by relative path.
    """
    module = module or f"textkit_{name}".replace("-", "_")
    dist = dist or f"textkit-{name}"
    top = module.split(".")[0]
    pkg = site / top
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(source))
    if manifest is None:
        manifest = DEFAULT_MANIFEST.format(isolation=isolation, hooks="[" + ", ".join(f'"{h}"' for h in hooks) + "]")
    if manifest:
        (pkg / "pluginsdk.toml").write_text(textwrap.dedent(manifest))
    for rel, text in (files or {}).items():
        target = pkg / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))

    norm = dist.replace("-", "_")
    info = site / f"{norm}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {entry_value or module}\n")
    (info / "top_level.txt").write_text(top + "\n")
    (info / "INSTALLER").write_text("pluginsdk-tests\n")
    lines = [_record_line(site, p) for p in sorted(pkg.rglob("*")) if p.is_file()]
    lines += [_record_line(site, p) for p in sorted(info.iterdir()) if p.name != "RECORD"]
    lines.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(lines) + "\n")
    return pkg


def install_plain_dist(site: Path, dist: str, version: str = "1.0") -> Path:
    """Install a distribution with no entry points at all (background noise)."""
    norm = dist.replace("-", "_")
    info = site / f"{norm}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    return info


def add_requires(site: Path, dist: str, version: str, requires: list[str]) -> None:
    """Give installed ``dist`` ``Requires-Dist`` lines, as an installer writes them (RECORD kept true)."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    lines = "".join(f"Requires-Dist: {r}\n" for r in requires)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n{lines}")
    record = [
        _record_line(site, p) if p.parent == info and p.name != "RECORD" else line
        for line in (info / "RECORD").read_text().splitlines()
        for p in [site / line.split(",")[0]]
    ]
    (info / "RECORD").write_text("\n".join(record) + "\n")


def install_library(site: Path, dist: str, top: str, source: str, *, requires: tuple[str, ...] = ()) -> Path:
    """A plain (non-plugin) distribution with one top-level package, as an installer leaves it."""
    pkg = site / top
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    meta = "".join(f"Requires-Dist: {r}\n" for r in requires)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n{meta}")
    (info / "top_level.txt").write_text(top + "\n")
    lines = [_record_line(site, p) for p in sorted(pkg.rglob("*")) if p.is_file()]
    lines += [_record_line(site, p) for p in sorted(info.iterdir())]
    (info / "RECORD").write_text("\n".join([*lines, f"{info.name}/RECORD,,"]) + "\n")
    return pkg


def install_dist(
    site: Path,
    dist: str,
    files: dict[str, str | bytes],
    *,
    version: str = "1.0",
    requires: tuple[str, ...] = (),
    extras: tuple[str, ...] = (),
    entry_points: str = "",
) -> Path:
    """A distribution with any files (paths relative to ``site``; bytes for binary ones), as an installer leaves it.

    ``requires`` become ``Requires-Dist`` lines and ``extras`` ``Provides-Extra`` lines;
    ``entry_points`` is ``entry_points.txt``'s text.  Returns its ``.dist-info``.
    """
    written = []
    for rel, content in files.items():
        target = site / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(textwrap.dedent(content))
        written.append(target)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    meta = "".join(f"Provides-Extra: {e}\n" for e in extras) + "".join(f"Requires-Dist: {r}\n" for r in requires)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n{meta}")
    if entry_points:
        (info / "entry_points.txt").write_text(entry_points)
    lines = [_record_line(site, p) for p in sorted(written)]
    lines += [_record_line(site, p) for p in sorted(info.iterdir())]
    (info / "RECORD").write_text("\n".join([*lines, f"{info.name}/RECORD,,"]) + "\n")
    return info
