"""Developer tasks: ``nox`` runs the tests and ``pluginsdk check``.

The SDK and the host come from PyPI by default; point these variables at
local copies to test against unreleased versions, for example
``PLUGINSDK_REQUIREMENT="-e ../pluginsdk[wasm]" nox``.
"""

from __future__ import annotations

import os
import shlex

import nox

nox.options.sessions = ["tests", "check"]

SDK = shlex.split(os.environ.get("PLUGINSDK_REQUIREMENT", "pluginsdk[wasm]"))
HOST = shlex.split(os.environ.get("HOST_REQUIREMENT", {{ cookiecutter.host_requirement | py_str }}))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the plugin's tests under every isolation level."""
    session.install(*SDK)
    session.install(*HOST)
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def check(session: nox.Session) -> None:
    """Check the manifest against the code and the host's spec."""
    session.install(*SDK)
    session.install(*HOST)
    session.install(".")
    session.run("pluginsdk", "check", ".")
