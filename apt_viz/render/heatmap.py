"""Importance heatmaps: one picture per scale, cells coloured by score at the resized image size.

The colour range covers the whole cells only (partial cells, where the entropy scorer puts
``pad_value`` = 1e6, are grey stripes), and the cells that will be split are outlined in cyan.
Each map is drawn twice: bare, and blended over the image (:func:`show_heatmap_on_image`, the
convention of pytorch-grad-cam's ``show_cam_on_image``) so the object that drives a score shows.
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
    IMAGE_WEIGHT,
    MARGIN,
    PARTIAL_HATCH,
    SPLIT_OUTLINE,
    TEXT,
    TITLE_HEIGHT,
    blend,
    cell_edges,
    cell_pixels,
    font,
    hatch,
    inferno_lut,
    text_width,
    to_numpy,
    weights,
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
    outline: np.ndarray | None = None  # (H, W) bool: the split outline's pixels (None: not shown)


def heatmap_pixels(
    scores: Any, cell_size: int, image_size: ImageHW, *, split: Any | None = None
) -> HeatmapPixels:
    """Inferno colours of one scale's cell scores at the resized image size (nearest-neighbour cells).

    Args:
        scores: (rows, cols) cell scores of the ``cell_size`` grid (tensor or array).
        cell_size: Cell side in pixels.
        image_size: (H, W) of the resized image.
        split: Optional (rows, cols) bool: the cells that will be split, outlined in cyan.

    Returns:
        :class:`HeatmapPixels`. The colour range is taken from the whole (non-partial) cells only,
        so the entropy scorer's ``pad_value`` (1e6) on padded cells does not flatten it; partial
        cells are grey stripes.
    """
    height, width = image_size
    values = to_numpy(scores).astype(np.float64)
    partial = partial_cells(height, width, cell_size).numpy() | ~np.isfinite(values)
    whole = values[~partial]
    low, high = (float(whole.min()), float(whole.max())) if whole.size else (0.0, 0.0)
    span = high - low
    level = np.clip((values - low) / span, 0.0, 1.0) if span > 0 else np.full(values.shape, 0.5)
    level = np.nan_to_num(level, nan=0.0)
    colours = np.take(inferno_lut(), (level * 255).round().astype(np.uint8), axis=0)  # (rows, cols, 3)
    pixels = cell_pixels(colours, cell_size, image_size)  # (H, W, 3)

    if partial.any():
        _hatch_partial_cells(pixels, partial, cell_size)
    n_split = outline = None
    if split is not None:
        split_grid = to_numpy(split).astype(bool)
        n_split = int(split_grid.sum())
        thickness = 1 if cell_size < 28 else 2
        outline = cell_pixels(split_grid, cell_size, image_size) & cell_edges(height, width, cell_size, thickness)
        pixels[outline] = SPLIT_OUTLINE
    return HeatmapPixels(pixels, low, high, int(values.size), n_split, int(partial.sum()), outline)


def _hatch_partial_cells(pixels: np.ndarray, partial: np.ndarray, cell_size: int) -> None:
    """Grey stripes over the partial cells of ``pixels`` (in place).

    Only the bounding box of the partial cells is touched: on a smart-resized image that is the
    strip of the last row or column of a coarse grid, not the whole picture.
    """
    height, width = pixels.shape[:2]
    rows = np.flatnonzero(partial.any(axis=1))
    cols = np.flatnonzero(partial.any(axis=0))
    y0, x0 = int(rows[0]) * cell_size, int(cols[0]) * cell_size
    box = (min(height, (int(rows[-1]) + 1) * cell_size) - y0, min(width, (int(cols[-1]) + 1) * cell_size) - x0)
    inside = cell_pixels(partial[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], cell_size, box)
    stripes = hatch(*box, offset=y0 + x0)  # in phase with stripes drawn over the whole picture
    region = pixels[y0 : y0 + box[0], x0 : x0 + box[1]]
    region[inside & stripes] = PARTIAL_HATCH[1]
    region[inside & ~stripes] = PARTIAL_HATCH[0]


def show_heatmap_on_image(
    image_rgb: np.ndarray, heat: HeatmapPixels, image_weight: float = IMAGE_WEIGHT
) -> np.ndarray:
    """The heatmap blended over the image, as pytorch-grad-cam's ``show_cam_on_image`` does.

    grad-cam returns ``(1 - image_weight) * heatmap + image_weight * img`` (default weight 0.5)
    and then divides by its maximum. That last step is left out here: it rescales the brightness
    per picture, so one score would get different colours in different pictures and the colour bar
    would no longer read true. The split outline is drawn on top unblended, so it stays as crisp
    as on the bare map.

    Args:
        image_rgb: (H, W, 3) uint8 resized image.
        heat: Its :class:`HeatmapPixels` (same H, W).
        image_weight: Weight of the image in [0, 1]; the heatmap gets ``1 - image_weight``.

    Returns:
        (H, W, 3) uint8 pixels.
    """
    if not 0.0 <= image_weight <= 1.0:
        raise ValueError(f"image_weight must be in [0, 1], got {image_weight}")
    if image_rgb.shape != heat.pixels.shape:
        raise ValueError(f"image {image_rgb.shape} and heatmap {heat.pixels.shape} differ in size")
    weight = weights(heat.pixels.shape[:2], image_weight)  # of the image, per pixel
    if heat.outline is not None:
        weight[heat.outline] = 0  # the outline as on the bare map
    return blend(heat.pixels, image_rgb, weight)


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
    return decorate_heatmap(heat.pixels, heat, cell_size, label)


def decorate_heatmap(pixels: np.ndarray, heat: HeatmapPixels, cell_size: int, label: str) -> Image.Image:
    """``pixels`` (the bare map, or the map on the image) with a title, colour bar and key of ``heat``."""
    title = f"{label}, scale {cell_size} px: range [{format_number(heat.low)}, {format_number(heat.high)}]"
    notes = []
    if heat.split is not None:
        notes.append((SPLIT_OUTLINE, f"split: {heat.split} of {heat.cells} cells"))
    if heat.partial:
        notes.append((PARTIAL_HATCH[0], f"partial (past the image edge): {heat.partial}"))
    return _heatmap_canvas(Image.fromarray(pixels), title, heat.low, heat.high, notes)


def importance_overlay(
    image: Image.Image,
    scores: Any,
    cell_size: int,
    *,
    split: Any | None = None,
    label: str = "importance",
    image_weight: float = IMAGE_WEIGHT,
) -> Image.Image:
    """The heatmap of one scale blended over ``image`` (:func:`show_heatmap_on_image`), decorated as
    :func:`heatmap_image` (title, colour bar of the pure colour map, key); same placement."""
    heat = heatmap_pixels(scores, cell_size, (image.height, image.width), split=split)
    pixels = show_heatmap_on_image(np.asarray(image.convert("RGB")), heat, image_weight)
    return decorate_heatmap(pixels, heat, cell_size, f"{label} on the image")


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


@dataclass(frozen=True)
class AnalysisHeatmaps:
    """Every scale's heatmap of an analysis, bare and on the image: {cell size: picture}."""

    bare: dict[int, Image.Image]
    on_image: dict[int, Image.Image]


