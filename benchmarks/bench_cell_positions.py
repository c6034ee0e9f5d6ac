"""How far apart the two learned positions of a large cell are (Qwen3-VL / Qwen3.5), side by side.

    python benchmarks/bench_cell_positions.py              # the bundled photos, qwen3-vl defaults, budget 0.3

The stock tower adds a 48 x 48 learned position table, sampled bilinearly per patch. A 32 or 64 px
APT cell can take the sample at its centre (``CellPosition.CENTRE``, apt-viz's choice) or the
average of the samples of the base patches it covers (``CellPosition.AVERAGE``). Both go through
:func:`apt_viz.hf.qwen3_vl.learned_position_taps`, the function the models use. Printed per image
and cell size:

- ``rel L2``: ||centre - average|| / ||centre|| over the cells of that size;
- ``norm``: ||average|| / ||centre|| (averaging smooths the table: the average is shorter);
- ``/ step``: the same difference against the distance between the embeddings of two horizontally
  adjacent base patches of the image (the table's own resolution at that image size);
- ``taps``: taps per row of each choice (what the tower gathers: rows x taps x hidden values).

Two tables of the published shape (48 x 48 x 1152, Qwen3-VL-8B's vision width): white noise (the
worst case: no smoothness at all) and a 2D sin-cos table (a smooth stand-in for a learned one; the
real table is not downloaded). Then the tiny random Qwen3-VL model (``tiny-qwen3-vl``): the max
|logit difference| between the two choices against the logits' own scale, on the first photo.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
SIDE, HIDDEN = 48, 1152


def sincos_table(side: int, hidden: int):
    """(side * side, hidden) 2D sin-cos position table: half the channels for the row, half for the column."""
    import torch

    quarter = hidden // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    position = torch.arange(side, dtype=torch.float64)[:, None] * omega  # (side, quarter)
    axis = torch.cat([position.sin(), position.cos()], dim=1)  # (side, hidden / 2)
    rows = axis[:, None, :].expand(side, side, -1)
    cols = axis[None, :, :].expand(side, side, -1)
    return torch.cat([rows, cols], dim=-1).reshape(side * side, hidden).float()


def family_processor(alpha: float):
    from apt_viz.core.families import family_spec
    from apt_viz.hf import APTQwen2VLImageProcessor

    spec = family_spec("qwen3-vl")
    return APTQwen2VLImageProcessor(
        patch_size=spec.patch_size, merge_size=spec.merge_size, temporal_patch_size=spec.temporal_patch_size,
        size={"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels},
        image_mean=list(spec.image_mean), image_std=list(spec.image_std),
        patch_selection_method="budget", alpha=alpha,
    )


def embed(table, layout, grid, choice):
    import torch.nn.functional as F

    from apt_viz.hf.qwen3_vl import learned_position_taps

    indices, weights = learned_position_taps(layout, grid, SIDE, choice)
    return (F.embedding(indices, table) * weights[:, :, None]).sum(1), indices.shape[1]  # the stock tower's sum


def table_rows(images: list[tuple[str, object]], alpha: float) -> None:
    import torch

    from apt_viz.core.apt_inputs import APTInputs
    from apt_viz.core.layout import apt_layout
    from apt_viz.hf import CellPosition

    torch.manual_seed(0)
    tables = {"white noise": torch.randn(SIDE * SIDE, HIDDEN), "sin-cos": sincos_table(SIDE, HIDDEN)}
    processor = family_processor(alpha)
    print(f"{'image':<18} {'grid':>7} {'table':<12} {'cell':>5} {'cells':>5} {'rel L2':>7} {'norm':>6} "
          f"{'/ step':>7} {'taps':>9}")
    for name, image in images:
        out = processor([image], return_tensors="pt")
        grid = out["image_grid_thw"]
        layout = apt_layout(APTInputs.from_mapping(out), grid, 16, 2)
        _, h, w = grid[0].tolist()
        for table_name, table in tables.items():
            centre, centre_taps = embed(table, layout, grid, CellPosition.CENTRE)
            average, average_taps = embed(table, layout, grid, CellPosition.AVERAGE)
            base = layout.cell_sides == 1
            base_at = {tuple(p): i for i, p in enumerate(layout.cell_positions.tolist()) if base[i]}
            pairs = [(i, base_at[(r, c + 1)]) for (r, c), i in base_at.items() if (r, c + 1) in base_at]
            step = torch.stack([centre[i] - centre[j] for i, j in pairs]).norm(dim=1).mean()
            for side in (2, 4):
                rows = layout.cell_sides == side
                difference = (centre[rows] - average[rows]).norm()
                relative = difference / centre[rows].norm()
                shrink = average[rows].norm() / centre[rows].norm()
                per_cell = difference / math.sqrt(int(rows.sum()))
                print(f"{name:<18} {f'{h}x{w}':>7} {table_name:<12} {16 * side:>3}px {int(rows.sum()):>5} "
                      f"{float(relative):>7.3f} {float(shrink):>6.3f} {float(per_cell / step):>7.3f} "
                      f"{centre_taps:>4}/{average_taps:<4}")


def model_logits(image, alpha: float) -> None:
    import importlib.util

    import torch
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    from apt_viz.bench.presets import preset_config
    from apt_viz.hf import APTQwen3VLForConditionalGeneration, APTQwen3VLProcessor

    spec = importlib.util.spec_from_file_location("quick_start", REPO_ROOT / "examples" / "quick_start.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tokenizer = module.build_tiny_tokenizer()
    processor = APTQwen3VLProcessor(image_processor=family_processor(alpha), tokenizer=tokenizer,
                                    video_processor=Qwen3VLVideoProcessor())
    torch.manual_seed(0)
    model = APTQwen3VLForConditionalGeneration(preset_config("tiny-qwen3-vl", tokenizer=tokenizer)).eval()
    inputs = processor(images=[image], text=["<|vision_start|><|image_pad|><|vision_end|> describe this image ."],
                       return_tensors="pt")
    logits = {}
    for choice in ("centre", "average"):
        model.model.apt_cell_position = choice
        with torch.no_grad():
            logits[choice] = model(**inputs).logits
    difference = (logits["centre"] - logits["average"]).abs().max()
    spread = logits["average"].std()
    print(f"tiny-qwen3-vl, {PHOTOS[0]}: max |logit centre - average| {float(difference):.2e}, "
          f"logits' std {float(spread):.2e} (ratio {float(difference / spread):.2e})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alpha", type=float, default=0.3, help="budget selection alpha")
    parser.add_argument("--large", type=int, nargs="*", default=[1024, 2048],
                        help="also the first photo resized to these sides (px): grids larger than the table")
    args = parser.parse_args(argv)
    from PIL import Image

    photos = {name: Image.open(REPO_ROOT / "test_img" / f"{name}.jpg").convert("RGB") for name in PHOTOS}
    images = [(name, photo) for name, photo in photos.items()]
    images += [(f"{PHOTOS[0]} {side}", photos[PHOTOS[0]].resize((side, side), Image.Resampling.BICUBIC))
               for side in args.large]
    table_rows(images, args.alpha)
    model_logits(photos[PHOTOS[0]], args.alpha)


if __name__ == "__main__":
    main()
