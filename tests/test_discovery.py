"""Tests for pluginsdk.discovery and its on-disk index."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pluginsdk.discovery import discover

from .plugin_factory import install_plain_dist, install_plugin
from .textkit import SPEC

UPPER = """
from pluginsdk import hookimpl

@hookimpl
def transform(text):
    return text.upper()
"""


def statuses(site: Path, **kw: object) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.reason) for c in discover(SPEC, path=[str(site)], **kw)}  # type: ignore[arg-type]


def age(*paths: Path) -> None:
    """Backdate mtimes so the index trusts them (fresh ones are 'racy')."""
    past = time.time() - 60
    for p in paths:
        os.utime(p, (past, past))


class TestDiscover:
    def test_finds_without_importing(self, site: Path) -> None:
        """Discovery reads the manifest and imports nothing of the plugin."""
        install_plugin(site, "upper", "raise RuntimeError('imported!')\n", isolation="process")
        (cand,) = discover(SPEC, path=[str(site)], use_index=False)
        assert ("upper", "textkit-upper", "1.0", "process", ("transform",), "available") == (
            cand.name,
            cand.dist,
            cand.version,
            cand.isolation,
            cand.hooks,
            cand.status,
        )
        assert "textkit_upper" not in sys.modules

    def test_dotted_entry_point_finds_manifest_without_importing_parent(self, site: Path) -> None:
        """For pkg.sub:obj the manifest is found by walking directories, not by importing pkg."""
        install_plugin(
            site,
            "deep",
            "raise RuntimeError('package __init__ ran')\n",
            module="deeppkg.sub",
            entry_value="deeppkg.sub:plugin",
            files={"sub/__init__.py": "plugin = None\n"},
        )
        (cand,) = discover(SPEC, path=[str(site)], use_index=False)
        assert ("available", "deeppkg.sub", "plugin") == (cand.status, cand.module, cand.attr)
        assert cand.manifest_path == str(site / "deeppkg" / "pluginsdk.toml")
        assert "deeppkg" not in sys.modules

    def test_broken_plugins_are_data(self, site: Path) -> None:
        """Each broken plugin is reported with a reason, and the good one is still found."""
        install_plugin(site, "good", UPPER)
        install_plugin(site, "nomanifest", UPPER, manifest="")
        install_plugin(
            site,
            "badmanifest",
            UPPER,
            manifest="[plugin]\nrequires = 'textkit>=1'\nhooks = ['transform']\nisolation = 'docker'\n",
        )
        install_plugin(site, "badvalue", UPPER, entry_value="not a module!")
        install_plugin(site, "missing", UPPER, entry_value="nowhere_to_be_found")
        install_plugin(site, "otherspec", UPPER, manifest='[plugin]\nrequires = "imagekit>=1"\nhooks = ["transform"]\n')
        install_plugin(site, "tooold", UPPER, manifest='[plugin]\nrequires = "textkit<1"\nhooks = ["transform"]\n')
        install_plugin(site, "unknownhook", UPPER, hooks=("transmogrify",))
        install_plugin(site, "futurehook", UPPER, hooks=("summarize",))
        found = statuses(site, use_index=False)
        assert ("available", "") == found["good"]
        expected = {
            "nomanifest": ("failed", "no pluginsdk.toml"),
            "badmanifest": ("failed", "isolation must be one of"),
            "badvalue": ("failed", "bad entry point value"),
            "missing": ("failed", "not installed"),
            "otherspec": ("incompatible", "requires spec 'imagekit'"),
            "tooold": ("incompatible", "requires textkit<1, but this host provides textkit 1.1"),
            "unknownhook": ("failed", "declares hook 'transmogrify'"),
            "futurehook": ("incompatible", "added in textkit 2.0"),
        }
        for name, (status, fragment) in expected.items():
            assert status == found[name][0], name
            assert fragment in found[name][1], (name, found[name][1])

    def test_duplicate_name(self, site: Path) -> None:
        """Two distributions claiming one plugin name: neither gets it (directory order decides nothing)."""
        install_plugin(site, "upper", UPPER, dist="aaa-upper", module="aaa_upper")
        install_plugin(site, "upper", UPPER, dist="bbb-upper", module="bbb_upper")
        found = statuses(site, use_index=False)
        assert "upper" not in found
        for name in ("upper (aaa-upper)", "upper (bbb-upper)"):
            assert "failed" == found[name][0]
            assert "'aaa-upper', 'bbb-upper'" in found[name][1]

    def test_sorted_by_name(self, site: Path) -> None:
        """Candidates come back sorted by plugin name, whatever the install order."""
        for name in ("zeta", "alpha", "mid"):
            install_plugin(site, name, UPPER)
        assert ["alpha", "mid", "zeta"] == [c.name for c in discover(SPEC, path=[str(site)])]


class TestIndex:
    def test_warm_index_answers_and_is_invalidated_by_install(self, site: Path) -> None:
        """A warm index is reused; installing a plugin invalidates it."""
        install_plugin(site, "upper", UPPER)
        age(site)
        assert ["upper"] == [c.name for c in discover(SPEC, path=[str(site)])]
        install_plugin(site, "lower", UPPER)
        assert ["lower", "upper"] == [c.name for c in discover(SPEC, path=[str(site)])]

    def test_uninstall_invalidates(self, site: Path) -> None:
        """Removing a distribution is seen on the next discovery."""
        install_plugin(site, "upper", UPPER)
        install_plugin(site, "lower", UPPER)
        age(site)
        assert 2 == len(discover(SPEC, path=[str(site)]))
        shutil.rmtree(site / "textkit_lower-1.0.dist-info")
        shutil.rmtree(site / "textkit_lower")
        assert ["upper"] == [c.name for c in discover(SPEC, path=[str(site)])]

    def test_manifest_edit_invalidates(self, site: Path) -> None:
        """Editing a manifest in place (an editable install, say) is seen."""
        pkg = install_plugin(site, "upper", UPPER)
        age(site, pkg / "pluginsdk.toml")
        assert "inprocess" == discover(SPEC, path=[str(site)])[0].isolation
        (pkg / "pluginsdk.toml").write_text(
            '[plugin]\nrequires = "textkit>=1"\nhooks = ["transform"]\nisolation = "process"\n'
        )
        assert "process" == discover(SPEC, path=[str(site)])[0].isolation

    def test_path_change_invalidates(self, site: Path, tmp_path: Path) -> None:
        """A different search path is a different index."""
        install_plugin(site, "upper", UPPER)
        other = tmp_path / "other"
        other.mkdir()
        install_plugin(other, "lower", UPPER)
        age(site, other)
        assert ["upper"] == [c.name for c in discover(SPEC, path=[str(site)])]
        assert ["lower", "upper"] == [c.name for c in discover(SPEC, path=[str(other), str(site)])]

    def test_corrupt_index_is_rebuilt(self, site: Path) -> None:
        """Garbage in the index file means a rescan, not an error."""
        install_plugin(site, "upper", UPPER)
        age(site)
        discover(SPEC, path=[str(site)])
        for f in Path(os.environ["PLUGINSDK_CACHE_DIR"], "discovery").iterdir():
            f.write_text("{not json")
        assert ["upper"] == [c.name for c in discover(SPEC, path=[str(site)])]

    def test_warm_start_imports_no_metadata_machinery(self, site: Path) -> None:
        """With a warm index, a host starts without importing importlib.metadata, tomllib or cattrs."""
        install_plugin(site, "upper", UPPER)
        for i in range(20):
            install_plain_dist(site, f"noise-{i}")
        age(site, site / "textkit_upper" / "pluginsdk.toml")
        script = f"""
