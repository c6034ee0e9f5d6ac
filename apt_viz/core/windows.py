"""Qwen2.5-VL's attention windows over base cells and APT cells: which window a row falls in, rows per window.

The windows are squares of ``window_cells`` base cells (112 px / 14 px = 8), anchored at the image
origin; at the right and bottom edges they are cut by the image (transformers'
``get_vision_window_index`` pads them and drops the padding). A cell of ``s`` base cells aligned to
its own grid lies inside one window when ``s`` divides ``window_cells`` (28 and 56 px cells do), so
a window's APT rows are the cells whose top-left base cell it holds.

:func:`window_order` puts an image's rows in the order the stock tower attends over them: window by
window, and inside a window the stock order of the rows (merge blocks in raster order, raster order
inside a block), so that with every base cell kept it is transformers' own window permutation.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from .layout import merge_block_order


def _windows_across(width_cells: int, window_cells: int) -> int:
    return -(-width_cells // window_cells)


def window_index(positions: torch.Tensor, grid_hw: tuple[int, int], window_cells: int) -> torch.Tensor:
    """The window of every row: raster index over the image's window grid.

    Args:
        positions: (n, 2) (row, col) of each cell's top-left base cell.
        grid_hw: The image's base grid (rows, cols).
        window_cells: Base cells along one side of a window.

    Returns:
        (n,) long window indexes (row-major over the ``ceil(rows / w) x ceil(cols / w)`` windows).
    """
    across = _windows_across(grid_hw[1], window_cells)
    positions = positions.long()
    return (positions[:, 0] // window_cells) * across + positions[:, 1] // window_cells


def window_rows(
    positions: torch.Tensor, sides: torch.Tensor, grid_hw: tuple[int, int], window_cells: int
) -> list[int]:
    """Rows in each non-empty window, in window order.

    Args:
        positions: (n, 2) (row, col) of each cell's top-left base cell.
        sides: (n,) each cell's side in base cells (1, 2, 4).
        grid_hw: The image's base grid (rows, cols).
        window_cells: Base cells along one side of a window.

    Returns:
        One count per window that holds a row (their sum is n).

    Raises:
        ValueError: a cell larger than a window, or one not aligned to its own size (one line).
    """
    if bool((window_cells % sides).any()):
        raise ValueError(f"a cell of {int(sides.max())} base cells does not fit a window of {window_cells}")
    if bool((positions.long() % sides.long().unsqueeze(1)).any()):
        raise ValueError("a cell is not aligned to its own size; it would straddle two windows")
    rows, cols = grid_hw
    count = -(-rows // window_cells) * _windows_across(cols, window_cells)
    counts = torch.bincount(window_index(positions, grid_hw, window_cells), minlength=count)
    return counts[counts > 0].tolist()


def window_order(positions: torch.Tensor, grid_hw: tuple[int, int], window_cells: int, merge_size: int) -> torch.Tensor:
    """The permutation that groups one image's rows by window, in the stock row order inside each window.

    Args:
        positions: (n, 2) (row, col) of each cell's top-left base cell.
        grid_hw: The image's base grid (rows, cols).
        window_cells: Base cells along one side of a window (a multiple of ``merge_size``).
        merge_size: The merger's m: the stock rows come in m x m blocks.

    Returns:
        (n,) long: ``rows[order]`` lists the rows of window 0, then window 1, ... (the windows of
        :func:`window_rows`); inside a window, merge blocks in raster order, raster order inside a
        block, as transformers' ``get_vision_window_index`` orders the stock rows. A larger cell
        sits at its top-left base cell.
    """
    rows, cols = positions.long().unbind(-1)
    stock = merge_block_order(rows, cols, grid_hw[1], merge_size)  # raster of merge blocks over the whole image
    # Merge blocks in raster order over the image are in raster order inside each window; a stable
    # sort by window keeps that order.
    by_window = torch.sort(window_index(positions[stock], grid_hw, window_cells), stable=True).indices
    return stock[by_window]


def stock_window_rows(grid_hw: tuple[int, int], window_cells: int) -> list[int]:
    """Rows in each window of the stock model (every base cell is a row).

    Args:
        grid_hw: The image's base grid (rows, cols).
        window_cells: Base cells along one side of a window.

    Returns:
        One count per window, in window order (``window_cells**2`` inside, fewer at the edges).
    """
    rows, cols = grid_hw
    heights = [min(window_cells, rows - top) for top in range(0, rows, window_cells)]
    widths = [min(window_cells, cols - left) for left in range(0, cols, window_cells)]
    return [height * width for height in heights for width in widths]


def mask_cells(masks: Mapping[int, torch.Tensor], image: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The selected cells of one image of a selection: top-left base cells and sides.

    Args:
        masks: {cell size: (B, rows_i, cols_i) 0/1} selection masks (the smallest size is the base).
        image: Which image of the batch.

    Returns:
        ``(positions, sides)``: (n, 2) long (row, col) in base cells and (n,) long sides in base cells.
    """
    base = min(masks)
    positions, sides = [], []
    for size, mask in sorted(masks.items()):
        scale = size // base
        cells = mask[image].nonzero()
        positions.append(cells * scale)
        sides.append(torch.full((len(cells),), scale, dtype=torch.long, device=cells.device))
    return torch.cat(positions), torch.cat(sides)
