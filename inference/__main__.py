"""``python -m inference fit ...``: see :mod:`inference.cli`."""

from __future__ import annotations

import sys

from inference.cli import main

if __name__ == "__main__":
    sys.exit(main())
