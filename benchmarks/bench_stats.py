"""Benchmark of ``apt-viz stats``: throughput against its floor, per-stage profile, and memory against dataset size.

    python benchmarks/bench_stats.py                    # every part on the CPU (about 10 minutes on 2 cores)
    python benchmarks/bench_stats.py --skip-memory --skip-entropy   # the floor ratio and the profile only
    python benchmarks/bench_stats.py --device cuda      # the GPU figures (exits 0 when there is no GPU)

1. Floor: ``apt-viz stats DIR -o T.parquet --workers 2`` against decoding and resizing the same
   ``--images`` photos of about 1 MP with the project's own functions (``load_image`` and
   ``resize_for_qwen2vl``, what ``run`` and ``stats`` call) in 2 forked processes of one torch
   thread each, as the stats workers are. Each is one fresh interpreter timed from start to exit
   (start-up included); the two alternate for ``--rounds`` rounds, side by side in one run, and the
   best time of each gives the ratio. Target: stats >= 0.85x the floor's images/s.
2. Profile: where one photo's time goes in a stats worker (decode, resize, maps, selection, record
   and row, the trip through the pipe) and in the writer (Parquet), median ms per photo over
   ``--profile-images`` photos in this process with one torch thread.
3. Entropy: one 1008x1008 photo after several allocation histories (a fresh interpreter each),
   contiguous and as an HWC view, median of 15 calls after one warm-up. Target: <= 10 ms.
4. Memory: peak RSS of ``stats`` on 1,000 and on 10,000 images (smaller photos, so that it takes
   minutes; memory is about how many images, not their size): the main process and the largest
   worker. Target: at most 200 MB apart.
5. ``--device cuda``: ``stats --device cuda`` and ``--device cpu`` on >= 1,000 photos of about 1 MP
   (target >= 400 images/s on the GPU), the card and core count, and the entropy and selection
   times of a batch of 8 (``bench_core.py``).

Photos are made from ``test_img/*.jpg`` (crops, flips, a few degrees of rotation, scaled to about
1 MP in four common sizes, re-encoded as JPEG) in a temporary folder that is deleted afterwards.
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
    """``count`` distinct JPEGs from the test photos: cropped, flipped every other one, turned a few
    degrees, scaled to one of ``sizes`` and re-encoded."""
    from PIL import Image, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    sources = [Image.open(path).convert("RGB") for path in sorted((REPO / "test_img").glob("*.jpg"))]
    for index in range(count):
        source = sources[index % len(sources)]
        turned = source.rotate((index * 7) % 13 - 6, resample=Image.Resampling.BILINEAR)
        margin_x, margin_y = (index % 5) * turned.width // 40, (index % 7) * turned.height // 56
        cropped = turned.crop((margin_x, margin_y, turned.width - margin_x // 2, turned.height - margin_y // 2))
        if index % 2:
            cropped = ImageOps.mirror(cropped)
        cropped.resize(sizes[index % len(sizes)], Image.Resampling.BICUBIC).save(
            folder / f"img{index:05d}.jpg", quality=quality - index % 3 * 3)
    return folder


def timed(args: list[str], command: list[str] = COMMAND) -> tuple[float, float]:
    """Wall time and CPU time (of the process and every worker it reaped) of ``command args`` (default
    ``apt-viz args``) in a fresh interpreter; fails loudly on an unexpected exit code."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([*command, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join([*command, *args][:4])} ... failed ({done.returncode}): "
                         f"{done.stderr.strip()[-400:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


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


