"""Benchmark of ``apt-viz stats``: throughput against ``run --stats-only``, and memory against dataset size.

    python benchmarks/bench_stats.py                    # both parts on the CPU (about 5 minutes on 2 cores)
    python benchmarks/bench_stats.py --skip-memory      # throughput and entropy only
    python benchmarks/bench_stats.py --device cuda      # the GPU figures (exits 0 when there is no GPU)

1. Throughput: ``apt-viz stats DIR -o T.parquet --workers W`` and ``apt-viz run DIR --stats-only
   --workers W`` on the same ``--images`` photos of about 1 MP, each one command in a fresh
   interpreter, timed from start to exit (start-up included), for one budget alpha (target: stats
   >= 1.5x run) and for three (one ``stats`` pass against three ``run`` passes).
2. Entropy: one 1008x1008 photo after several allocation histories (a fresh interpreter each),
   contiguous and as an HWC view, median of 15 calls after one warm-up. Target: <= 10 ms.
3. Memory: peak RSS of ``stats`` on 1,000 and on 10,000 images (smaller photos, so that it takes
   minutes; memory is about how many images, not their size): the main process and the largest
   worker. Target: at most 200 MB apart.
4. ``--device cuda``: ``stats --device cuda`` and ``--device cpu`` on >= 1,000 photos of about 1 MP
   (target >= 400 images/s on the GPU), the card and core count, and the entropy and selection
   times of a batch of 8 (``bench_core.py``).

Photos are made from ``test_img/*.jpg`` (rotated, cropped, resized; four common sizes) in a
temporary folder that is deleted afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "apt_viz"]
PHOTO_SIZES = ((1224, 816), (816, 1224), (1008, 1008), (1280, 720))  # (width, height), about 1 MP
SMALL_SIZES = ((320, 240), (240, 320), (288, 288))
MB = 1024 * 1024

# Runs the CLI in-process and reports the peak RSS of this process and of its largest child (a worker).
RSS_DRIVER = """
import json, resource, sys
from apt_viz.cli import main
try:
    main(sys.argv[2:])
except SystemExit as exit:
    code = exit.code
