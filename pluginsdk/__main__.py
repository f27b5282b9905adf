"""``python -m pluginsdk``: the same as the ``pluginsdk`` command."""

import sys

from .cli import main

sys.exit(main())