# The floor: decode and resize every photo with the project's own functions in ``workers`` forked
# processes of one torch thread each (as stats' workers), nothing else; argv: workers, then the photos.
FLOOR_DRIVER = """
import multiprocessing, os, sys
import torch
from apt_viz.core.config import APTConfig
from apt_viz.imaging import load_image, resize_for_qwen2vl
CONFIG = APTConfig(device="cpu")
def decode_and_resize(path):
    return resize_for_qwen2vl(load_image(path), CONFIG.resize_spec, CONFIG.backend).size
def one_thread():
    torch.set_num_threads(1)
folder = sys.argv[2]
paths = sorted(os.path.join(folder, name) for name in os.listdir(folder))
with multiprocessing.get_context("fork").Pool(int(sys.argv[1]), initializer=one_thread) as pool:
    done = sum(1 for _ in pool.imap_unordered(decode_and_resize, paths, chunksize=8))
assert done == len(paths)
"""


def floor_ratio(root: Path, images: int, workers: int, alphas: list[str], rounds: int) -> None:
    """``stats`` against the floor, alternating, in fresh interpreters (start-up included). Target >= 0.85x."""
    folder = make_photos(root / "photos", images, PHOTO_SIZES)
    stats_args = ["stats", str(folder), "-o", str(root / "stats.parquet"), "--no-plot", "--device", "cpu", "-q",
                  "--workers", str(workers), "-m", "budget", "--alpha", ",".join(alphas)]
    floor_command = [sys.executable, "-c", FLOOR_DRIVER]
    print(f"{images} photos of ~1 MP, {workers} processes, start-up included, {rounds} alternating rounds "
          f"(budget alpha {','.join(alphas)}):")
    floors, stats = [], []
    for index in range(rounds):
        floors.append(timed([str(workers), str(folder)], floor_command))
        stats.append(timed(stats_args))
        print(f"  round {index + 1}: floor {images / floors[-1][0]:6.1f} images/s ({floors[-1][0]:.1f} s, "
              f"{floors[-1][1]:.1f} CPU s), stats {images / stats[-1][0]:6.1f} images/s ({stats[-1][0]:.1f} s, "
              f"{stats[-1][1]:.1f} CPU s), ratio {floors[-1][0] / stats[-1][0]:.2f}x")
    floor_s, stats_s = min(wall for wall, _ in floors), min(wall for wall, _ in stats)
    ratio = floor_s / stats_s
    cpu_ratio = min(cpu for _, cpu in floors) / min(cpu for _, cpu in stats)
    print(f"  best of each: floor {images / floor_s:6.1f} images/s, stats {images / stats_s:6.1f} images/s")
    print(f"  stats / floor {ratio:.2f}x: {'meets' if ratio >= 0.85 else 'MISSES'} target (>= 0.85x)")
    print(f"  CPU time, floor / stats: {cpu_ratio:.2f}x (what the ratio tends to when both fill the cores; "
          f"less sensitive to other load)")


