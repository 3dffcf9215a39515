"""``python -m sharpcam``: the same as the ``sharpcam`` command."""

from __future__ import annotations

import sys

from sharpcam.cli import main

if __name__ == "__main__":
    sys.exit(main())
