"""Tests for pluginsdk.manifest: reading pluginsdk.toml as data."""

from __future__ import annotations

from pathlib import Path

import pytest

from pluginsdk import Limits, ManifestError
from pluginsdk.manifest import load_manifest


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pluginsdk.toml"
    path.write_text(text)
    return path


class TestLoadManifest:
    def test_minimal(self, tmp_path: Path) -> None:
        """Isolation defaults to inprocess; limits to unset."""
        m = load_manifest(write(tmp_path, '[plugin]\nrequires = "textkit>=1"\nhooks = ["transform"]\n'))
        assert ("textkit>=1", "inprocess", ("transform",), Limits()) == (
            m.plugin.requires,
            m.plugin.isolation,
            m.plugin.hooks,
            m.limits,
        )

    def test_limits(self, tmp_path: Path) -> None:
        """Limits accept TOML integers where seconds are floats."""
        m = load_manifest(
            write(
                tmp_path,
                '[plugin]\nrequires = "textkit>=1"\nhooks = ["transform"]\nisolation = "process"\n'
                "[limits]\nworkers = 2\ntimeout = 5\nmemory_mb = 256\n",
            )
        )
        assert Limits(workers=2, timeout=5.0, memory_mb=256) == m.limits

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ('[plugin]\nrequires = "textkit>=1"\nhooks = ["t"]\nisolation = "docker"\n', "isolation must be one of"),
            ('[plugin]\nrequires = "textkit>=1"\nhooks = []\n', "at least one hook"),
            ('[plugin]\nrequires = "textkit >= banana"\nhooks = ["t"]\n', "requires"),
            ('[plugin]\nhooks = ["t"]\n', "requires"),
            ('[plugin]\nrequires = "textkit>=1"\nhooks = ["t"]\ncolour = "red"\n', "colour"),
            ('[plugin]\nrequires = "textkit>=1"\nhooks = ["t"]\n[limits]\nworkers = "two"\n', "workers"),
            ('[plugin]\nrequires = "textkit>=1"\nhooks = ["t"]\n[limits]\ntimeout = -1\n', "timeout: -1 is not"),
            ('[plugin]\nrequires = "textkit>=1"\nhooks = ["not a name"]\n', "identifiers"),
            ('[plugin]\nrequires = "textkit>=1"\nhooks = ["t"]\n[limits]\nwrkers = 2\n', "wrkers"),
            ('[plugin]\nrequires = "textkit>=1"\nhooks = ["t"]\n[limits]\nworkers = 2.5\n', "workers: 2.5 is not"),
            ('[plugin]\nrequires = "textkit[extra]>=1"\nhooks = ["t"]\n', "only a spec name"),
            ("[plugin\n", "cannot read"),
            ("", "plugin"),
        ],
    )
    def test_invalid(self, tmp_path: Path, text: str, fragment: str) -> None:
        """Each kind of mistake gives a ManifestError naming the file and the problem."""
        path = write(tmp_path, text)
        with pytest.raises(ManifestError) as info:
            load_manifest(path, plugin="upper")
        assert fragment in str(info.value)
        assert str(path) in str(info.value)
        assert "upper" == info.value.plugin

    def test_missing(self, tmp_path: Path) -> None:
        """A missing file is a ManifestError too."""
        with pytest.raises(ManifestError, match="no manifest"):
            load_manifest(tmp_path / "pluginsdk.toml")


class TestLimitHints:
    @pytest.mark.parametrize(
        ("line", "fragment"),
        [
            ("timeout = nan", "limits.timeout: nan is not allowed; expected a finite number > 0"),
            ("timeout = inf", "limits.timeout: inf is not allowed; expected a finite number > 0"),
            ("memory_mb = 0", "limits.memory_mb: 0 is not allowed; expected a whole number > 0"),
            ("max_message_mb = 0", "limits.max_message_mb: 0 is not allowed; expected a finite number > 0"),
            ("workers = 0", "limits.workers: 0 is not allowed; expected a whole number > 0"),
            ("open_files = 0", "limits.open_files: 0 is not allowed; expected a whole number > 0"),
            ("workers = true", "limits.workers: True is not allowed; expected a whole number > 0"),
            ("recycle_after = -1", "limits.recycle_after: -1 is not allowed; expected a whole number >= 0 (0: never)"),
        ],
    )
    def test_hints_cannot_switch_limits_off(self, tmp_path: Path, line: str, fragment: str) -> None:
        """A manifest cannot turn a cap off with 0, NaN or infinity."""
        path = write(tmp_path, f'[plugin]\nrequires = "textkit>=1"\nhooks = ["t"]\n[limits]\n{line}\n')
        with pytest.raises(ManifestError) as info:
            load_manifest(path)
        assert fragment in str(info.value)

    def test_open_files_hint_is_capped_by_the_host(self, tmp_path: Path) -> None:
        """``open_files`` is read from [limits], and the host's policy (else the SDK default) caps it."""
        from pluginsdk import Policy

        path = write(tmp_path, '[plugin]\nrequires = "textkit>=1"\nhooks = ["t"]\n[limits]\nopen_files = 5000\n')
        hints = load_manifest(path).limits._asdict()
        assert 5000 == hints["open_files"]
        assert 256 == Policy().limits_for("p", hints).open_files
        assert 64 == Policy(limits=Limits(open_files=64)).limits_for("p", hints).open_files
        assert 32 == Policy().limits_for("p", {"open_files": 32}).open_files

    def test_zero_means_never_for_recycling(self, tmp_path: Path) -> None:
        """recycle_after = 0 and idle_timeout = 0 are valid ("never")."""
        path = write(
            tmp_path,
            '[plugin]\nrequires = "textkit>=1"\nhooks = ["t"]\n[limits]\nrecycle_after = 0\nidle_timeout = 0\n',
        )
        assert (0, 0.0) == (load_manifest(path).limits.recycle_after, load_manifest(path).limits.idle_timeout)
