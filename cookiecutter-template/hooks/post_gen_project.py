"""Tell the author what was made and what to do next."""

from __future__ import annotations

SLUG = {{ cookiecutter.project_slug | py_str }}
PACKAGE = {{ cookiecutter.package_name | py_str }}
SPEC = {{ cookiecutter.spec_name | py_str }}
ISOLATION = {{ cookiecutter.isolation | py_str }}

print(
    f"""
Created {SLUG}: a {SPEC} plugin that asks for isolation {ISOLATION!r}.

Next:
  cd {SLUG}
  pip install -e ".[test]"     # the plugin, pytest and the host
  pytest                       # its tests, at every isolation level
  pluginsdk check .            # manifest vs. code vs. the host's spec

Then edit src/{PACKAGE}/__init__.py (the hook) and tests/test_plugin.py.
"""
)
