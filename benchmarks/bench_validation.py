"""Cost of the apt_* checks against the vision tower they guard, side by side, on a CPU.

    python benchmarks/bench_validation.py                 # 4-layer Qwen2-VL-2B preset, two photos, budget 0.3
    python benchmarks/bench_validation.py --threads 1 --repeats 9

Every APT entry point (forward, get_image_features, generate, the rope index) checks its inputs
before the model runs (``apt_viz.core.apt_inputs``). The target: the checks cost at most 2% of the
vision tower's forward time on the 4-layer 2B preset (``preset_config("qwen2-vl-2b", layers=4)``,
random weights: time depends on shapes, not values). Printed, each a median after a warm-up:

- ``checks``: :func:`~apt_viz.core.apt_inputs.check_apt_inputs` and the prompt check, what
  validation adds;
- ``checks + layout``: the model's ``apt_layout`` (the checks, the prompt check and the layout
  every APT call needs anyway);
- ``vision tower``: the tower on the same APT rows (under ``torch.inference_mode``);
- the ratios of the first two to the third.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ("astronaut.jpg", "rocket.jpg")
TARGET = 0.02  # checks / vision tower


def median_ms(call: Callable[[], Any], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def prompts(image_token_id: int, llm_tokens: list[int]):
    """One prompt per image: a few text tokens around that image's placeholders (left padded)."""
    import torch

    rows = [[1, 2, *[image_token_id] * count, 3, 4, 5] for count in llm_tokens]
    width = max(len(row) for row in rows)
    return torch.tensor([[0] * (width - len(row)) + row for row in rows])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="qwen2-vl-2b")
    parser.add_argument("--layers", type=int, default=4, help="vision blocks (and LLM layers) of the preset")
    parser.add_argument("--alpha", type=float, default=0.3, help="budget selection alpha")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7, help="repeats of the vision tower (the checks: 20x)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from PIL import Image

    from apt_viz.bench.presets import preset_config
    from apt_viz.core.apt_inputs import APTInputs, check_apt_inputs, check_image_tokens
    from apt_viz.hf import APTQwen2VLForConditionalGeneration, APTQwen2VLImageProcessor

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = preset_config(args.preset, layers=args.layers)
    model = APTQwen2VLForConditionalGeneration(config).eval().model  # the inner model: checks and tower
    images = [Image.open(REPO_ROOT / "test_img" / name).convert("RGB") for name in PHOTOS]
    out = APTQwen2VLImageProcessor(patch_selection_method="budget", alpha=args.alpha)(images, return_tensors="pt")
    apt, grid = APTInputs.from_mapping(out), out["image_grid_thw"]
    input_ids = prompts(config.image_token_id, apt.num_llm_tokens.tolist())
    vision = config.vision_config
    row_width = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2

    def checks() -> None:
        check_apt_inputs(apt, grid, vision.patch_size, vision.spatial_merge_size, model.apt_num_scales, row_width)
        check_image_tokens(input_ids, config.image_token_id, apt.num_llm_tokens, model.apt_processor_name)

    layout = model.apt_layout(apt, grid, input_ids)

    def tower() -> None:
        with torch.inference_mode():
            model.apt_encode(apt.pixel_values, grid, layout)

    checks_ms = median_ms(checks, args.warmup, args.repeats * 20)
    layout_ms = median_ms(lambda: model.apt_layout(apt, grid, input_ids), args.warmup, args.repeats * 20)
    tower_ms = median_ms(tower, args.warmup, args.repeats)
    base = int(grid.prod(-1).sum())
    print(f"bench_validation: {args.preset} ({args.layers} layers, random weights), CPU, {args.threads} threads, "
          f"torch {torch.__version__}")
    print(f"{len(images)} photos ({', '.join(PHOTOS)}), budget {args.alpha}: {int(apt.num_tokens.sum())} APT rows "
          f"of {base} base patches, {int(apt.num_llm_tokens.sum())} LLM tokens")
    print(f"{'':<18}{'median ms':>11}{'/ tower':>10}")
    print(f"{'checks':<18}{checks_ms:>11.3f}{checks_ms / tower_ms:>10.2%}")
    print(f"{'checks + layout':<18}{layout_ms:>11.3f}{layout_ms / tower_ms:>10.2%}")
    print(f"{'vision tower':<18}{tower_ms:>11.1f}{1:>10.0%}")
    verdict = "meets" if checks_ms / tower_ms <= TARGET else "MISSES"
    print(f"checks / vision tower = {checks_ms / tower_ms:.4f}: {verdict} the target (<= {TARGET:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
