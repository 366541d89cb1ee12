"""The ``qx-actors`` command: kept at this path for ``qx_actors.cli:main`` (the console script)
and ``python -m qx_actors.cli``; the command itself is the application's,
:mod:`qx_actors.app.cli`."""

from __future__ import annotations

import sys

from qx_actors.app.cli import build_parser as build_parser
from qx_actors.app.cli import main as main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