finally:
    with open(sys.argv[1], "w") as report:
        json.dump({"main_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   "worker_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, report)
sys.exit(code)
"""


def make_photos(folder: Path, count: int, sizes: tuple[tuple[int, int], ...], quality: int = 90) -> Path:
    """``count`` distinct JPEGs from the test photos: rotated by a few degrees, cropped, resized."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sources = [Image.open(path).convert("RGB") for path in sorted((REPO / "test_img").glob("*.jpg"))]
    for index in range(count):
        source = sources[index % len(sources)]
        turned = source.rotate((index * 7) % 360, resample=Image.Resampling.BILINEAR)
        margin = (index % 5) * 4
        cropped = turned.crop((margin, margin, turned.width - margin, turned.height - margin))
        cropped.resize(sizes[index % len(sizes)], Image.Resampling.BILINEAR).save(
            folder / f"img{index:05d}.jpg", quality=quality)
    return folder


def timed(args: list[str]) -> float:
    """Wall time of ``apt-viz args`` in a fresh interpreter (fails loudly on an unexpected exit code)."""
    start = time.perf_counter()
    done = subprocess.run([*COMMAND, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise SystemExit(f"apt-viz {' '.join(args[:2])} ... failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return time.perf_counter() - start


def peak_rss(args: list[str], report: Path) -> tuple[float, float]:
    """(main, largest worker) peak RSS in MB of ``apt-viz args``."""
    done = subprocess.run([sys.executable, "-c", RSS_DRIVER, str(report), *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise SystemExit(f"apt-viz stats failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    figures = json.loads(report.read_text())
    return figures["main_kb"] / 1024, figures["worker_kb"] / 1024


# Entropy of one 1008x1008 photo after an allocation history, median of 15 calls after one warm-up.
ENTROPY_PROBE = """
import statistics, sys, time
import numpy as np, torch
from PIL import Image
from apt_viz.core.scoring import compute_patch_entropy_batched
from apt_viz.imaging import load_image
torch.set_num_threads(int(sys.argv[3]))
history = sys.argv[2]
if history == "big blocks freed":
    for size in (1, 4, 16, 31, 64):
        block = torch.empty(size << 20, dtype=torch.uint8).fill_(1); del block
elif history == "20,000 small tensors":
    kept = [torch.randn(1000 + i) for i in range(20000)]; del kept[::2]
elif history == "other scorers first":
    from apt_viz.core.scoring import compute_patch_laplacian_batched, compute_patch_upsample_mse_batched
    warm = torch.rand(1, 3, 1008, 1008) * 255
    compute_patch_laplacian_batched(warm); compute_patch_upsample_mse_batched(warm)
hwc = np.asarray(load_image(sys.argv[1]).resize((1008, 1008), Image.Resampling.BICUBIC)).copy()
inputs = {"contiguous": torch.from_numpy(hwc).permute(2, 0, 1).contiguous().float()[None],
          "hwc view": torch.from_numpy(hwc).permute(2, 0, 1).float()[None]}  # h w c -> 1 c h w
figures = []
for name, images in inputs.items():
    compute_patch_entropy_batched(images)
    times = []
    for _ in range(15):
        start = time.perf_counter(); compute_patch_entropy_batched(images); times.append(time.perf_counter() - start)
    figures.append(f"{name} {statistics.median(times) * 1e3:5.2f} ms")
print(", ".join(figures))
"""
ENTROPY_HISTORIES = {
    "fresh process": {},
    "big blocks freed": {},
    "20,000 small tensors": {},
    "other scorers first": {},
    "glibc mmap threshold at its floor": {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)},
}


def entropy_histories(threads: int) -> None:
    """The entropy time after several allocation histories (a fresh interpreter each). Target <= 10 ms."""
    photo = REPO / "test_img" / "astronaut.jpg"
    print(f"entropy of one 1008x1008 photo, {threads} torch threads, median of 15 after one warm-up (target <= 10 ms):")
    for history, extra_env in ENTROPY_HISTORIES.items():
        done = subprocess.run([sys.executable, "-c", ENTROPY_PROBE, str(photo), history, str(threads)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO), **extra_env})
        result = done.stdout.strip() if done.returncode == 0 else f"failed: {done.stderr.strip()[-200:]}"
        print(f"  {history:<36} {result}")


def throughput(root: Path, images: int, workers: int, alphas: list[str]) -> None:
    """One setting (the target), then several: ``stats`` selects them all from one pass, ``run`` needs one
    pass per setting."""
    folder = make_photos(root / "photos", images, PHOTO_SIZES)
    common = ["--device", "cpu", "-q", "--workers", str(workers), "-m", "budget"]
    print(f"{images} photos of ~1 MP, --workers {workers}, start-up included :")
    for settings in ([alphas[0]], alphas) if len(alphas) > 1 else ([alphas[0]],):
        run_s = sum(timed(["run", str(folder), "--stats-only", "-o", str(root / f"run_{alpha}"), *common,
                           "--alpha", alpha]) for alpha in settings)
        stats_s = timed(["stats", str(folder), "-o", str(root / "stats.parquet"), "--no-plot", *common,
                         "--alpha", ",".join(settings)])
        ratio = run_s / stats_s
        label = f"budget alpha {','.join(settings)}"
        runs = f"{len(settings)} runs" if len(settings) > 1 else "1 run"
        print(f"  {label}:")
        print(f"    apt-viz run --stats-only ({runs}) {images / run_s:7.1f} images/s  ({run_s:.1f} s)")
        print(f"    apt-viz stats                    {images / stats_s:7.1f} images/s  ({stats_s:.1f} s)")
        verdict = f"{'meets' if ratio >= 1.5 else 'MISSES'} target (>= 1.5x)" if len(settings) == 1 else ""
        print(f"    stats / run                      {ratio:7.2f}x  {verdict}")


def memory(root: Path, counts: list[int], workers: int) -> None:
    folder = make_photos(root / "small", max(counts), SMALL_SIZES, quality=85)
    names = sorted(path.name for path in folder.iterdir())
    peaks = {}
    for count in counts:
        listing = root / f"list_{count}.txt"
        listing.write_text("".join(f"{folder / name}\n" for name in names[:count]))
        start = time.perf_counter()
        peaks[count] = peak_rss(["stats", f"@{listing}", "-o", str(root / f"mem_{count}.parquet"), "--device", "cpu",
                                 "-q", "--no-plot", "--workers", str(workers), "-m", "budget", "--alpha", "0.3,0.5"],
                                root / f"rss_{count}.json")
        print(f"  {count:>6} images: main {peaks[count][0]:7.1f} MB, largest worker {peaks[count][1]:7.1f} MB "
              f"({time.perf_counter() - start:.0f} s)")
    low, high = min(counts), max(counts)
    growth = peaks[high][0] - peaks[low][0]
    print(f"  main process grows by {growth:.1f} MB from {low} to {high} images: "
          f"{'meets' if growth <= 200 else 'MISSES'} target (<= 200 MB)")


def gpu(root: Path, images: int) -> int:
    import torch

    if not torch.cuda.is_available():
        print("bench_stats: --device cuda asked for, but no CUDA device is available here; nothing to measure.")
        return 0
    cores = os.cpu_count() or 1
    print(f"GPU: {torch.cuda.get_device_name(0)}; {cores} CPU cores; torch {torch.__version__}")
    folder = make_photos(root / "photos", images, PHOTO_SIZES)
    for device in ("cuda", "cpu"):
        seconds = timed(["stats", str(folder), "-o", str(root / f"{device}.parquet"), "--device", device, "-q",
                         "--no-plot", "-m", "budget", "--alpha", "0.3"])
        target = " (target >= 400 images/s)" if device == "cuda" else ""
        print(f"  stats --device {device:<5} {images / seconds:7.1f} images/s  ({seconds:.1f} s, "
              f"start-up included){target}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_core import build_images, make_case, median_ms

    batch = build_images(REPO / "test_img" / "astronaut.jpg", 1008, 8, "cuda")
    for case in ("entropy", "v1", "v2", "budget"):
        ms = median_ms(make_case(case, batch), "cuda", warmup=5, repeats=50)
        target = {"v2": " (target <= 0.3 ms)", "budget": " (target <= 0.3 ms)"}.get(case, "")
        print(f"  batch of 8 x 1008x1008, {case if case == 'entropy' else 'select ' + case:<14} {ms:7.3f} ms{target}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400, help="photos for the throughput part (cuda: >= 1000)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--alphas", default="0.3,0.5,0.7", help="budget alphas: the first alone, then all together")
    parser.add_argument("--memory-counts", default="1000,10000", help="dataset sizes of the memory part")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-entropy", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the entropy part")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    options = parser.parse_args()
    print(f"bench_stats: {os.cpu_count()} CPU cores, {sys.platform}")
    with tempfile.TemporaryDirectory(prefix="bench_stats_") as temp:
        root = Path(temp)
        if options.device == "cuda":
            return gpu(root, max(options.images, 1000))
        if not options.skip_entropy:
            entropy_histories(options.threads)
        if not options.skip_throughput:
            throughput(root, options.images, options.workers, options.alphas.split(","))
        if not options.skip_memory:
            print("peak RSS of apt-viz stats (budget, two alphas):")
            memory(root, sorted(int(count) for count in options.memory_counts.split(",")), options.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
