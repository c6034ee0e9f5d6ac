"""The patch overlay: every selected patch outlined and lightly tinted in its scale's colour, with a legend."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .._text import format_setting
from ..core.grids import upsample_cells
from ._draw import SCALE_COLOURS, cell_edges, to_numpy, with_legend

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
    selected cell is outlined in its scale's colour and lightly tinted (``tint``) so regions of
    one scale read as one colour. The legend below lists each scale's colour and token count.
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    height, width = rgb.shape[:2]
    sizes = sorted(masks)
    colour_of_pixel = np.zeros((height, width, 3), dtype=np.float32)
    outline = np.zeros((height, width), dtype=bool)
    counts = []
    for index, size in enumerate(sizes):
        kept = to_numpy(masks[size]) > 0
        counts.append(int(kept.sum()))
        here = upsample_cells(kept, size, (height, width))
        colour_of_pixel[here] = SCALE_COLOURS[index % len(SCALE_COLOURS)]
        outline |= here & cell_edges(height, width, size)
    blended = rgb * (1.0 - tint) + colour_of_pixel * tint
    blended[outline] = colour_of_pixel[outline]
    picture = Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))

    entries = [
        (SCALE_COLOURS[i % len(SCALE_COLOURS)], f"{size} px: {count} patches")
        for i, (size, count) in enumerate(zip(sizes, counts))
    ]
    return with_legend(picture, entries, caption)


def selection_caption(analysis: ImageAnalysis) -> str:
    """One line: method and its setting, tokens and retention (vs. target for budget)."""
    stats = analysis.stats
    setting = format_setting(analysis.selection.method, analysis.selection.alpha, analysis.thresholds)
    caption = f"{analysis.selection.method}, {setting}: {stats.tokens} / {stats.base_tokens} patches"
    caption += f" ({stats.retention:.1%})"
    if analysis.target_retention is not None:
        caption += f", target {analysis.target_retention:.1%}"
    return caption


def analysis_overlay(analysis: ImageAnalysis) -> Image.Image:
    """The patch-boundary overlay of an analysis, captioned with its method and token count."""
    return patch_overlay(analysis.resized, analysis.masks, caption=selection_caption(analysis))
