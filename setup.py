"""The one C extension of apt-viz: the CPU kernel of the entropy scorer (apt_viz/core/_cellhist.c).

Everything else is declared in pyproject.toml. The extension is optional: where no C compiler is
found, the install goes on without it and the scorer runs its torch path, which gives the same
numbers more slowly (docs/performance.md).
"""
import sys

from setuptools import Extension, setup

# No fused multiply-add: the gray value must be rounded after every product and sum, as torch does.
COMPILE_ARGS = [] if sys.platform == "win32" else ["-O3", "-ffp-contract=off", "-fno-fast-math"]

setup(
    ext_modules=[
        Extension("apt_viz.core._cellhist", ["apt_viz/core/_cellhist.c"], extra_compile_args=COMPILE_ARGS,
                  optional=True),
    ],
)
