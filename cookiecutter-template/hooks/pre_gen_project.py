"""Reject bad input before any file is written, with a message that says how to fix it.

Cookiecutter renders this file with Jinja first; every value goes through
``py_str`` so quotes or backslashes in the answers cannot break this script.
"""

from __future__ import annotations

import keyword
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
GROUP = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
SPECIFIER_CLAUSE = re.compile(r"\s*(~=|===|==|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*")
VERSION = re.compile(r"\d+(\.\d+)*([abc]|rc|\.dev|\.post)?\d*")
EMAIL = re.compile(r"[^@\s\"<>]+@[^@\s\"<>]+")
RESERVED = {"pluginsdk", "pluggy", "test", "tests", "src"}


def problems(v: dict[str, str]) -> list[str]:
    """Every problem with the answers, one line each (empty when all is well)."""
    out: list[str] = []
    if not ENTRY_POINT_NAME.fullmatch(v["plugin_name"]):
        out.append(
            f"plugin_name {v['plugin_name']!r}: use ASCII letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (e.g. 'keywords')"
        )
    if not DIST_NAME.fullmatch(v["spec_name"]):
        out.append(f"spec_name {v['spec_name']!r} is not a valid project name (e.g. 'leakscan')")
    if not DIST_NAME.fullmatch(v["project_slug"]):
        out.append(
            f"project_slug {v['project_slug']!r} is not a valid distribution name: use ASCII "
            "letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    pkg = v["package_name"]
    if not PACKAGE.fullmatch(pkg) or keyword.iskeyword(pkg):
        out.append(
            f"package_name {pkg!r} is not a valid import name: use lower-case ASCII letters, "
            "digits and '_', not starting with a digit, and not a Python keyword"
        )
    elif pkg in sys.stdlib_module_names or pkg in RESERVED or pkg == v["spec_name"].replace("-", "_"):
        out.append(f"package_name {pkg!r} would shadow an existing module; pick another name")
    if v["isolation"] not in ISOLATION_LEVELS:
        out.append(f"isolation {v['isolation']!r} must be one of: {', '.join(ISOLATION_LEVELS)}")
    clauses = v["spec_requires"].split(",")
    if not v["spec_requires"].strip() or not all(SPECIFIER_CLAUSE.fullmatch(c) for c in clauses):
        out.append(
            f"spec_requires {v['spec_requires']!r} is not a PEP 440 version specifier (e.g. '>=1.0,<2')"
        )
    if not SPEC_IMPORT.fullmatch(v["spec_import"]):
        out.append(f"spec_import {v['spec_import']!r} must look like 'package.module:ATTRIBUTE'")
    if not v["host_requirement"].strip() or any(c in v["host_requirement"] for c in "\"'\n\\"):
        out.append(f"host_requirement {v['host_requirement']!r} must be a pip requirement (e.g. 'leakscan')")
    if not GROUP.fullmatch(v["entry_point_group"]):
        out.append(f"entry_point_group {v['entry_point_group']!r} is not a valid entry-point group")
    if not IDENTIFIER.fullmatch(v["hook_name"]) or keyword.iskeyword(v["hook_name"]):
        out.append(f"hook_name {v['hook_name']!r} must be a Python identifier")
    args = [a.strip() for a in v["hook_args"].split(",") if a.strip()]
    if not all(IDENTIFIER.fullmatch(a) and not keyword.iskeyword(a) for a in args) or len(set(args)) != len(args):
        out.append(f"hook_args {v['hook_args']!r} must be distinct Python identifiers separated by commas")
    if not VERSION.fullmatch(v["version"]):
        out.append(f"version {v['version']!r} is not a PEP 440 version (e.g. '0.1.0')")
    if v["author_email"] and not EMAIL.fullmatch(v["author_email"]):
        out.append(f"author_email {v['author_email']!r} is not an e-mail address")
    if "\n" in v["description"] or "\r" in v["description"]:
        out.append("description must fit on one line")
    return out


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
