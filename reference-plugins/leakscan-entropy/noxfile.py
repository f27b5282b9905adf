"""Developer tasks: ``nox`` runs the tests and ``pluginsdk check``.

The SDK (distribution ``pluginsdk-isolated``) and the host (``pluginsdk-leakscan``)
come from this checkout by default, so nothing is looked up by name on an
index (the plain names ``pluginsdk`` and ``leakscan`` on PyPI are other
people's projects).  Set ``PLUGINSDK_REQUIREMENT`` or ``HOST_REQUIREMENT`` to
test against other copies, for example ``PLUGINSDK_REQUIREMENT="-e ../../[wasm]" nox``.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import nox

nox.options.sessions = ["tests", "check"]

CHECKOUT = Path(__file__).resolve().parents[2]


def _requirement(variable: str, default: str) -> list[str]:
    """pip arguments from ``variable`` (shell-split), else ``default`` as one argument (a path may hold spaces)."""
    value = os.environ.get(variable)
    return shlex.split(value) if value else [default]


SDK = _requirement("PLUGINSDK_REQUIREMENT", f"{CHECKOUT}[wasm]")
HOST = _requirement("HOST_REQUIREMENT", str(CHECKOUT / "reference-plugins" / "leakscan"))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the plugin's tests under every isolation level."""
    session.install(*SDK, *HOST, "-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def check(session: nox.Session) -> None:
    """Check the manifest against the code and the host's spec."""
    session.install(*SDK, *HOST, ".")
    session.run("pluginsdk", "check", ".")
