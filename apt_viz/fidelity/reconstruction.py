"""What the vision tower sees: the image rebuilt from the APT rows the model embeds (docs/fidelity.md).

A cell of grid i is embedded from one ``p x p`` row: its pixels in the image downsampled by
``2**i`` (:func:`apt_viz.core.patches.construct_patch_groups`, the code the model path runs). Each
row is upsampled back to its cell (bilinear, ``align_corners=False``, cell by cell, so no cell
reads its neighbours) and pasted at its place; base rows are pasted as they are, so every kept
base patch is exact. Images are float RGB in [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.grids import ImageHW, Maps, grid_shape
from ..core.patches import construct_patch_groups


def reconstruct(images: torch.Tensor, masks: Maps, patch_size: int) -> torch.Tensor:
    """The images as the APT rows selected by ``masks`` show them.

    Args:
        images: (B, C, H, W) float, e.g. RGB in [0, 1] (any range: every step is linear).
        masks: {cell size: (B, rows_i, cols_i)} 0/1 selection masks (a partition of the base grid).
        patch_size: Base patch size p.

    Returns:
        (B, C, H, W), same dtype: every selected cell filled with its row upsampled to the cell.
    """
    batch, channels, height, width = images.shape
    groups = construct_patch_groups(images, masks, patch_size, full_patches=False)
    padded = [(rows * size, cols * size) for size in masks for rows, cols in [grid_shape(height, width, size)]]
    canvas = images.new_zeros(batch, channels, max(h for h, _ in padded), max(w for _, w in padded))  # every grid fits
    for level, size in enumerate(sorted(masks)):
        rows, cols = grid_shape(height, width, size)
        rows_of_cells = groups[f"resized_patches_{size}"]  # (n, C, p, p), in the mask's (image, row, col) order
        if rows_of_cells.shape[0] == 0:
            continue
        if level > 0:
            rows_of_cells = F.interpolate(rows_of_cells, size=(size, size), mode="bilinear", align_corners=False)
        # b ch (r y) (c x) -> b r c ch y x, a view of the canvas: the assignment pastes in place
        cells = canvas[:, :, : rows * size, : cols * size].view(batch, channels, rows, size, cols, size)
        cells.permute(0, 2, 4, 1, 3, 5)[masks[size].bool()] = rows_of_cells
    return canvas[:, :, :height, :width].contiguous()


def upsample(images: torch.Tensor, size: ImageHW) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, H, W) bilinear, ``align_corners=False`` (unchanged when already that size)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False)