def analysis_heatmap_pictures(analysis: ImageAnalysis, image_weight: float = IMAGE_WEIGHT) -> AnalysisHeatmaps:
    """Both heatmaps of every scale, colouring each map once; the split cells are outlined (not at the base).

    Args:
        analysis: The analysed image.
        image_weight: Weight of the image in the blended pictures (grad-cam's default, 0.5).

    Returns:
        :class:`AnalysisHeatmaps` at the resized image size.
    """
    masks = analysis.masks
    image_rgb = np.asarray(analysis.resized.convert("RGB"))
    label = f"{analysis.config.scorer} importance"
    bare, on_image = {}, {}
    for size in sorted(analysis.maps):
        split = split_cells(masks, size) if size != min(masks) else None
        heat = heatmap_pixels(analysis.maps[size], size, analysis.resized_hw, split=split)
        bare[size] = decorate_heatmap(heat.pixels, heat, size, label)
        on_image[size] = decorate_heatmap(
            show_heatmap_on_image(image_rgb, heat, image_weight), heat, size, f"{label} on the image"
        )
    return AnalysisHeatmaps(bare, on_image)


def analysis_heatmaps(analysis: ImageAnalysis) -> dict[int, Image.Image]:
    """{cell size: bare heatmap} of every scale, with the cells that will be split outlined."""
    return analysis_heatmap_pictures(analysis).bare
