"""Entry points of one group, read straight from installed metadata.

``importlib.metadata`` costs tens of milliseconds to import and builds a
distribution object (and parses its METADATA) for every installed
distribution; discovery needs one group's entry points.  For plain
directories on the search path, which is where installers put
distributions, this module lists ``*.dist-info`` / ``*.egg-info`` folders
itself, opens ``entry_points.txt`` and parses it only when the group is
named there, and reads name and version only of distributions that match.
Anything else (zip files on the path, import hooks that provide their own
distributions) goes through ``importlib_metadata``, the reference.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["GroupEntries", "group_entries", "parse_entry_points"]

_SUFFIXES = (".dist-info", ".egg-info")
#: The largest entry_points.txt read (real ones are a few KiB): every distribution's is
#: opened on a cold scan, so one huge file would slow every host that scans it.
ENTRY_POINTS_MAX_BYTES = 1 << 20
_EXTRAS = re.compile(r"\s*\[[^\]]*\]\s*$")


class GroupEntries(NamedTuple):
    """One distribution's entry points in the group.

    Attributes:
        dist: Distribution name, as its metadata spells it.
        version: Its version.
        entries: ``(name, value)`` pairs; empty when ``error`` is set.
        error: Why its entry points could not be read, if they could not.
    """

    dist: str
    version: str
    entries: list[tuple[str, str]]
    error: str | None = None


def normalize(name: str) -> str:
    """PEP 503 normalization: how installers compare distribution names."""
    # String methods first: this runs once per installed distribution.
    key = name.replace("_", "-").replace(".", "-").lower()
    return re.sub(r"-{2,}", "-", key) if "--" in key else key


def parse_entry_points(text: str, group: str) -> list[tuple[str, str]]:
    """``(name, value)`` pairs of ``group`` in entry_points.txt text.

    Values are not validated here: discovery judges each one alone, so one
    bad entry fails one plugin, not its whole distribution.
    """
    found = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == group:
            name, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"line {raw!r} is not 'name = value'")
            found.append((name.strip(), _EXTRAS.sub("", value.strip())))
    return found


def group_entries(group: str, search: list[str], full_import_system: bool) -> Iterator[GroupEntries]:
    """Distributions with entry points in ``group``, first on the path first.

    A distribution shadowed by one of the same name earlier on the path is
    skipped, as import would skip it.
    """
    if full_import_system and _custom_distribution_finders():
        yield from _via_importlib_metadata(group, search)
        return
    seen: set[str] = set()
    for entry in search:
        if os.path.isdir(entry or "."):
            yield from _scan_directory(entry or ".", group, seen)
        elif os.path.exists(entry):
            yield from _via_importlib_metadata(group, [entry], seen)


def _scan_directory(directory: str, group: str, seen: set[str]) -> Iterator[GroupEntries]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return
    for name in names:
        if not name.endswith(_SUFFIXES):
            continue
        key = normalize(name.rsplit(".", 1)[0].split("-", 1)[0])
        if key in seen:
            continue
        meta_dir = os.path.join(directory, name)
        seen.add(key)  # even a bare PKG-INFO file shadows later ones, as in importlib.metadata
        try:
            with open(os.path.join(meta_dir, "entry_points.txt"), "rb") as f:
                raw = f.read(ENTRY_POINTS_MAX_BYTES + 1)
        except OSError:  # no entry points (or a PKG-INFO file, not a folder)
            continue
        if group.encode() not in raw:
            continue
        dist, version = _name_and_version(meta_dir, name)
        if len(raw) > ENTRY_POINTS_MAX_BYTES:
            yield GroupEntries(dist, version, [], f"entry_points.txt of {dist} is over {ENTRY_POINTS_MAX_BYTES} bytes")
            continue
        try:
            entries = parse_entry_points(raw.decode("utf-8"), group)
        except ValueError as exc:  # includes UnicodeDecodeError
            yield GroupEntries(dist, version, [], f"unreadable entry points in {dist}: {exc}")
            continue
        if entries:
            yield GroupEntries(dist, version, entries)


def _name_and_version(meta_dir: str, dirname: str) -> tuple[str, str]:
    """From the METADATA (or PKG-INFO) headers; the folder name as a fallback."""
    fields: dict[str, str] = {}
    for filename in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(meta_dir, filename), encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.strip():
                        break  # end of the headers
                    key, sep, value = line.partition(":")
                    if sep and key in ("Name", "Version") and key not in fields:
                        fields[key] = value.strip()
            break
        except OSError:
            continue
    stem = dirname.rsplit(".", 1)[0].split("-")
    return fields.get("Name", stem[0]), fields.get("Version", stem[1] if len(stem) > 1 else "?")


def _custom_distribution_finders() -> bool:
    """Whether an import hook other than the path finder provides distributions."""
    from importlib.machinery import PathFinder

    return any(finder is not PathFinder and hasattr(finder, "find_distributions") for finder in sys.meta_path)


def _via_importlib_metadata(group: str, search: list[str], seen: set[str] | None = None) -> Iterator[GroupEntries]:
    import importlib_metadata

    seen = set() if seen is None else seen
    for dist in importlib_metadata.distributions(path=search):
        name = dist.name or "?"
        if normalize(name) in seen:
            continue
        seen.add(normalize(name))
        try:
            text = dist.read_text("entry_points.txt") or ""
            entries = parse_entry_points(text, group)
        except Exception as exc:
            yield GroupEntries(name, dist.version or "?", [], f"unreadable entry points in {name}: {exc}")
            continue
        if entries:
            yield GroupEntries(name, dist.version or "?", entries)
