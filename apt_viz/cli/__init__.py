"""The ``apt-viz`` command line: a thin Typer layer over the library (one module per command)."""
from __future__ import annotations

from . import bench, compare, eval, run, stats, sweep  # noqa: F401 - each module registers its command on app
from .app import EXIT_FAILURES, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, app, main, route

__all__ = ["EXIT_FAILURES", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "app", "main", "route"]
