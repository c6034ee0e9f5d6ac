"""The one seam: config -> importance maps -> selection -> token counts.

The CLI (through :func:`apt_viz.analysis.analyze_image`), :class:`~apt_viz.core.tokenizer.PatchTokenizer`,
the Hugging Face processors and ``apt-viz stats`` all call these three functions, so they give the
same numbers for the same pixels and settings.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .accounting import TokenStats, token_stats
from .config import APTConfig
from .grids import ImageHW, Maps
from .scoring import compute_importance_maps
from .selection import Selection, select_patches


@dataclass
class APTResult:
    """The APT analysis of a batch: maps and masks keep the batch dimension and the input's device."""

    maps: Maps  # {cell size: (B, rows_i, cols_i)}
    selection: Selection
    stats: list[TokenStats]  # one per image


def compute_maps(images: torch.Tensor, config: APTConfig) -> Maps:
    """Importance maps with the scorer settings of ``config``.

    Args:
        images: (B, C, H, W) in [0, 255], any device.
        config: Supplies scorer, patch size, number of scales, bins, aggregate and seed.

    Returns:
        {cell size: (B, rows_i, cols_i)} float32 scores, smallest size first.
    """
    return compute_importance_maps(
        images, config.scorer, config.patch_size, config.num_scales,
        bins=config.bins, aggregate=config.aggregate, seed=config.seed,
    )


def select(maps: Maps, config: APTConfig, image_size: ImageHW | None = None) -> APTResult:
    """Select patches from ``maps`` with the selection settings of ``config`` and count the tokens.

    Args:
        maps: {cell size: (B, rows_i, cols_i)} importance maps (from :func:`compute_maps`).
        config: Supplies method, alpha, thresholds, budget unit and merge size.
        image_size: (H, W) of the images, to locate partial cells (None: the base grid, unpadded).

    Returns:
        An :class:`APTResult` holding ``maps``, the selection and per-image token counts.
    """
    selection = select_patches(
        maps, config.method, alpha=config.alpha, thresholds=config.thresholds, image_size=image_size,
        budget_unit=config.budget_unit, merge_size=config.merge_size,
    )
    return APTResult(maps, selection, token_stats(selection.masks, config.merge_size))


def run_apt(images: torch.Tensor, config: APTConfig) -> APTResult:
    """Score, select and count for a batch of same-size images.

    Args:
        images: (B, C, H, W) in [0, 255], any device; H and W are the image size (no padding).
        config: All scorer and selection settings.

    Returns:
        An :class:`APTResult` (maps and masks on the images' device, per-image token counts).
    """
    height, width = images.shape[-2:]
    return select(compute_maps(images, config), config, (height, width))
