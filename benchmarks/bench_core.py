"""Benchmark of the numeric core: importance maps and patch selection on one 1008x1008 photo.

    python benchmarks/bench_core.py                              # CPU: conditions, then every case
    python benchmarks/bench_core.py --official ~/src/apt         # divide by the official APT code
    python benchmarks/bench_core.py --device cuda --batch 8      # GPU figure (exits 0 when there is no GPU)

Conditions (CPU): the entropy maps and the budget selection of the photo with 1 thread, with 2
threads, and with 2 threads while two busy processes spin on the same 2 cores (started and
stopped here). Each figure is the median of 15 calls after one warm-up in a fresh process, and
the conditions are interleaved over ``--rounds`` rounds (median of the rounds), so a burst of
load elsewhere hits every condition alike. The baseline is the official APT
``compute_patch_entropy_batched`` from a checkout (``--official PATH``), or else the one-hot
reference of ``benchmarks/_entropy_baseline.py`` (the contract's formula computed the official
way), timed in a fresh process with 2 threads; the ratio column divides by it.

Cases: time of each scorer and selection method, median over ``--repeats`` calls after
``--warmup`` calls, and extra peak memory. On the CPU, each case runs in a fresh subprocess whose
peak RSS is reset (``/proc/self/clear_refs``) after a warm-up call, so the figure is the resident
memory one call adds on top of its inputs (glibc's mmap threshold is fixed so freed buffers really
leave the process); on CUDA, ``torch.cuda.max_memory_allocated`` over one call minus what was
allocated before it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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
# (label, torch threads, busy spinners) of the conditions, and what each figure is the median of.
CONDITIONS = (("1 thread", 1, 0), ("2 threads", 2, 0), ("2 threads, 2 busy spinners", 2, 2))
CONDITION_WARMUP, CONDITION_REPEATS = 1, 15
# The targets: x baseline with 1 and 2 threads, 2 threads against 1, busy against quiet.
TARGET_RATIO, TARGET_THREADS, TARGET_BUSY = 500.0, 1.10, 3.0


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


# --- conditions ----------------------------------------------------------------------------------

def shared_cores() -> list[int] | None:
    """The two CPUs every measured process and spinner is pinned to (None where affinity is not available)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))[:2]


def _pin(cores: list[int] | None) -> Callable[[], None] | None:
    return None if cores is None else (lambda: os.sched_setaffinity(0, cores))


