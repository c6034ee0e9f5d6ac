"""The patch overlay: every selected patch outlined and lightly tinted in its scale's colour, with a legend."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .._text import format_setting
from ..core.grids import grid_shape, upsample_cells
from ._draw import SCALE_COLOURS, blend, cell_edges, cell_pixels, to_numpy, weight_of, weights, with_legend

if TYPE_CHECKING:  # pragma: no cover
    from ..analysis import ImageAnalysis


def patch_overlay(
    image: Image.Image,
    masks: Mapping[int, Any],
    *,
    caption: str | None = None,
    tint: float = 0.18,
) -> Image.Image:
    """The resized image with the outline of every selected patch, one colour per scale, and a legend.

    ``masks``: {cell size: (rows, cols) 0/1} as selected (a partition of the base grid). Each
    selected cell is outlined in its scale's colour and lightly tinted (``tint``, in 1/256 steps)
    so regions of one scale read as one colour. The legend below lists each scale's colour and
    token count.
    """
    rgb = np.asarray(image.convert("RGB"))
    image_hw = (image.height, image.width)
    sizes = sorted(masks)
    base = sizes[0]
    kind = np.zeros(grid_shape(*image_hw, base), dtype=np.uint8)  # base grid: the scale covering each cell
    outline = np.zeros(image_hw, dtype=bool)
    counts = []
    for index, size in enumerate(sizes):
        kept = to_numpy(masks[size]) > 0
        counts.append(int(kept.sum()))
        kind[upsample_cells(kept, size // base, kind.shape)] = index
        outline |= cell_pixels(kept, size, image_hw) & cell_edges(*image_hw, size)
    palette = np.array([SCALE_COLOURS[i % len(SCALE_COLOURS)] for i in range(len(sizes))], dtype=np.uint8)
    colour = cell_pixels(np.take(palette, kind, axis=0), base, image_hw)  # (H, W, 3)
    weight = weights(image_hw, tint)
    weight[outline] = weight_of(1.0)  # outlines in the pure colour
    picture = Image.fromarray(blend(rgb, colour, weight))

    entries = [
        (SCALE_COLOURS[i % len(SCALE_COLOURS)], f"{size} px: {count} patches")
        for i, (size, count) in enumerate(zip(sizes, counts))
    ]
    return with_legend(picture, entries, caption)


def selection_caption(analysis: ImageAnalysis) -> str:
    """One line: method and its setting, tokens and retention (vs. target for budget)."""
    stats = analysis.stats
    setting = format_setting(analysis.selection.method, analysis.selection.alpha, analysis.thresholds)
    caption = f"{analysis.selection.method}, {setting}: {stats.vision_tokens} / {stats.base_tokens} patches"
    caption += f" ({stats.retention:.1%})"
    if analysis.target_retention is not None:
        caption += f", target {analysis.target_retention:.1%}"
    return caption


def analysis_overlay(analysis: ImageAnalysis) -> Image.Image:
    """The patch-boundary overlay of an analysis, captioned with its method and token count."""
    return patch_overlay(analysis.resized, analysis.masks, caption=selection_caption(analysis))