def profile(root: Path, count: int, alphas: list[str]) -> None:
    """Median ms per photo of each stage of a stats worker and of the writer, in this process (one torch thread)."""
    import pickle
    import statistics

    import torch

    from apt_viz.analysis import analyze_image
    from apt_viz.core.config import APTConfig
    from apt_viz.core.pipeline import compute_maps, select
    from apt_viz.imaging import load_image, resize_for_qwen2vl, resized_pixels
    from apt_viz.report.records import stats_record
    from apt_viz.stats.local import ImageRows, image_rows
    from apt_viz.stats.rows import record_row
    from apt_viz.stats.settings import StatsPlan, settings_of
    from apt_viz.stats.table import StatsTable

    torch.set_num_threads(1)
    folder = make_photos(root / "profile", count, PHOTO_SIZES)
    paths = sorted(str(path) for path in folder.iterdir())
    plan = StatsPlan(APTConfig(device="cpu"), settings_of("budget", [float(alpha) for alpha in alphas]))
    config = plan.configs[0]
    every = tuple(range(len(plan.settings)))
    stages: dict[str, list[float]] = {name: [] for name in (
        "decode (load_image)", "resize (resized_pixels)", "maps (entropy)", "selection (every setting)",
        "record and row", "pipe (pickle both ways)", "floor: load_image + resize_for_qwen2vl",
        "stats worker: image_rows")}
    rows = []
    # CPU time of this process (one torch thread): what a stage costs, whatever else the machine runs
    clock_of = time.process_time
    for index, path in enumerate([paths[0], *paths]):  # the first photo warms up
        clock = [clock_of()]
        image = load_image(path)
        clock.append(clock_of())
        pixels = resized_pixels(image, config.resize_spec, config.backend)
        clock.append(clock_of())
        maps = compute_maps(pixels[None], config)
        clock.append(clock_of())
        for other in plan.configs:
            select(maps, other, tuple(pixels.shape[-2:]))
        clock.append(clock_of())
        analysis = analyze_image(image, config, source=path)  # not timed: its parts are above
        clock.append(clock_of())
        result = ImageRows(path, [record_row(stats_record(analysis), setting) for setting in plan.settings])
        clock.append(clock_of())
        pickle.loads(pickle.dumps(result))
        clock.append(clock_of())
        resize_for_qwen2vl(load_image(path), config.resize_spec, config.backend)
        clock.append(clock_of())
        rows += image_rows(path, every, plan).rows
        clock.append(clock_of())
        if index:
            spans = [b - a for a, b in zip(clock, clock[1:])]
            del spans[4]  # analyze_image again
            for name, span in zip(stages, spans):
                stages[name].append(span * 1e3)
    for name in ("warm-up", "profile"):  # the first write imports pyarrow's Parquet writer
        start = clock_of()
        with StatsTable(str(root / f"{name}.parquet"), plan) as table:
            table.add(rows)
            table.finish()
    writer_ms = (clock_of() - start) * 1e3 / count
    median = {name: statistics.median(values) for name, values in stages.items()}
    print(f"per-stage profile, median CPU ms per photo over {count} photos, one torch thread, "
          f"{len(plan.settings)} setting(s):")
    for name, value in median.items():
        print(f"  {name:<42} {value:7.2f}")
    print(f"  {'writer (Parquet parts and merge), mean':<42} {writer_ms:7.2f}")
    floor = median["floor: load_image + resize_for_qwen2vl"]
    beyond = sum(median[name] for name in list(median)[2:6]) + writer_ms
    whole = median["stats worker: image_rows"] + median["pipe (pickle both ways)"] + writer_ms
    print(f"  beyond decode + resize (maps to writer): {beyond:.2f} ms per photo; 0.85x of the floor's "
          f"throughput allows {floor * (1 / 0.85 - 1):.2f} ms")
    print(f"  per photo, start-up left out: floor / stats = {floor:.2f} / {whole:.2f} ms = {floor / whole:.2f}x")


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
    parser.add_argument("--images", type=int, default=1200, help="photos of the floor part (cuda: >= 1000)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternating floor / stats rounds")
    parser.add_argument("--alphas", default="0.3", help="budget alphas of the stats run and the profile")
    parser.add_argument("--profile-images", type=int, default=60)
    parser.add_argument("--memory-counts", default="1000,10000", help="dataset sizes of the memory part")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--skip-profile", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-entropy", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the entropy part")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    options = parser.parse_args()
    print(f"bench_stats: {os.cpu_count()} CPU cores, {sys.platform}, load average "
          f"{', '.join(f'{load:.1f}' for load in os.getloadavg())}")
    alphas = options.alphas.split(",")
    with tempfile.TemporaryDirectory(prefix="bench_stats_") as temp:
        root = Path(temp)
        if options.device == "cuda":
            return gpu(root, max(options.images, 1000))
        if not options.skip_floor:
            floor_ratio(root, options.images, options.workers, alphas, options.rounds)
        if not options.skip_profile:
            profile(root, options.profile_images, alphas)
        if not options.skip_entropy:
            entropy_histories(options.threads)
        if not options.skip_memory:
            print("peak RSS of apt-viz stats (budget, two alphas):")
            memory(root, sorted(int(count) for count in options.memory_counts.split(",")), options.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
