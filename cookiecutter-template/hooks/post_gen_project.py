"""Tell the author what was made and what to do next."""

from __future__ import annotations

import shlex

SLUG = {{ cookiecutter.project_slug | py_str }}
PACKAGE = {{ cookiecutter.package_name | py_str }}
SPEC = {{ cookiecutter.spec_name | py_str }}
ISOLATION = {{ cookiecutter.isolation | py_str }}
# Where the SDK and the host come from (a path, or a name on an index where its authors publish it).
SDK_REQUIREMENT = {{ cookiecutter.sdk_requirement | py_str }}
HOST_REQUIREMENT = {{ cookiecutter.host_requirement | py_str }}

print(
    f"""
Created {SLUG}: a {SPEC} plugin that asks for isolation {ISOLATION!r}.

Next:
  cd {shlex.quote(SLUG)}
  pip install {shlex.quote(SDK_REQUIREMENT)} {shlex.quote(HOST_REQUIREMENT)} -e ".[test]"
                               # the SDK, the host, the plugin and pytest
  pytest                       # its tests, at every isolation level
  pluginsdk check .            # manifest vs. code vs. the host's spec

Then edit src/{PACKAGE}/__init__.py (the hook) and tests/test_plugin.py.
"""
)
