"""Reject bad input before any file is written, with a message that says how to fix it.

Cookiecutter renders this file with Jinja first; every value goes through
``py_str`` so quotes or backslashes in the answers cannot break this script.
"""

from __future__ import annotations

import keyword
import os
import re
import sys

VALUES = {
    "plugin_name": {{ cookiecutter.plugin_name | py_str }},
    "description": {{ cookiecutter.description | py_str }},
    "author_name": {{ cookiecutter.author_name | py_str }},
    "author_email": {{ cookiecutter.author_email | py_str }},
    "spec_name": {{ cookiecutter.spec_name | py_str }},
    "project_slug": {{ cookiecutter.project_slug | py_str }},
    "package_name": {{ cookiecutter.package_name | py_str }},
    "isolation": {{ cookiecutter.isolation | py_str }},
    "spec_requires": {{ cookiecutter.spec_requires | py_str }},
    "spec_import": {{ cookiecutter.spec_import | py_str }},
    "host_dist": {{ cookiecutter.host_dist | py_str }},
    "sdk_requirement": {{ cookiecutter.sdk_requirement | py_str }},
    "host_requirement": {{ cookiecutter.host_requirement | py_str }},
    "entry_point_group": {{ cookiecutter.entry_point_group | py_str }},
    "hook_name": {{ cookiecutter.hook_name | py_str }},
    "hook_args": {{ cookiecutter.hook_args | py_str }},
    "version": {{ cookiecutter.version | py_str }},
}

