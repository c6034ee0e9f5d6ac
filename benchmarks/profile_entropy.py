"""Where the CPU entropy maps of one photo spend their time, stage by stage (docs/performance.md).

    python benchmarks/profile_entropy.py                 # the 1008x1008 photo of bench_core.py, float32
    python benchmarks/profile_entropy.py --uint8         # as stats scores it (uint8 pixels)
    APT_VIZ_NATIVE=0 python benchmarks/profile_entropy.py   # the torch path instead of the C kernel

Each stage function of apt_viz/core/_entropy.py is wrapped in a timer and the whole
``entropy_maps`` runs ``--calls`` times on one thread after 5 warm-up calls; the table gives the
median and the minimum per call of every stage. The minimum is the figure least disturbed by other
work on a shared machine. With the C kernel, ``base_counts`` is one kernel call and
``native_entropy`` the lookups with their ``torch.sum``; on the torch path, ``scatter and the rest``
is base_counts less its levels and keys (the scatter-add, zeroing the counts, and the loop).
"""
from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import DEFAULT_IMAGE, build_images

STAGES = ("gray_levels", "_keys", "base_counts", "merge_children", "native_entropy", "pair_entropy", "dense_entropy")
SHOWN = {True: ("total", "base_counts", "merge_children", "native_entropy", "the rest"),
         False: ("total", "gray_levels", "_keys", "scatter and the rest", "merge_children", "pair_entropy",
                 "dense_entropy", "the rest")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--size", type=int, default=1008)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--uint8", action="store_true", help="score uint8 pixels, as stats does")
    args = parser.parse_args(argv)

    import torch

    from apt_viz.core import _entropy

    torch.set_num_threads(1)
    images = build_images(args.image, args.size, 1, "cpu")
    if args.uint8:
        images = images.round().clamp(0, 255).to(torch.uint8)
    spent: dict[str, float] = collections.defaultdict(float)

    def timed(name: str):  # type: ignore[no-untyped-def]
        stage = getattr(_entropy, name)

        def call(*a, **k):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return stage(*a, **k)
            finally:
                spent[name] += time.perf_counter() - start
        return call

    for name in STAGES:  # the module looks its stages up by name at call time
        setattr(_entropy, name, timed(name))
    runs = []
    for index in range(5 + args.calls):
        spent.clear()
        start = time.perf_counter()
        _entropy.entropy_maps(images, 14, 3, 512, 1e6)
        total = time.perf_counter() - start
        if index >= 5:
            outer = spent["base_counts"] + spent["merge_children"] + sum(
                spent[name] for name in ("native_entropy", "pair_entropy", "dense_entropy"))
            runs.append({"total": total, **spent, "the rest": total - outer,
                         "scatter and the rest": spent["base_counts"] - spent["gray_levels"] - spent["_keys"]})
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    path = "C kernel" if _entropy.native_kernel() else "torch ops"
    print(f"{args.image.name} {args.size}x{args.size} {'uint8' if args.uint8 else 'float32'}, {path}, 1 thread, "
          f"{args.calls} calls; load average {load}")
    print(f"{'stage':<24}{'median ms':>10}{'min ms':>10}")
    for name in SHOWN[_entropy.native_kernel()]:
        values = [run.get(name, 0.0) * 1e3 for run in runs]
        print(f"{name:<24}{statistics.median(values):10.3f}{min(values):10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
