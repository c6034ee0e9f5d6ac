"""CLI wall-clock benchmark, each figure measured as users see it (a fresh interpreter per command).

    python benchmarks/bench_cli.py [--repeat 3] [--images 20] [--workers 2]

Prints five figures (best of ``--repeat``) against their targets:
  1. ``apt-viz --help``                                     target <= 0.5 s
  2. one ~1 MP image, all artifacts, interpreter included    target <= 3 s, and <= 1.3x the time
     of ``python -c "import torch"`` measured in the same run (the floor every run pays)
  3. a folder of N such images, ``--workers 2``              target >= 4 images/s
  4. the same folder, ``--stats-only``                       target >= 20 images/s
Folder throughput is images / wall time of the whole command (interpreter start included); the
rate after start-up (interpreter + CLI + torch import, measured on its own) is printed below it.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "apt_viz"]


def best_seconds(command: list[str], repeat: int) -> float:
    """Best wall time of ``command`` over ``repeat`` runs (fails loudly on a non-zero exit)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best


def wall(args: list[str], repeat: int) -> float:
    """Best wall time of ``apt-viz args``."""
    return best_seconds([*COMMAND, *args], repeat)


def startup_seconds(repeat: int) -> float:
    """What every run pays before its first image: the interpreter, the CLI and torch."""
    return best_seconds([sys.executable, "-c", "import apt_viz.cli, apt_viz.analysis"], repeat)


def import_torch_seconds(repeat: int) -> float:
    """``python -c "import torch"``: what any torch program pays before its first line."""
    return best_seconds([sys.executable, "-c", "import torch"], repeat)


def make_images(folder: Path, count: int) -> Path:
    """``count`` distinct ~1 MP JPEGs (1232 x 812 after smart_resize) made from the test photos."""
    folder.mkdir(parents=True)
    photos = sorted((REPO / "test_img").glob("*.jpg"))
    for index in range(count):
        with Image.open(photos[index % len(photos)]) as photo:
            image = photo.convert("RGB").resize((1224, 816), Image.Resampling.BICUBIC)
        image.rotate(index * 7, expand=False).save(folder / f"img{index:02d}.jpg", quality=92)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        folder = make_images(root / "in", options.images)
        single = folder / "img00.jpg"
        out = root / "out"
        common = ["--device", "cpu", "-q", "-o", str(out)]

        def fresh(args: list[str]) -> list[str]:
            shutil.rmtree(out, ignore_errors=True)
            return args

        help_s = wall(["--help"], options.repeat)
        torch_s = import_torch_seconds(options.repeat)
        one_s = min(wall(fresh([str(single), *common]), 1) for _ in range(options.repeat))
        folder_s = min(
            wall(fresh([str(folder), *common, "--workers", str(options.workers)]), 1) for _ in range(options.repeat)
        )
        stats_s = min(
            wall(fresh([str(folder), *common, "--stats-only", "--workers", str(options.workers)]), 1)
            for _ in range(options.repeat)
        )

    n = options.images
    fixed = startup_seconds(options.repeat)
    print(f"apt-viz --help                           {help_s:6.2f} s        (target <= 0.5 s)")
    print(f"1 MP image, all artifacts                {one_s:6.2f} s        (target <= 3 s)")
    print(f"  ... against python -c 'import torch'   {one_s / torch_s:6.2f}x       "
          f"({torch_s:.2f} s; target <= 1.3x)")
    print(f"{n} x 1 MP, --workers {options.workers}                  "
          f"{n / folder_s:6.2f} images/s ({folder_s:.2f} s; target >= 4 images/s)")
    print(f"{n} x 1 MP, --stats-only --workers {options.workers}     "
          f"{n / stats_s:6.2f} images/s ({stats_s:.2f} s; target >= 20 images/s)")
    print(f"  (start-up: interpreter + CLI + torch import {fixed:.2f} s; after it: "
          f"{n / max(folder_s - fixed, 1e-9):.1f} images/s with artifacts, "
          f"{n / max(stats_s - fixed, 1e-9):.1f} images/s stats-only)")


if __name__ == "__main__":
    main()