ISOLATION_LEVELS = ("inprocess", "process", "wasm")
# PEP 508 distribution name; the spec name follows the same rule.
DIST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
# Lower-case, ASCII-only import names: the one form every filesystem and tool agrees on.
PACKAGE = re.compile(r"[a-z_][a-z0-9_]*")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENTRY_POINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
SPEC_IMPORT = re.compile(rf"{DOTTED}:{DOTTED}")
# What pip can install on every supported Python (on 3.10 it reads entry points with pkg_resources).
GROUP = re.compile(r"\w+(\.\w+)*")
SPECIFIER_CLAUSE = re.compile(r"\s*(~=|===|==|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*")
VERSION = re.compile(r"\d+(\.\d+)*([abc]|rc|\.dev|\.post)?\d*")
EMAIL = re.compile(r"[^@\s\"<>]+@[^@\s\"<>]+")
RESERVED = {"pluginsdk", "pluggy", "test", "tests", "src"}
SDK_DIST = "pluginsdk-isolated"
# Names on PyPI that belong to other projects, and what ours are called instead.
NOT_OURS = {"pluginsdk": SDK_DIST, "leakscan": "pluginsdk-leakscan"}
# Long enough for any real name; short enough that the project directory, the wheel and the
# dist-info names stay within the 255-byte file-name limit.  project_slug's limit is MAX_SLUG in
# local_extensions.py (the project directory is cut to it).
MAX_LENGTH = {"plugin_name": 64, "spec_name": 64, "project_slug": 100, "package_name": 100}
# Answers cookiecutter.json derives from others when not given: a bad source answer is reported
# once, not again for each answer made from it.
SOURCES = {
    "project_slug": ("plugin_name", "spec_name"),
    "package_name": ("project_slug",),
    "spec_import": ("spec_name",),
    "entry_point_group": ("spec_name",),
    "host_dist": ("spec_name",),
    "host_requirement": ("host_dist",),
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def derived(v: dict[str, str]) -> dict[str, str]:
    """What cookiecutter.json makes of each answer in ``SOURCES`` (kept in step with it)."""
    return {
        "project_slug": f"{v['spec_name']}-{v['plugin_name'].lower().replace('_', '-').replace(' ', '-')}",
        "package_name": v["project_slug"].lower().replace("-", "_").replace(".", "_").replace(" ", "_"),
        "spec_import": f"{v['spec_name'].replace('-', '_')}.spec:SPEC",
        "entry_point_group": f"{v['spec_name']}.plugins",
        "host_dist": NOT_OURS["leakscan"] if v["spec_name"] == "leakscan" else "",
        "host_requirement": v["host_dist"],
    }


def source_problem(key: str, value: str, dist: str) -> str | None:
    """What is wrong with ``value`` as where the tests get ``dist``: a local path or a requirement."""
    example = "a path to its source, or its name on an index where its authors publish it"
    if not value.strip() or any(c in value for c in "\"'\n\\"):
        return f"{key} {value!r} must be {example}"
    path = re.sub(r"\[[A-Za-z0-9_,.\s-]*\]$", "", value)  # a path may carry extras: ../pluginsdk[wasm]
    if path.startswith((".", "/", "~")) or os.sep in path or os.path.isdir(path):
        # The hook runs in the new project's directory: relative paths are relative to it, as for pip there.
        try:
            with open(os.path.join(path, "pyproject.toml"), encoding="utf-8") as f:
                found = re.search(r'^name\s*=\s*"([^"]+)"', f.read(), re.M)
        except OSError:
            return f"{key} {value!r}: no project at {os.path.abspath(path)} (no pyproject.toml there)"
        if found is None or normalize(found.group(1)) != normalize(dist):
            holds = repr(found.group(1)) if found else "no project name"
            return f"{key} {value!r}: {os.path.abspath(path)} holds {holds}, not {dist!r}"
        return None
    name = re.sub(r"[^A-Za-z0-9._-].*", "", value, flags=re.S)  # up to extras, version or marker
    if normalize(name) != normalize(dist):
        return f"{key} {value!r} names {name!r}, not {dist!r}: give {example}"
    return None


def problems(v: dict[str, str]) -> list[str]:
    """Every problem with the answers, one line each (empty when all is well)."""
    found: dict[str, str] = {}
    for key, limit in MAX_LENGTH.items():
        if len(v[key]) > limit:
            found[key] = f"{key} is {len(v[key])} characters long ({v[key][:24]!r}...); use at most {limit}"
    if "plugin_name" not in found and not ENTRY_POINT_NAME.fullmatch(v["plugin_name"]):
        found["plugin_name"] = (
            f"plugin_name {v['plugin_name']!r}: use ASCII letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (e.g. 'keywords')"
        )
    if "spec_name" not in found and not DIST_NAME.fullmatch(v["spec_name"]):
        found["spec_name"] = (
            f"spec_name {v['spec_name']!r} is not a valid project name: use ASCII letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit (e.g. 'leakscan' or 'text-kit')"
        )
    if "project_slug" not in found and not DIST_NAME.fullmatch(v["project_slug"]):
        found["project_slug"] = (
            f"project_slug {v['project_slug']!r} is not a valid distribution name: use ASCII "
            "letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    pkg = v["package_name"]
    if "package_name" in found:
        pass
    elif not PACKAGE.fullmatch(pkg) or keyword.iskeyword(pkg):
        found["package_name"] = (
            f"package_name {pkg!r} is not a valid import name: use lower-case ASCII letters, "
            "digits and '_', not starting with a digit, and not a Python keyword"
        )
    elif pkg in sys.stdlib_module_names or pkg in RESERVED or pkg == re.sub(r"[-.]", "_", v["spec_name"]):
        found["package_name"] = f"package_name {pkg!r} would shadow an existing module; pick another name"
    if v["isolation"] not in ISOLATION_LEVELS:
        found["isolation"] = f"isolation {v['isolation']!r} must be one of: {', '.join(ISOLATION_LEVELS)}"
    clauses = v["spec_requires"].split(",")
    if not v["spec_requires"].strip() or not all(SPECIFIER_CLAUSE.fullmatch(c) for c in clauses):
        found["spec_requires"] = (
            f"spec_requires {v['spec_requires']!r} is not a PEP 440 version specifier (e.g. '>=1.0,<2')"
        )
    if not SPEC_IMPORT.fullmatch(v["spec_import"]):
        found["spec_import"] = f"spec_import {v['spec_import']!r} must look like 'package.module:ATTRIBUTE'"
    host = v["host_dist"]
    if not host:
        found["host_dist"] = (
            "host_dist is empty: give the host's distribution name, as its authors publish it "
            "(the name in its pyproject.toml)"
        )
    elif not DIST_NAME.fullmatch(host):
        found["host_dist"] = f"host_dist {host!r} is not a valid distribution name"
    elif normalize(host) in NOT_OURS:
        found["host_dist"] = (
            f"host_dist {host!r} is an unrelated project on PyPI; this SDK's reference host is "
            f"{NOT_OURS['leakscan']!r}"
        )
    for key, dist in (("sdk_requirement", SDK_DIST), ("host_requirement", host)):
        problem = source_problem(key, v[key], dist)
        if problem is not None:
            found[key] = problem
    if not GROUP.fullmatch(v["entry_point_group"]):
        found["entry_point_group"] = (
            f"entry_point_group {v['entry_point_group']!r} is not an entry-point group pip can install everywhere"
            " (pip on Python 3.10 refuses anything but dotted words): use letters, digits, _ and dots"
        )
    if not IDENTIFIER.fullmatch(v["hook_name"]) or keyword.iskeyword(v["hook_name"]):
        found["hook_name"] = f"hook_name {v['hook_name']!r} must be a Python identifier"
    args = [a.strip() for a in v["hook_args"].split(",") if a.strip()]
    if not all(IDENTIFIER.fullmatch(a) and not keyword.iskeyword(a) for a in args) or len(set(args)) != len(args):
        found["hook_args"] = f"hook_args {v['hook_args']!r} must be distinct Python identifiers separated by commas"
    if not VERSION.fullmatch(v["version"]):
        found["version"] = f"version {v['version']!r} is not a PEP 440 version (e.g. '0.1.0')"
    if v["author_email"] and not EMAIL.fullmatch(v["author_email"]):
        found["author_email"] = f"author_email {v['author_email']!r} is not an e-mail address"
    if "\n" in v["description"] or "\r" in v["description"]:
        found["description"] = "description must fit on one line"
    # An answer left to its default inherits a bad source's problem: say it once, at the source.
    bad = set(found)
    defaults = derived(v)
    for key, sources in SOURCES.items():  # in dependency order
        if v[key] == defaults[key] and bad.intersection(sources):
            bad.add(key)
            found.pop(key, None)
    return list(found.values())


def main() -> int:
    found = problems(VALUES)
    if not found:
        return 0
    print("ERROR: cannot generate the plugin project:", file=sys.stderr)
    for line in found:
        print(f"  - {line}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