import sys
sys.path[:0] = [{str(site)!r}, {str(Path(__file__).parent)!r}]
from textkit import SPEC
from pluginsdk import Host
with Host(SPEC, path=[{str(site)!r}]) as host:
    names = [p.name for p in host.plugins()]
heavy = sorted(m for m in ("importlib.metadata", "importlib_metadata", "tomllib", "tomli", "cattrs", "packaging",
                           "textkit_upper") if m in sys.modules)
print(names, heavy)
"""
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
        cold = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
        warm = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
        assert "['upper'] []" == warm.stdout.strip()
        assert "packaging" in cold.stdout  # the cold run really judged the manifest


@pytest.mark.parametrize("bad", [b"[textkit.plugins]\nnoequals\n", b"\xff\xfe[textkit.plugins]\nx=y\n"])
def test_unreadable_entry_points_spoil_one_dist(site: Path, bad: bytes) -> None:
    """A corrupt entry_points.txt marks that distribution failed; others are found."""
    install_plugin(site, "upper", UPPER)
    install_plugin(site, "broken", UPPER)
    (site / "textkit_broken-1.0.dist-info" / "entry_points.txt").write_bytes(bad)
    found = statuses(site, use_index=False)
    assert "available" == found["upper"][0]
    assert any(status == "failed" and "textkit-broken" in reason for status, reason in found.values())


class TestIndexWatchesMissingManifests:
    def test_added_manifest_is_seen(self, site: Path) -> None:
        """A plugin failed for lack of a manifest is found once the manifest is added, index or not."""
        pkg = install_plugin(site, "late", UPPER, manifest="")
        age(site, pkg)
        assert "failed" == discover(SPEC, path=[str(site)])[0].status
        (pkg / "pluginsdk.toml").write_text('[plugin]\nrequires = "textkit>=1"\nhooks = ["transform"]\n')
        assert "available" == discover(SPEC, path=[str(site)])[0].status


def test_oversized_entry_points_spoil_one_dist(site: Path) -> None:
    """An entry_points.txt over 1 MiB is not parsed: its distribution is failed, the others found."""
    install_plugin(site, "upper", UPPER)
    install_plugin(site, "huge", UPPER)
    padding = "# " + "x" * 100 + "\n"
    text = "[textkit.plugins]\nhuge = textkit_huge\n" + padding * 11_000
    (site / "textkit_huge-1.0.dist-info" / "entry_points.txt").write_text(text)
    found = statuses(site, use_index=False)
    assert "available" == found["upper"][0]
    assert ("failed", "entry_points.txt of textkit-huge is over 1048576 bytes") == found["<textkit-huge>"]
