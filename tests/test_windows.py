"""Qwen2.5-VL's attention windows (apt_viz.core.windows): stock rows per window equal transformers',
APT cells fall in the window of their top-left base cell, a hand-worked APT case, and the window order
of every base cell is transformers' own window permutation."""
from __future__ import annotations

import pytest
import torch
from transformers.vision_utils import get_vision_window_index

from apt_viz.core.config import APTConfig
from apt_viz.core.layout import merge_block_order
from apt_viz.core.pipeline import run_apt
from apt_viz.core.windows import mask_cells, stock_window_rows, window_index, window_order, window_rows


@pytest.mark.parametrize("grid_hw", [(16, 16), (36, 50), (8, 8), (10, 6), (2, 2), (74, 30)])
def test_stock_windows_are_transformers_windows(grid_hw):
    # 14 px patches, merge 2, 112 px windows: transformers counts its windows in merged cells.
    _, cu_window_seqlens = get_vision_window_index(torch.tensor([[1, *grid_hw]]), 2, 112, 14)
    assert stock_window_rows(grid_hw, 8) == torch.diff(cu_window_seqlens).tolist()


@pytest.mark.parametrize("grid_hw", [(16, 16), (36, 50), (10, 6), (2, 2), (12, 18)])
@pytest.mark.parametrize("given", ["stock", "raster"])
def test_the_window_order_of_base_cells_is_transformers_permutation(grid_hw, given):
    """Every base cell kept, given in the stock row order (merge blocks) or in raster order: the rows
    come out in the order transformers' window permutation puts the stock rows (groups of 4)."""
    rows, cols = torch.meshgrid(torch.arange(grid_hw[0]), torch.arange(grid_hw[1]), indexing="ij")
    raster = torch.stack([rows.flatten(), cols.flatten()], dim=1)
    stock = raster[merge_block_order(raster[:, 0], raster[:, 1], grid_hw[1], 2)]
    positions = stock if given == "stock" else raster
    window_groups, _ = get_vision_window_index(torch.tensor([[1, *grid_hw]]), 2, 112, 14)
    expected = stock[(window_groups[:, None] * 4 + torch.arange(4)).flatten()]  # the stock rows, window by window
    assert torch.equal(positions[window_order(positions, grid_hw, 8, 2)], expected)


def test_every_base_cell_kept_gives_the_stock_windows():
    rows, cols = torch.meshgrid(torch.arange(36), torch.arange(50), indexing="ij")
    positions = torch.stack([rows.flatten(), cols.flatten()], dim=1)
    sides = torch.ones(len(positions), dtype=torch.long)
    assert window_rows(positions, sides, (36, 50), 8) == stock_window_rows((36, 50), 8)


def test_apt_cells_by_hand():
    # A 12 x 10 grid, windows of 8 cells: a 4-cell (56 px) cell at (0, 0), one at (4, 8) (right window),
    # a 2-cell at (8, 2) (bottom left), base cells at (9, 9) (bottom right) and (7, 7) (top left).
    positions = torch.tensor([[0, 0], [4, 8], [8, 2], [9, 9], [7, 7]])
    sides = torch.tensor([4, 2, 2, 1, 1])
    assert window_index(positions, (12, 10), 8).tolist() == [0, 1, 2, 3, 0]
    assert window_rows(positions, sides, (12, 10), 8) == [2, 1, 1, 1]
    with pytest.raises(ValueError, match="not aligned to its own size"):
        window_rows(torch.tensor([[2, 0]]), torch.tensor([4]), (12, 10), 8)
    with pytest.raises(ValueError, match="does not fit a window of 8"):
        window_rows(torch.tensor([[0, 0]]), torch.tensor([16]), (32, 32), 8)


def test_a_selection_partitions_into_windows(photo_tensor):
    image = photo_tensor("rocket")
    selection = run_apt(image, APTConfig(method="budget", alpha=0.3)).selection
    positions, sides = mask_cells(selection.masks)
    grid_hw = (image.shape[-2] // 14, image.shape[-1] // 14)
    rows = window_rows(positions, sides, grid_hw, 8)
    assert sum(rows) == len(positions) == int(sum(mask.sum() for mask in selection.masks.values()))
    # Each window's cells cover exactly its base cells.
    covered = torch.zeros(len(stock_window_rows(grid_hw, 8)), dtype=torch.long)
    covered.index_add_(0, window_index(positions, grid_hw, 8), sides * sides)
    assert covered.tolist() == stock_window_rows(grid_hw, 8)
