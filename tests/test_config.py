"""Tests for pluginsdk.config: the one vocabulary of levels, statuses, limits and backend options."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from pluginsdk import ConfigError, ManifestError, Policy
from pluginsdk.config import (
    DEFAULT_LIMITS,
    ISOLATION_LEVELS,
    STATUSES,
    BackendOptions,
    Incident,
    Limits,
    limit_problem,
)
from pluginsdk.manifest import parse_manifest

BAD = [
    ("timeout", -5, "limits.timeout: -5 is not allowed; expected a finite number > 0"),
    ("timeout", 0, "limits.timeout: 0 is not allowed; expected a finite number > 0"),
    ("timeout", math.nan, "limits.timeout: nan is not allowed; expected a finite number > 0"),
    ("timeout", math.inf, "limits.timeout: inf is not allowed; expected a finite number > 0"),
    ("memory_mb", 0, "limits.memory_mb: 0 is not allowed; expected a whole number > 0"),
    ("memory_mb", 1.5, "limits.memory_mb: 1.5 is not allowed; expected a whole number > 0"),
    ("workers", -2, "limits.workers: -2 is not allowed; expected a whole number > 0"),
    ("workers", True, "limits.workers: True is not allowed; expected a whole number > 0"),
    ("workers", "2", "limits.workers: '2' is not allowed; expected a whole number > 0"),
    ("max_message_mb", 0.0, "limits.max_message_mb: 0.0 is not allowed; expected a finite number > 0"),
    ("open_files", 0, "limits.open_files: 0 is not allowed; expected a whole number > 0"),
    ("recycle_after", -1, "limits.recycle_after: -1 is not allowed; expected a whole number >= 0 (0: never)"),
    ("idle_timeout", -0.5, "limits.idle_timeout: -0.5 is not allowed; expected a finite number >= 0 (0: never)"),
    ("idle_timeout", math.inf, "limits.idle_timeout: inf is not allowed; expected a finite number >= 0 (0: never)"),
]


class TestLimitsChecked:
    @pytest.mark.parametrize(("field", "value", "message"), BAD)
    def test_refused_with_field_value_and_range(self, field: str, value: object, message: str) -> None:
        """Each bad value is refused, naming the field, the value and what is allowed."""
        assert message == limit_problem(field, value)
        with pytest.raises(ConfigError) as info:
            Limits.checked({field: value})
        assert message in str(info.value)

    @pytest.mark.parametrize(("field", "value", "message"), BAD)
    def test_same_words_everywhere(self, field: str, value: object, message: str) -> None:
        """Policy(...), Policy.from_dict and a manifest refuse a bad limit in the same words."""
        with pytest.raises(ConfigError) as in_code:
            Policy(limits=Limits(**{field: value}))  # type: ignore[arg-type]
        with pytest.raises(ConfigError) as from_dict:
            Policy.from_dict({"limits": {field: value}}, source="host.toml")
        manifest = {"plugin": {"requires": "textkit>=1", "hooks": ["t"]}, "limits": {field: value}}
        with pytest.raises(ManifestError) as from_manifest:
            parse_manifest(manifest, path="pluginsdk.toml", plugin="p")
        tail = message.split("limits.", 1)[1]
        assert f"policy.limits.{tail}" in str(in_code.value)
        assert f"policy.limits.{tail}" in str(from_dict.value)
        assert "host.toml" in str(from_dict.value)
        assert message in str(from_manifest.value)

    def test_the_issue_example_is_refused_whole(self) -> None:
        """Every problem is reported at once (this policy was accepted before)."""
        with pytest.raises(ConfigError) as info:
            Policy.from_dict({"limits": {"timeout": -5, "memory_mb": 0, "workers": -2}})
        text = str(info.value)
        assert "policy.limits.timeout: -5 is not allowed" in text
        assert "policy.limits.memory_mb: 0 is not allowed" in text
        assert "policy.limits.workers: -2 is not allowed" in text

    def test_plugin_limits_and_toml_are_checked(self, tmp_path: Path) -> None:
        config = tmp_path / "host.toml"
        config.write_text("[policy.plugin_limits.big]\nmemory_mb = 0\n")
        with pytest.raises(ConfigError, match=r"policy\.plugin_limits\.big\.memory_mb: 0 is not allowed") as info:
            Policy.from_toml(config)
        assert str(config) in str(info.value)
        with pytest.raises(ConfigError, match="unknown limit"):
            Policy.from_dict({"limits": {"wrkers": 2}})
        with pytest.raises(ConfigError, match=r"policy\.plugin_limits\.x\.open_files"):
            Policy(plugin_limits={"x": Limits(open_files=-1)})

    def test_valid_values_are_typed(self) -> None:
        """Whole-number fields come back as int, the rest as float; 0 is "never" where allowed."""
        limits = Limits.checked({"workers": 2.0, "timeout": 5, "recycle_after": 0, "idle_timeout": 0})
        assert Limits(workers=2, timeout=5.0, recycle_after=0, idle_timeout=0.0) == limits
        assert (int, float) == (type(limits.workers), type(limits.timeout))
        assert Limits.checked(DEFAULT_LIMITS) == DEFAULT_LIMITS
        assert Limits() == Limits.checked(None)

    def test_long_values_are_cut_short(self) -> None:
        problem = limit_problem("workers", "x" * 100_000)
        assert problem is not None and len(problem) < 150


class TestLimitsFor:
    """A manifest can only narrow what the host grants (policy, else the defaults)."""

    def test_every_field_is_capped_by_the_policy(self) -> None:
        policy = Policy(limits=Limits(workers=2, timeout=10, memory_mb=256, max_message_mb=1, open_files=50))
        hints = {"workers": 30, "timeout": 99.0, "memory_mb": 4096, "max_message_mb": 512.0, "open_files": 9999}
        assert Limits(2, 10.0, 256, 1.0, 0, 0.0, 50) == policy.limits_for("p", hints)

    def test_defaults_cap_when_the_policy_is_silent(self) -> None:
        assert DEFAULT_LIMITS.workers == Policy().limits_for("p", {"workers": 30}).workers

    def test_narrower_hints_are_kept(self) -> None:
        policy = Policy(limits=Limits(workers=4, timeout=10))
        assert (2, 3.0) == tuple(policy.limits_for("p", {"workers": 2, "timeout": 3.0})[:2])

    @pytest.mark.parametrize(
        ("host", "asked", "expected"),
        [
            (0, 5, 5),  # the host never recycles; the plugin may ask for sooner
            (10, 0, 10),  # "never" would widen the host's 10
            (10, 50, 10),
            (10, 3, 3),
            (0, 0, 0),
        ],
    )
    def test_zero_is_the_widest_for_recycling(self, host: int, asked: int, expected: int) -> None:
        policy = Policy(limits=Limits(recycle_after=host, idle_timeout=float(host)))
        got = policy.limits_for("p", {"recycle_after": asked, "idle_timeout": float(asked)})
        assert (expected, float(expected)) == (got.recycle_after, got.idle_timeout)

    def test_plugin_limits_still_grant_more(self) -> None:
        policy = Policy(limits=Limits(workers=2), plugin_limits={"big": Limits(workers=8)})
        assert 8 == policy.limits_for("big", {"workers": 30}).workers
        assert 2 == policy.limits_for("other", {"workers": 30}).workers

    def test_invalid_hints_are_dropped(self) -> None:
        got = Policy().limits_for("p", {"memory_mb": 0, "timeout": math.nan, "workers": True})
        assert (DEFAULT_LIMITS.memory_mb, DEFAULT_LIMITS.timeout, 1) == (got.memory_mb, got.timeout, got.workers)


class TestVocabulary:
    def test_backends_base_re_exports(self) -> None:
        from pluginsdk.backends import base

        assert (base.Limits, base.DEFAULT_LIMITS, base.ISOLATION_LEVELS, base.Incident) == (
            Limits,
            DEFAULT_LIMITS,
            ISOLATION_LEVELS,
            Incident,
        )

    def test_statuses(self) -> None:
        from pluginsdk import discovery

        assert {"available", "incompatible", "failed", "loaded", "disabled", "unavailable"} == set(STATUSES)
        assert (discovery.AVAILABLE, discovery.INCOMPATIBLE, discovery.FAILED) == STATUSES[:3]

    def test_backend_options_from_mapping(self) -> None:
        options = BackendOptions.from_mapping(
            {"sys_path": ["/a", "/b"], "wasm_interpreter": None, "wasm_packages": ["x"], "prewarm": True}
        )
        assert BackendOptions(sys_path=("/a", "/b"), wasm_packages=("x",), prewarm=True) == options
        with pytest.raises(ConfigError, match="wasm_pkgs"):
            BackendOptions.from_mapping({"wasm_pkgs": []})

    def test_config_is_a_leaf(self) -> None:
        """config imports the standard library and _errors only: every part may import it."""
        script = (
            "import sys; before = set(sys.modules); import pluginsdk.config; new = set(sys.modules) - before; "
            "print(sorted(m for m in new if m.startswith('pluginsdk'))); "
            "print(sorted(m for m in new if m.split('.')[0] in {'attrs', 'attr', 'cattrs', 'packaging', 'pluggy'}))"
        )
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        assert ["['pluginsdk', 'pluginsdk._errors', 'pluginsdk._markers', 'pluginsdk.config']", "[]"] == (
            out.splitlines()
        )

    def test_manifest_does_not_import_backends(self) -> None:
        script = "import sys, pluginsdk.manifest; print(any(m.startswith('pluginsdk.backends') for m in sys.modules))"
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        assert "False" == out.strip()
