"""leakscan: a log and text scanner for secrets and personal data, whose rules are plugins.

The reference host application of pluginsdk.  Its plugins implement the
hooks of :data:`leakscan.spec.SPEC` and are found through the
``leakscan.plugins`` entry-point group.
"""

from __future__ import annotations

__version__ = "1.1.0"
