"""Multi-scale grid geometry (SPEC section 2): sizes, shapes, partial cells.

Grid i has cells of size ``p * 2**i`` and covers the image padded at the bottom/right.
A cell that reaches past the image is *partial*.
"""
from __future__ import annotations

import math

import torch


def scale_sizes(patch_size: int, num_scales: int) -> list[int]:
    """Cell sizes of every grid, smallest first: ``[p, 2p, 4p, ...]``."""
    return [patch_size * 2**i for i in range(num_scales)]


def grid_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Rows and columns of the grid of ``size`` cells over an ``height x width`` image."""
    return math.ceil(height / size), math.ceil(width / size)


def partial_cells(height: int, width: int, size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool (rows, cols): True where the cell extends beyond the image."""
    rows, cols = grid_shape(height, width, size)
    row_partial = (torch.arange(1, rows + 1, device=device) * size) > height
    col_partial = (torch.arange(1, cols + 1, device=device) * size) > width
    return row_partial[:, None] | col_partial[None, :]


def infer_image_size(maps: dict[int, torch.Tensor]) -> tuple[int, int]:
    """Image size implied by the base grid when none is given (assumes the base grid is unpadded)."""
    base = min(maps)
    rows, cols = maps[base].shape[-2:]
    return rows * base, cols * base


def upsample_cells(grid: torch.Tensor, factor: int, shape: tuple[int, int]) -> torch.Tensor:
    """Repeat each cell of a (B, h, w) grid ``factor`` times per axis, cropped to ``shape``."""
    out = grid.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    return out[..., : shape[0], : shape[1]]
