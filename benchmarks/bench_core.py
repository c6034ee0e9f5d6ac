"""Benchmark of the numeric core: importance maps and patch selection on one 1008x1008 photo.

    python benchmarks/bench_core.py                         # CPU, 2 threads, batch 1
    python benchmarks/bench_core.py --device cuda --batch 8 # GPU figure (exits 0 when there is no GPU)

Time: median over ``--repeats`` calls after ``--warmup`` calls. Extra peak memory: on the CPU, each
case runs in a fresh subprocess whose peak RSS is reset (``/proc/self/clear_refs``) after a warm-up
call, so the figure is the resident memory one call adds on top of its inputs (glibc's mmap threshold
is fixed so freed buffers really leave the process); on CUDA, ``torch.cuda.max_memory_allocated``
over one call minus what was allocated before it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = REPO_ROOT / "test_img" / "astronaut.jpg"
SCORER_CASES = ("entropy", "laplacian", "upsample_mse")
SELECTION_CASES = ("v1", "v2", "budget")
SELECTION_ALPHA = {"v1": 1.0, "v2": 1.0, "budget": 0.3}
# (device, case) -> (time ms, extra memory MB); the targets.
TARGETS = {
    ("cpu", "entropy"): (15.0, 100.0),
    ("cpu", "budget"): (10.0, None),
    ("cuda", "entropy"): (1.5, 600.0),
}
MB = 1024 * 1024


def build_images(image_path: Path, size: int, batch: int, device: str):
    """The photo, RGB, BICUBIC-resized to ``size`` x ``size``, as a (batch, 3, size, size) tensor in [0, 255]."""
    from PIL import Image

    from apt_viz.imaging import load_image, pil_to_tensor

    image = load_image(image_path).resize((size, size), resample=Image.Resampling.BICUBIC)
    return pil_to_tensor(image).to(device).repeat(batch, 1, 1, 1).contiguous()


def make_case(case: str, images) -> Callable[[], Any]:
    """A no-argument call that runs ``case`` on ``images``; selection cases get entropy maps made here."""
    from apt_viz.core.scoring import compute_importance_maps
    from apt_viz.core.selection import select_patches

    if case in SCORER_CASES:
        return lambda: compute_importance_maps(images, case)
    maps = compute_importance_maps(images, "entropy")
    image_size = tuple(images.shape[-2:])
    return lambda: select_patches(maps, case, alpha=SELECTION_ALPHA[case], image_size=image_size)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def median_ms(call: Callable[[], Any], device: str, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        call()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def cuda_extra_peak_mb(call: Callable[[], Any]) -> float | None:
    import torch

    from apt_viz.bench.memory import peak_memory_mb

    return peak_memory_mb(call, torch.device("cuda"))


def probe_cpu_extra_peak_mb(args: argparse.Namespace) -> float | None:
    """Run in a fresh subprocess: the peak RSS one call of ``args.probe`` adds (MB)."""
    import torch

    from apt_viz.bench.memory import peak_memory_mb

    torch.set_num_threads(args.threads)
    images = build_images(args.image, args.size, args.batch, "cpu")
    call = make_case(args.probe, images)
    call()  # warm-up (result dropped at once): thread pools, lazy initialisation, code pages
    return peak_memory_mb(call, torch.device("cpu"))


def cpu_extra_peak_mb(case: str, args: argparse.Namespace) -> float | None:
    """Peak RSS added by one call, measured in a fresh subprocess; None where /proc is not available."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    command = [
        sys.executable, __file__, "--probe", case, "--image", str(args.image), "--size", str(args.size),
        "--batch", str(args.batch), "--threads", str(args.threads),
    ]
    # A fixed mmap threshold turns glibc's adaptive one off: every large buffer is mapped on allocation
    # and unmapped on free, so a freed warm-up buffer cannot hide the next call's page faults.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe for {case} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["extra_peak_mb"]


def _verdict(device: str, case: str, ms: float, mb: float | None) -> str:
    target = TARGETS.get((device, case))
    if target is None:
        return ""
    target_ms, target_mb = target
    if target_mb is not None and mb is None:  # --no-memory: judge the time alone, and say so
        return f"{'meets' if ms <= target_ms else 'MISSES'} time target (<= {target_ms:g} ms; memory not measured)"
    ok = ms <= target_ms and (target_mb is None or mb <= target_mb)
    limit = f"<= {target_ms:g} ms" + (f", <= {target_mb:g} MB" if target_mb is not None else "")
    return f"{'meets' if ok else 'MISSES'} target ({limit})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (exits 0 with a message when CUDA is absent)")
    parser.add_argument("--batch", type=int, default=1, help="images per call (copies of the photo)")
    parser.add_argument("--size", type=int, default=1008, help="side of the square test image in pixels")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="photo to resize and score")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--cases", default=",".join(SCORER_CASES + SELECTION_CASES),
                        help="comma-separated subset of " + ", ".join(SCORER_CASES + SELECTION_CASES))
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: the memory subprocess
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(SCORER_CASES + SELECTION_CASES))
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}")
    if args.batch < 1 or args.size < 14 or args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--batch, --threads and --repeats must be >= 1, --size >= 14, --warmup >= 0")
    if not args.image.is_file():
        parser.error(f"{args.image}: no such file")
    args.cases = cases
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        print(json.dumps({"extra_peak_mb": probe_cpu_extra_peak_mb(args)}))
        return 0

    import torch

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"bench_core: --device {device} asked for, but no CUDA device is available here; nothing to measure.")
        return 0
    if device != "cpu" and not device.startswith("cuda"):
        print(f"bench_core: unknown device {device!r}; use cpu or cuda", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    images = build_images(args.image, args.size, args.batch, device)
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"CPU, {args.threads} threads"
    print(f"bench_core: {args.image.name} resized to {args.size}x{args.size}, batch {args.batch}, {where}, "
          f"torch {torch.__version__}")
    print(f"input {images.numel() * images.element_size() / MB:.1f} MB; median of {args.repeats} after "
          f"{args.warmup} warm-up; memory = extra peak of one call")
    print(f"{'case':<14}{'median ms':>11}{'extra MB':>10}  target")
    for case in args.cases:
        call = make_case(case, images)
        ms = median_ms(call, device, args.warmup, args.repeats)
        if args.no_memory:
            mb = None
        elif device.startswith("cuda"):
            mb = cuda_extra_peak_mb(call)
        else:
            mb = cpu_extra_peak_mb(case, args)
        label = case if case in SCORER_CASES else f"select {case}"
        shown_mb = f"{mb:10.2f}" if mb is not None else f"{'n/a':>10}"
        print(f"{label:<14}{ms:11.3f}{shown_mb}  {_verdict('cuda' if device != 'cpu' else 'cpu', case, ms, mb)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing
    sys.exit(main())
