"""Developer tasks: ``nox`` runs the tests and ``pluginsdk check``.

The SDK (distribution ``pluginsdk-isolated``) and the host (pluginsdk-leakscan)
come from where this project was told to get them when it was made: a local
path, or a name on an index where its authors publish it.  Set
``PLUGINSDK_REQUIREMENT`` or ``HOST_REQUIREMENT`` to use other copies, for
example ``PLUGINSDK_REQUIREMENT="-e ../pluginsdk[wasm]" nox``.
"""

from __future__ import annotations

import os
import shlex

import nox

nox.options.sessions = ["tests", "check"]


def _requirement(variable: str, default: str) -> list[str]:
    """pip arguments from ``variable`` (shell-split), else ``default`` as one argument (a path may hold spaces)."""
    value = os.environ.get(variable)
    return shlex.split(value) if value else [default]


SDK = _requirement("PLUGINSDK_REQUIREMENT", "/work/wt-h[wasm]")
HOST = _requirement("HOST_REQUIREMENT", "/work/wt-h/reference-plugins/leakscan")


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
