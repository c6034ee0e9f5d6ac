#!/usr/bin/env python3
"""Run apt-viz from a checkout without installing it: ``python cli.py IMAGE [options]``.

When the running Python lacks apt-viz's dependencies, the checkout's ``.venv`` takes over
(``run_visualize.sh`` creates it).
"""
import os
import sys

REPO = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(REPO, ".venv")
VENV_PYTHON = os.path.join(VENV, "bin", "python")

sys.path.insert(0, REPO)

try:
    from apt_viz.cli import main
except ModuleNotFoundError as exc:
    if os.path.exists(VENV_PYTHON) and os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        os.execv(VENV_PYTHON, [VENV_PYTHON, os.path.abspath(__file__), *sys.argv[1:]])
    sys.exit(f"apt-viz: missing dependency ({exc.name}); install with the README's line or use run_visualize.sh")

if __name__ == "__main__":
    main()