def run_probe(args: argparse.Namespace, probe: list[str], cores: list[int] | None) -> dict[str, float]:
    """Run this script in a fresh process with the hidden ``probe`` arguments; return its JSON line."""
    command = [sys.executable, __file__, *probe, "--image", str(args.image), "--size", str(args.size),
               "--batch", str(args.batch)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, preexec_fn=_pin(cores))
    if done.returncode != 0:
        raise RuntimeError(f"probe {' '.join(probe)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def busy_spinners(count: int, cores: list[int] | None) -> Iterator[None]:
    """``count`` processes that spin on ``cores`` for the duration of the block; stopped by their pid."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=_pin(cores))
                for _ in range(count)]
    try:
        time.sleep(0.5)  # past their start-up: spinning when the measured process starts
        yield
    finally:
        for spinner in spinners:
            spinner.terminate()
        for spinner in spinners:
            spinner.wait()


def probe_condition(args: argparse.Namespace) -> dict[str, float]:
    """In a fresh process: median entropy and budget-selection times with ``args.threads`` threads."""
    import torch

    from apt_viz.core.scoring import compute_importance_maps
    from apt_viz.core.selection import select_patches

    torch.set_num_threads(args.threads)
    images = build_images(args.image, args.size, args.batch, "cpu")
    maps = compute_importance_maps(images, "entropy")
    image_size = tuple(images.shape[-2:])
    return {
        "entropy_ms": median_ms(lambda: compute_importance_maps(images, "entropy"), "cpu",
                                CONDITION_WARMUP, CONDITION_REPEATS),
        "select_ms": median_ms(lambda: select_patches(maps, "budget", alpha=SELECTION_ALPHA["budget"],
                                                      image_size=image_size), "cpu",
                               CONDITION_WARMUP, CONDITION_REPEATS),
        "threads_after": float(torch.get_num_threads()),
    }


def probe_baseline(args: argparse.Namespace) -> dict[str, float]:
    """In a fresh process with 2 threads: the baseline's median time and its largest difference from apt-viz."""
    import torch
    from _entropy_baseline import load_official, onehot_entropy  # beside this script

    from apt_viz.core.scoring import compute_patch_entropy_batched

    torch.set_num_threads(2)
    images = build_images(args.image, args.size, args.batch, "cpu")
    baseline = load_official(args.official) if args.official else onehot_entropy
    ours = compute_patch_entropy_batched(images)
    theirs = baseline(images, patch_size=14, num_scales=3, bins=512, pad_value=1e6)  # also the warm-up
    difference = max(float((ours[size] - theirs[size]).abs().max()) for size in ours)
    del theirs
    ms = median_ms(lambda: baseline(images, patch_size=14, num_scales=3, bins=512, pad_value=1e6), "cpu",
                   0, args.official_repeats)
    return {"ms": ms, "max_difference": difference}


def report_conditions(args: argparse.Namespace) -> None:
    """Print the conditions table: each condition in fresh processes, interleaved, with the ratio to the baseline."""
    cores = shared_cores()
    where = f"pinned to CPUs {','.join(map(str, cores))}" if cores else "not pinned"
    print(f"conditions: {args.image.name} resized to {args.size}x{args.size}, batch {args.batch}, {where}; "
          f"load average {_load()} at start")
    print(f"each figure: median of {CONDITION_REPEATS} calls after {CONDITION_WARMUP} warm-up in a fresh process; "
          f"median of {args.rounds} interleaved rounds")
    times: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in CONDITIONS}
    for round_index in range(args.rounds):
        shift = round_index % len(CONDITIONS)  # a different order each round
        for label, threads, spinners in CONDITIONS[shift:] + CONDITIONS[:shift]:
            with busy_spinners(spinners, cores):
                times[label].append(run_probe(args, ["--probe-condition", "--threads", str(threads)], cores))
    baseline = run_probe(args, ["--probe-baseline", "--official-repeats", str(args.official_repeats)]
                         + (["--official", str(args.official)] if args.official else []), cores)
    name = (f"official compute_patch_entropy_batched from {args.official}" if args.official
            else "one-hot reference of the contract's formula (benchmarks/_entropy_baseline.py; no --official)")
    print(f"baseline: {name}, 2 threads: {baseline['ms']:.0f} ms (median of {args.official_repeats} after 1 "
          f"warm-up); largest difference from apt-viz's maps {baseline['max_difference']:.1e}")
    entropy = {label: statistics.median(r["entropy_ms"] for r in runs) for label, runs in times.items()}
    print(f"{'condition':<28}{'entropy ms':>11}{'x baseline':>12}{'select ms':>11}  entropy ms per round")
    for label, runs in times.items():
        rounds = " ".join(f"{r['entropy_ms']:.1f}" for r in runs)
        select = statistics.median(r["select_ms"] for r in runs)
        print(f"{label:<28}{entropy[label]:11.2f}{baseline['ms'] / entropy[label]:11.0f}x{select:11.3f}  {rounds}")
    one, two, busy = (entropy[label] for label, _, _ in CONDITIONS)
    ratio = min(baseline["ms"] / one, baseline["ms"] / two)
    print(f"targets: >= {TARGET_RATIO:g}x baseline with 1 and 2 threads: {_meets(ratio >= TARGET_RATIO)} "
          f"({ratio:.0f}x); 2 threads within {TARGET_THREADS - 1:.0%} of 1: {_meets(two <= TARGET_THREADS * one)} "
          f"({two / one:.2f}x); busy <= {TARGET_BUSY:g}x quiet (2 threads): {_meets(busy <= TARGET_BUSY * two)} "
          f"({busy / two:.2f}x)")
    if any(r["threads_after"] != threads for (label, threads, _) in CONDITIONS for r in times[label]):
        print("warning: a call left torch's thread count changed")
    print(f"load average {_load()} at the end")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def _meets(ok: bool) -> str:
    return "meets" if ok else "MISSES"


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
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads of the cases")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up calls of each case")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls of each case")
    parser.add_argument("--cases", default=",".join(SCORER_CASES + SELECTION_CASES),
                        help="comma-separated subset of " + ", ".join(SCORER_CASES + SELECTION_CASES))
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    parser.add_argument("--no-conditions", action="store_true", help="skip the conditions table (CPU)")
    parser.add_argument("--no-cases", action="store_true", help="skip the per-case table")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the conditions")
    parser.add_argument("--official", type=Path,
                        help="APT checkout (or its src/models/entropy_utils.py) whose entropy is the baseline")
    parser.add_argument("--official-repeats", type=int, default=3, help="timed calls of the baseline")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: the memory subprocess
    parser.add_argument("--probe-condition", action="store_true", help=argparse.SUPPRESS)  # internal
    parser.add_argument("--probe-baseline", action="store_true", help=argparse.SUPPRESS)  # internal
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(SCORER_CASES + SELECTION_CASES))
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}")
    if min(args.batch, args.repeats, args.threads, args.rounds, args.official_repeats) < 1 or args.size < 14 \
            or args.warmup < 0:
        parser.error("--batch, --threads, --repeats, --rounds and --official-repeats must be >= 1, --size >= 14, "
                     "--warmup >= 0")
    if not args.image.is_file():
        parser.error(f"{args.image}: no such file")
    if args.official is not None and not args.official.exists():
        parser.error(f"--official {args.official}: no such file or folder")
    args.cases = cases
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        print(json.dumps({"extra_peak_mb": probe_cpu_extra_peak_mb(args)}))
        return 0
    if args.probe_condition:
        print(json.dumps(probe_condition(args)))
        return 0
    if args.probe_baseline:
        print(json.dumps(probe_baseline(args)))
        return 0

    import torch

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"bench_core: --device {device} asked for, but no CUDA device is available here; nothing to measure.")
        return 0
    if device != "cpu" and not device.startswith("cuda"):
        print(f"bench_core: unknown device {device!r}; use cpu or cuda", file=sys.stderr)
        return 2
    from apt_viz.core._entropy import native_kernel

    path = "C kernel" if native_kernel() else "torch ops (APT_VIZ_NATIVE=0, or the kernel is not built)"
    print(f"bench_core: torch {torch.__version__}, {os.cpu_count()} CPUs; CPU entropy path: {path}")
    if device == "cpu" and not args.no_conditions:
        report_conditions(args)
    if not args.no_cases:
        report_cases(args, device)
    return 0


def report_cases(args: argparse.Namespace, device: str) -> None:
    """Print the per-case table: time and extra peak memory of each scorer and selection method."""
    import torch

    torch.set_num_threads(args.threads)
    images = build_images(args.image, args.size, args.batch, device)
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"CPU, {args.threads} threads"
    print(f"cases: {args.image.name} resized to {args.size}x{args.size}, batch {args.batch}, {where}")
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


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing
    sys.exit(main())
