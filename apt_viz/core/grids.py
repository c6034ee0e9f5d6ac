"""Multi-scale grid geometry (docs/contract.md, section 2): sizes, shapes, partial cells.

Grid i has cells of size ``p * 2**i`` and covers the image zero-padded at the bottom/right.
A cell that reaches past the image is *partial*. Works on torch tensors and, for the pictures,
on numpy arrays: the same code serves both.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

import torch

ImageHW = tuple[int, int]
Maps = dict[int, torch.Tensor]  # {cell size: (B, rows_i, cols_i)}, smallest size first

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


def scale_sizes(patch_size: int, num_scales: int) -> list[int]:
    """Cell sizes of every grid, smallest first: ``[p, 2p, 4p, ...]``."""
    return [patch_size * 2**i for i in range(num_scales)]


def grid_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Rows and columns of the grid of ``size`` cells over a ``height x width`` image."""
    return math.ceil(height / size), math.ceil(width / size)


def partial_cells(height: int, width: int, size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool (rows, cols): True where the cell extends beyond the ``height x width`` image."""
    rows, cols = grid_shape(height, width, size)
    row_partial = (torch.arange(1, rows + 1, device=device) * size) > height
    col_partial = (torch.arange(1, cols + 1, device=device) * size) > width
    return row_partial[:, None] | col_partial[None, :]


def infer_image_size(maps: Maps) -> ImageHW:
    """Image size implied by the base grid when none is given (assumes the base grid is unpadded)."""
    base = min(maps)
    rows, cols = maps[base].shape[-2:]
    return rows * base, cols * base


@overload
def upsample_cells(grid: torch.Tensor, factor: int, shape: Sequence[int]) -> torch.Tensor: ...


@overload
def upsample_cells(grid: np.ndarray, factor: int, shape: Sequence[int]) -> np.ndarray: ...


def upsample_cells(grid: Any, factor: int, shape: Sequence[int]) -> Any:
    """Repeat each cell of a (..., h, w) grid ``factor`` times per axis, cropped to ``shape``.

    Takes a torch tensor or a numpy array and returns the same kind (nearest-neighbour upsampling:
    cell -> its children, or cell -> pixels with ``factor`` = cell size).
    """
    if isinstance(grid, torch.Tensor):
        return grid.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)[..., : shape[0], : shape[1]]
    import numpy as np

    return np.repeat(np.repeat(grid, factor, axis=-2), factor, axis=-1)[..., : shape[0], : shape[1]]
