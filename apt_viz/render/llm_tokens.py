"""The LLM-token map: the regions of the image that reach Qwen2-VL's language model as one token each.

Vision tokens are not LLM tokens. Qwen2-VL's patch merger folds every m x m group of base
patches into one LLM token, while each larger APT patch is one LLM token by itself, so keeping
30% of the patches can still cost 55-100% of the LLM tokens. The picture outlines every such
region and tints it by what it is: a merge group of base patches (with its patches drawn inside)
or one larger patch. The regions come from :func:`apt_viz.core.accounting.llm_token_grids`, the
function that also counts ``llm_tokens`` in ``stats.json``, so picture and count cannot disagree.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from .._text import format_setting
from ..core.accounting import LLMTokenGrid, llm_token_grids
from ..core.grids import ImageHW, grid_shape
from ._draw import (
    SCALE_COLOURS,
    blend,
    cell_edges,
    cell_pixels,
    region_edges,
    to_numpy,
    weight_of,
    weights,
    with_legend,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..analysis import ImageAnalysis

REGION_TINT = 0.35  # stronger than the patch overlay's 0.18: here the kind of region is the message
INNER_LINE_WEIGHT = 0.5  # patches inside a merge group: half-way between tint and outline


@dataclass(frozen=True)
class TokenRegionKind:
    """One kind of region: ``patch_size`` px patches, ``patches_per_token`` of them per LLM token."""

    patch_size: int
    cell_size: int  # px side of one region
    tokens: int  # regions (LLM tokens) of this kind

    @property
    def patches_per_token(self) -> int:
        return (self.cell_size // self.patch_size) ** 2

    def describe(self, merge_size: int) -> str:
        if self.patches_per_token == 1:
            return f"{self.patch_size} px patch: {self.tokens}"
        return f"{merge_size}x{merge_size} merged {self.patch_size} px patches: {self.tokens}"


@dataclass(frozen=True)
class LLMTokenPixels:
    """The LLM-token map before its legend."""

    pixels: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) int32: the region (one LLM token) of every pixel, 0 .. tokens - 1
    kinds: list[TokenRegionKind]  # smallest patches first, as llm_token_grids orders them

    @property
    def tokens(self) -> int:
        return sum(kind.tokens for kind in self.kinds)


def region_labels(grids: Sequence[LLMTokenGrid], image_hw: ImageHW) -> np.ndarray:
    """(H, W) int32: the index of the LLM token each pixel belongs to (regions numbered kind by kind).

    Args:
        grids: One image's :func:`~apt_viz.core.accounting.llm_token_grids` (batch of one).
        image_hw: (H, W) of the resized image.

    Returns:
        The label map; there are as many labels as LLM tokens.

    Raises:
        ValueError: the grids do not tile the base grid exactly once (masks that are not a partition).
    """
    base = grids[0].patch_size
    rows, cols = grid_shape(*image_hw, base)
    labels = np.full((rows, cols), -1, dtype=np.int32)
    coverage = np.zeros((rows, cols), dtype=np.int32)
    first = 0
    for grid in grids:
        kept = to_numpy(grid.grid).astype(bool)
        if kept.ndim != 2:
            raise ValueError(f"region_labels draws one image; got grids of shape {tuple(grid.grid.shape)}")
        ids = np.full(kept.shape, -1, dtype=np.int32)
        ids[kept] = np.arange(first, first + int(kept.sum()), dtype=np.int32)
        first += int(kept.sum())
        factor = grid.cell_size // base  # a region covers factor x factor base cells (cropped at the edge)
        here = cell_pixels(ids, factor, (rows, cols))
        inside = here >= 0
        labels[inside] = here[inside]
        coverage += inside
    if not (coverage == 1).all():
        raise ValueError("selection masks do not cover every base patch exactly once; cannot map LLM tokens")
    return cell_pixels(labels, base, image_hw)


def llm_token_pixels(
    image: Image.Image, masks: Mapping[int, Any], merge_size: int, *, tint: float = REGION_TINT
) -> LLMTokenPixels:
    """The resized image with every LLM-token region outlined and tinted by its kind.

    Args:
        image: The resized image.
        masks: {cell size: (rows, cols)} 0/1 selection masks of one image (a partition of the base grid).
        merge_size: Qwen2-VL's spatial merge (m).
        tint: How strongly each region is tinted with its kind's colour.

    Returns:
        :class:`LLMTokenPixels`. Merge groups are tinted in the base scale's colour and larger
        patches in theirs (the colours of the patch overlay); the patches inside a merge group are
        drawn in thin lighter lines, so four vision tokens visibly become one.
    """
    rgb = np.asarray(image.convert("RGB"))
    image_hw = (image.height, image.width)
    batched = {size: torch.as_tensor(to_numpy(mask)).unsqueeze(0) for size, mask in masks.items()}
    grids = llm_token_grids(batched, merge_size)
    labels = region_labels(grids, image_hw)

    base = grids[0].patch_size
    rows, cols = grid_shape(*image_hw, base)
    kind = np.zeros((rows, cols), dtype=np.uint8)  # (rows, cols) base grid: index of the kind covering it
    for index, grid in enumerate(grids):
        kind[cell_pixels(to_numpy(grid.grid).astype(bool), grid.cell_size // base, (rows, cols))] = index
    palette = np.array([SCALE_COLOURS[i % len(SCALE_COLOURS)] for i in range(len(grids))], dtype=np.uint8)
    colour = cell_pixels(np.take(palette, kind, axis=0), base, image_hw)  # (H, W, 3)

    weight = weights(image_hw, tint)  # of the kind's colour, per pixel
    if grids[0].is_merge_group:  # the base patches inside each merge group: lines half-way to the colour
        inner = cell_pixels(kind == 0, base, image_hw) & cell_edges(*image_hw, base)
        weight[inner] = weight_of(tint + (1 - tint) * INNER_LINE_WEIGHT)
    weight[region_edges(labels)] = weight_of(1.0)  # outlines in the pure colour
    pixels = blend(rgb, colour, weight)
    kinds = [TokenRegionKind(grid.patch_size, grid.cell_size, int(grid.counts()[0])) for grid in grids]
    return LLMTokenPixels(pixels, labels, kinds)


def llm_token_map(
    image: Image.Image, masks: Mapping[int, Any], merge_size: int, *, caption: str | Sequence[str] | None = None
) -> Image.Image:
    """:func:`llm_token_pixels` (at (0, 0), the resized size) above ``caption`` and a legend of the kinds."""
    drawn = llm_token_pixels(image, masks, merge_size)
    entries = [
        (SCALE_COLOURS[i % len(SCALE_COLOURS)], kind.describe(merge_size)) for i, kind in enumerate(drawn.kinds)
    ]
    lines = [caption] if isinstance(caption, str) else list(caption or [])
    return with_legend(Image.fromarray(drawn.pixels), entries, [*lines, "one outlined region = one LLM token:"])


def llm_token_caption(analysis: ImageAnalysis) -> str:
    """One line: the setting, LLM tokens against their baseline, vision tokens against theirs."""
    stats = analysis.stats
    setting = format_setting(analysis.selection.method, analysis.selection.alpha, analysis.thresholds)
    return (
        f"{analysis.selection.method}, {setting}: {stats.llm_tokens} / {stats.baseline_llm_tokens} LLM tokens "
        f"({stats.llm_retention:.1%}) from {stats.vision_tokens} / {stats.base_tokens} vision tokens "
        f"({stats.retention:.1%})"
    )


def analysis_llm_tokens(analysis: ImageAnalysis) -> Image.Image:
    """The LLM-token map of an analysis, captioned with its LLM and vision tokens and both baselines."""
    return llm_token_map(
        analysis.resized, analysis.masks, analysis.config.merge_size, caption=llm_token_caption(analysis)
    )
