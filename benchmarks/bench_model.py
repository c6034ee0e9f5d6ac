"""APT inference speed on a GPU: the figures issue 9 targets, from ``apt_viz.bench`` (random weights).

    python benchmarks/bench_model.py                    # needs CUDA; prints a message and exits 0 without it
    python benchmarks/bench_model.py --json out.json    # also write every measured row
    python benchmarks/bench_model.py --device cpu --preset-vision tiny --preset-prefill tiny --megapixels 0.05 \\
        --repeats 1 --warmup 0                          # the same code path on a CPU (what the tests run)
    python benchmarks/bench_model.py --preset-vision qwen3-vl-8b   # any family apt_viz.hf has an APT model of

Figures (bf16, SDPA; 8 photos at about 1 MP: the test photos scaled up and cycled; budget selection):

1. Qwen2-VL-7B vision tower preset, alpha 0.3: image processor and encoder time (the APT
   selection included), stock / APT. Target >= 3x at batch 8, >= 1.6x at batch 1.
2. Qwen2-VL-2B preset, LLM prefill of 8 prompts, each one such photo and a short question,
   alpha 0.3: stock / APT. Target >= 1.5x.
3. Peak memory below stock at every alpha below 1 (vision and prefill, every batch).

Then, on the same photos at alpha 0.3 and for every published preset of every family, the analytic
vision and prefill FLOPs ratios (stock / APT, :mod:`apt_viz.core.flops`), side by side.

The presets have random weights: latency depends on shapes, not values. The figures say nothing
about the quality of a model that was not fine-tuned with APT.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted((REPO_ROOT / "test_img").glob("*.jpg"))
ALPHAS = (0.1, 0.3, 0.5, 0.7, 1.0)
TARGET_ALPHA = 0.3
VISION_TARGETS = {8: 3.0, 1: 1.6}  # batch -> minimum speedup of the vision encoder (selection included)
PREFILL_TARGET = (8, 1.5)  # batch, minimum prefill speedup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to exercise the code path")
    parser.add_argument("--preset-vision", default="qwen2-vl-7b")
    parser.add_argument("--preset-prefill", default="qwen2-vl-2b")
    parser.add_argument("--megapixels", type=float, default=1.0)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="write the measured rows here")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run both benches; returns their bench.json documents."""
    from apt_viz.bench import BenchSettings, bench_document, run_bench
    from apt_viz.imaging import load_image

    images = [load_image(path) for path in PHOTOS]
    common = {"alphas": ALPHAS, "method": "budget", "device": args.device, "warmup": args.warmup,
              "repeats": args.repeats, "megapixels": args.megapixels}
    vision = run_bench(images, BenchSettings(batch_sizes=tuple(sorted(VISION_TARGETS)), parts=("vision",), **common),
                       preset=args.preset_vision, progress=print)
    prefill = run_bench(images, BenchSettings(batch_sizes=(PREFILL_TARGET[0],), parts=("prefill",), **common),
                        preset=args.preset_prefill, progress=print)
    return {"vision": bench_document(vision), "prefill": bench_document(prefill)}


def flops_ratios(megapixels: float) -> list[tuple[str, float, float]]:
    """(preset, vision FLOPs stock / APT, prefill FLOPs stock / APT) at alpha 0.3, batch 8, every published preset."""
    from apt_viz.bench import BenchSettings, run_bench
    from apt_viz.core.architectures import ARCHITECTURES
    from apt_viz.imaging import load_image

    images = [load_image(path) for path in PHOTOS]
    settings = BenchSettings(alphas=(TARGET_ALPHA,), batch_sizes=(8,), megapixels=megapixels)
    ratios = []
    for name in ARCHITECTURES:
        stock, apt = run_bench(images, settings, preset=name, flops_only=True).rows
        ratios.append((name, stock.vision_flops / apt.vision_flops, stock.prefill_flops / apt.prefill_flops))
    return ratios


def figures(documents: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(figure, measured, target, met) for every target of the issue."""
    lines = []
    vision, prefill = documents["vision"], documents["prefill"]

    def row(document: dict, batch: int, alpha: float | None) -> dict:
        return next(r for r in document["rows"] if r["batch_size"] == batch and r["alpha"] == alpha)

    for batch, target in sorted(VISION_TARGETS.items(), reverse=True):
        apt, stock = row(vision, batch, TARGET_ALPHA), row(vision, batch, None)
        speedup = apt["speedup"]["vision"]
        lines.append((
            f"{vision['model']} vision, batch {batch}, alpha {TARGET_ALPHA}",
            f"{stock['vision']['median_ms']:.1f} ms -> {apt['vision']['median_ms']:.1f} ms "
            f"(processor {stock['processor']['median_ms']:.1f} -> {apt['processor']['median_ms']:.1f} ms): "
            f"{speedup:.2f}x",
            f">= {target}x", speedup >= target,
        ))
    batch, target = PREFILL_TARGET
    apt, stock = row(prefill, batch, TARGET_ALPHA), row(prefill, batch, None)
    speedup = apt["speedup"]["prefill"]
    lines.append((
        f"{prefill['model']} prefill, batch {batch}, alpha {TARGET_ALPHA}",
        f"{stock['prefill']['median_ms']:.1f} ms -> {apt['prefill']['median_ms']:.1f} ms "
        f"({stock['prompt_tokens'] // batch} -> {apt['prompt_tokens'] // batch} tokens per prompt): {speedup:.2f}x",
        f">= {target}x", speedup >= target,
    ))
    for part, document in (("vision", vision), ("prefill", prefill)):
        key = f"{part}_peak_mb"
        worse = [
            f"batch {r['batch_size']} alpha {r['alpha']:g}: {r[key]:.0f} MB >= stock {stock_peak:.0f}"
            for r in document["rows"]
            if r["alpha"] is not None and r["alpha"] < 1
            and r[key] >= (stock_peak := row(document, r["batch_size"], None)[key])
        ]
        lines.append((f"{part} peak memory, every alpha < 1", "; ".join(worse) or "below stock everywhere",
                      "< stock", not worse))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_model: no CUDA device; these figures need a GPU (nothing measured)")
        return 0
    documents = measure(args)
    device = documents["vision"]["device"]
    print(f"\n{device}; {documents['vision']['dtype']}, {documents['vision']['attention']} attention; "
          f"{documents['vision']['weights']}")
    for name, measured, target, met in figures(documents):
        print(f"  {'ok  ' if met else 'MISS'} {name}: {measured} (target {target})")
    print(f"\nanalytic FLOPs, stock / APT at alpha {TARGET_ALPHA}, batch 8, {args.megapixels:g} MP photos:")
    for name, vision, prefill in flops_ratios(args.megapixels):
        print(f"  {name:<15} vision {vision:5.2f}x   prefill {prefill:5.2f}x")
    if args.json is not None:
        args.json.write_text(json.dumps(documents, indent=2))
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
