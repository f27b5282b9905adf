"""Tests for the {{ cookiecutter.plugin_name | md_line }} plugin.

``plugin_host`` and ``isolation`` come from ``pluginsdk.testing`` (a pytest
plugin installed with pluginsdk): each test that uses them runs once per
isolation level, against this plugin as installed, so passing proves the
plugin behaves the same in-process, in a worker process and in the sandbox.
Install the project first: ``pip install -e .[test]``.
"""

from __future__ import annotations
{%- set is_scan = cookiecutter.hook_name == "scan_lines" and cookiecutter.hook_args.replace(" ", "") == "lines" %}
{%- set args = cookiecutter.hook_args.split(",") | map("trim") | reject("equalto", "") | list %}

from pluginsdk import Host

import {{ cookiecutter.package_name }}

PLUGIN = {{ cookiecutter.plugin_name | py_str }}
{%- if is_scan %}
LINES = [
    "nothing to see here",
    "Status: CONFIDENTIAL - internal only",
    "",
]
EXPECTED = [
    {"line": 1, "start": 8, "end": 20, "rule": "keyword", "severity": "low"},
    {"line": 1, "start": 23, "end": 36, "rule": "keyword", "severity": "low"},
]


class TestFindKeywords:
    def test_finds_each_keyword_case_insensitively(self) -> None:
        """Every keyword is found wherever it is, whatever its case."""
        assert [(8, 20), (23, 36)] == {{ cookiecutter.package_name }}.find_keywords(LINES[1])

    def test_clean_line_has_no_findings(self) -> None:
        """A line without keywords yields nothing."""
        assert [] == {{ cookiecutter.package_name }}.find_keywords(LINES[0])
{%- else %}
# Replace with real arguments for the hook, and the answer you expect.
KWARGS = { {%- for a in args %}{{ a | py_str }}: {{ ("value of " ~ a) | py_str }}{% if not loop.last %}, {% endif %}{% endfor -%} }
EXPECTED = None  # the example implementation gives no answer yet
{%- endif %}


class TestPackage:
    def test_imports_without_a_host(self) -> None:
        """The package imports on its own (as it will in a worker or the sandbox)."""
        assert {{ cookiecutter.version | py_str }} == {{ cookiecutter.package_name }}.__version__


class TestPluginInHost:
    def test_host_discovers_plugin_at_requested_level(self, plugin_host: Host, isolation: str) -> None:
        """The host finds the installed plugin and runs it at the level under test."""
        info = {p.name: p for p in plugin_host.plugins()}[PLUGIN]
        assert (isolation, ("{{ cookiecutter.hook_name }}",)) == (info.isolation, tuple(info.hooks))

    def test_hook_result_is_the_same_at_every_level(self, plugin_host: Host) -> None:
        """Called through the host, the hook returns exactly what the plugin computes."""
{%- if is_scan %}
        assert EXPECTED == plugin_host.hook.scan_lines.by_plugin(lines=LINES)[PLUGIN]
{%- else %}
        results = plugin_host.hook.{{ cookiecutter.hook_name }}.by_plugin(**KWARGS)
        # The plugin is loaded on its first call; a None answer is left out of the results.
        assert ("loaded", EXPECTED) == (plugin_host.plugin(PLUGIN).status, results.get(PLUGIN))
{%- endif %}
{%- if is_scan %}

    def test_batch_of_batches_crosses_once(self, plugin_host: Host) -> None:
        """``map`` sends several batches in one call and returns one result per batch."""
        results = plugin_host.hook.scan_lines.map([{"lines": LINES}, {"lines": ["clean"]}])
        assert [[EXPECTED], [[]]] == results
{%- endif %}
