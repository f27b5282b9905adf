"""The marker plugin code uses: ``from pluginsdk import hookimpl``.

Guest-safe: imported inside worker processes and the WASM sandbox, so it
depends on pluggy alone.  Every host spec shares one pluggy project name, so
one marker serves plugins of every host.
"""

from __future__ import annotations

import pluggy

PROJECT = "pluginsdk"

hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marks a function of a plugin module as the implementation of a hook."""
