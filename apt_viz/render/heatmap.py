"""Importance heatmaps: one picture per scale, cells coloured by score at the resized image size.

The colour range covers the whole cells only (partial cells, where the entropy scorer puts
``pad_value`` = 1e6, are grey stripes), and the cells that will be split are outlined in cyan.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from .._text import format_number
from ..core.grids import ImageHW, partial_cells, upsample_cells
from ._draw import (
    BACKGROUND,
    COLORBAR_WIDTH,
    MARGIN,
    PARTIAL_HATCH,
    SPLIT_OUTLINE,
    TEXT,
    TITLE_HEIGHT,
    cell_edges,
    font,
    hatch,
    inferno_lut,
    text_width,
    to_numpy,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..analysis import ImageAnalysis


def split_cells(masks: Mapping[int, Any], size: int) -> np.ndarray:
    """Bool grid of scale ``size``: cells that will be split, i.e. covered by smaller selected cells.

    A cell is split when it is neither kept at its own scale nor inside a kept larger cell.
    """
    sizes = sorted(masks)
    grid = to_numpy(masks[size]) > 0
    rows, cols = grid.shape
    covered = grid.copy()
    for larger in (s for s in sizes if s > size):
        factor = larger // size
        kept = to_numpy(masks[larger]) > 0
        covered |= upsample_cells(kept, factor, (rows, cols))
    return ~covered


@dataclass(frozen=True)
class HeatmapPixels:
    """A heatmap before decoration: (H, W, 3) uint8 pixels and what the caption reports."""

    pixels: np.ndarray
    low: float  # colour range, over the whole (non-partial) cells
    high: float
    cells: int
    split: int | None  # cells outlined as split (None: not shown)
    partial: int


def heatmap_pixels(
    scores: Any, cell_size: int, image_size: ImageHW, *, split: Any | None = None
) -> HeatmapPixels:
    """Inferno colours of one scale's cell scores at the resized image size (nearest-neighbour cells).

    ``scores``: (rows, cols) cell scores of the ``cell_size`` grid; ``image_size``: (height, width)
    of the resized image. The colour range is taken from the whole (non-partial) cells only, so the
    entropy scorer's ``pad_value`` (1e6) on padded cells does not flatten it; partial cells are
    grey stripes. ``split`` (bool, rows x cols) outlines the cells that will be split in cyan.
    """
    height, width = image_size
    values = to_numpy(scores).astype(np.float64)
    partial = partial_cells(height, width, cell_size).numpy() | ~np.isfinite(values)
    whole = values[~partial]
    low, high = (float(whole.min()), float(whole.max())) if whole.size else (0.0, 0.0)
    span = high - low
    level = np.clip((values - low) / span, 0.0, 1.0) if span > 0 else np.full(values.shape, 0.5)
    level = np.nan_to_num(level, nan=0.0)
    indices = (level * 255).round().astype(np.uint8)  # (rows, cols)
    pixels = inferno_lut()[upsample_cells(indices, cell_size, (height, width))]  # (H, W, 3)

    if partial.any():
        partial_pixels = upsample_cells(partial, cell_size, (height, width))
        stripes = hatch(height, width)
        pixels[partial_pixels & stripes] = PARTIAL_HATCH[1]
        pixels[partial_pixels & ~stripes] = PARTIAL_HATCH[0]
    n_split = None
    if split is not None:
        split_grid = to_numpy(split).astype(bool)
        n_split = int(split_grid.sum())
        thickness = 1 if cell_size < 28 else 2
        outline = upsample_cells(split_grid, cell_size, (height, width))
        outline &= cell_edges(height, width, cell_size, thickness)
        pixels[outline] = SPLIT_OUTLINE
    return HeatmapPixels(pixels, low, high, int(values.size), n_split, int(partial.sum()))


def heatmap_image(
    scores: Any,
    cell_size: int,
    image_size: ImageHW,
    *,
    split: Any | None = None,
    label: str = "importance",
) -> Image.Image:
    """:func:`heatmap_pixels` with a title (scale, value range), a colour bar and a key below.

    The heatmap itself sits at (0, :data:`TITLE_HEIGHT`) of the returned image, at the resized
    image size, so it lines up with the overlay.
    """
    heat = heatmap_pixels(scores, cell_size, image_size, split=split)
    title = f"{label}, scale {cell_size} px: range [{format_number(heat.low)}, {format_number(heat.high)}]"
    notes = []
    if heat.split is not None:
        notes.append((SPLIT_OUTLINE, f"split: {heat.split} of {heat.cells} cells"))
    if heat.partial:
        notes.append((PARTIAL_HATCH[0], f"partial (past the image edge): {heat.partial}"))
    return _heatmap_canvas(Image.fromarray(heat.pixels), title, heat.low, heat.high, notes)


def _heatmap_canvas(
    heatmap: Image.Image, title: str, low: float, high: float, notes: Sequence[tuple[tuple[int, int, int], str]]
) -> Image.Image:
    """Title above, colour bar with ticks to the right, notes (swatch + text) below."""
    width, height = heatmap.size
    line = TITLE_HEIGHT - MARGIN // 2
    ticks = [format_number(high), format_number((low + high) / 2), format_number(low)]
    bar_area = MARGIN + COLORBAR_WIDTH + 4 + max(text_width(t) for t in ticks) + MARGIN
    content_width = max(
        width + bar_area, text_width(title) + 2 * MARGIN, *(text_width(n) + 30 for _c, n in notes)
    )
    canvas_height = line + MARGIN + height + MARGIN + line * len(notes)
    canvas = Image.new("RGB", (content_width, canvas_height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, 3), title, fill=TEXT, font=font())
    top = TITLE_HEIGHT
    canvas.paste(heatmap, (0, top))

    bar_height = max(height, 3 * line)
    gradient = inferno_lut()[np.linspace(255, 0, bar_height).round().astype(np.uint8)]
    bar = np.repeat(gradient[:, None, :], COLORBAR_WIDTH, axis=1)
    bar_x = width + MARGIN
    canvas.paste(Image.fromarray(np.ascontiguousarray(bar)), (bar_x, top))
    for fraction, tick in zip((0.0, 0.5, 1.0), ticks):
        y = top + fraction * (bar_height - 1)
        draw.line([(bar_x + COLORBAR_WIDTH, y), (bar_x + COLORBAR_WIDTH + 3, y)], fill=TEXT)
        draw.text((bar_x + COLORBAR_WIDTH + 5, y), tick, fill=TEXT, font=font(), anchor="lm")

    y = top + height + MARGIN
    for colour, note in notes:
        draw.rectangle([MARGIN, y + 2, MARGIN + 14, y + 14], outline=colour, width=3, fill=BACKGROUND)
        draw.text((MARGIN + 22, y + 1), note, fill=TEXT, font=font())
        y += line
    if canvas.height < top + bar_height + MARGIN:  # tiny image: the colour bar is the tallest thing
        grown = Image.new("RGB", (canvas.width, top + bar_height + MARGIN), BACKGROUND)
        grown.paste(canvas, (0, 0))
        canvas = grown
    return canvas


def analysis_heatmaps(analysis: ImageAnalysis) -> dict[int, Image.Image]:
    """{cell size: heatmap image} of every scale, with the cells that will be split outlined."""
    masks = analysis.masks
    return {
        size: heatmap_image(
            analysis.maps[size],
            size,
            analysis.resized_hw,
            split=split_cells(masks, size) if size != min(masks) else None,
            label=f"{analysis.config.scorer} importance",
        )
        for size in sorted(analysis.maps)
    }
