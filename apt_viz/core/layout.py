"""Where the APT rows of a batch of images go in a Qwen vision tower and its LLM (pure torch).

:func:`apt_layout` checks the ``apt_*`` inputs (:mod:`apt_viz.core.apt_inputs`) and turns them
into what the model needs: the rotary position of every row, the attention boundaries of every
image, the rows the merger reads for every LLM token and the merged-grid cell of every LLM token. :func:`unpatchify` and
:func:`merge_block_order` translate between an image and the stock Qwen2-VL row format.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .apt_inputs import APTInputs, check_apt_inputs
from .config import APTConfig

NUM_SCALES = APTConfig.num_scales  # the processors' scales: p, 2p, 4p


@dataclass(frozen=True)
class APTLayout:
    """Where the APT rows of a batch of images go in the vision tower and in the LLM.

    Shapes: n = sum(apt_num_tokens) rows, L = sum(apt_num_llm_tokens) LLM tokens, m = merge size.
    """

    vision_positions: torch.Tensor  # (n, 2) float32 (row, col) of each cell's centre, base-patch units
    cu_seqlens: torch.Tensor  # (images + 1,) int32 row boundaries of the images
    merge_index: torch.Tensor  # (L * m * m,) the rows the merger reads, m * m per LLM token, in LLM order
    llm_cells: tuple[torch.Tensor, ...]  # per image (L_i,): merged-grid cell (raster index) of each LLM token
    llm_tokens: tuple[int, ...]  # L_i per image
    image_index: torch.Tensor  # (n,) long: the image of every row
    cell_sides: torch.Tensor  # (n,) long: the side of every row's cell in base patches (1, 2, 4)
    cell_positions: torch.Tensor  # (n, 2) long: (row, col) of every row's top-left base cell


def apt_layout(
    inputs: APTInputs,
    image_grid_thw: torch.Tensor,
    patch_size: int,
    merge_size: int,
    num_scales: int = NUM_SCALES,
    row_width: int | None = None,
    device: torch.device | None = None,
) -> APTLayout:
    """The :class:`APTLayout` of the processor's ``apt_*`` inputs, once they pass every check.

    Args:
        inputs: The ``apt_*`` tensors (``pixel_values`` may be None: then its checks are skipped).
        image_grid_thw: (images, 3) stock grids (t, h, w) in base patches.
        patch_size: Base patch size p (14 or 16).
        merge_size: Spatial merge size m (2).
        num_scales: Cell sizes allowed: p * 2**k for k < num_scales.
        row_width: Values per row of ``pixel_values`` the vision tower takes (C * T * p * p), if known.
        device: Where the model runs: the inputs must be there (None: not checked).

    Returns:
        The layout. Rows may come in any order: a base row's merge group is found by position.

    Raises:
        ValueError: the first inconsistency, in one line naming the image (and row or cell):
            :mod:`apt_viz.core.apt_inputs` lists them.
    """
    rows = check_apt_inputs(inputs, image_grid_thw, patch_size, merge_size, num_scales, row_width, device)
    m = merge_size
    centre = (rows.cells.to(torch.float32) - 1) / 2  # 0 for a base patch: its stock integer position
    llm_cell, merge_rows = _merge_groups(rows.rows, rows.cols, rows.cells, rows.image, rows.grids, m)
    counts = tuple(rows.llm_tokens)
    return APTLayout(
        vision_positions=torch.stack([rows.rows + centre, rows.cols + centre], dim=-1),
        cu_seqlens=F.pad(inputs.num_tokens.cumsum(0, dtype=torch.int32), (1, 0)),
        merge_index=merge_rows.flatten(),
        llm_cells=tuple(llm_cell.split(counts)),
        llm_tokens=counts,
        image_index=rows.image,
        cell_sides=rows.cells,
        cell_positions=torch.stack([rows.rows, rows.cols], dim=-1),
    )


def _merge_groups(
    rows: torch.Tensor, cols: torch.Tensor, cells: torch.Tensor, image: torch.Tensor, grids: torch.Tensor, m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LLM tokens of a checked batch and the m * m rows the merger reads for each.

    A token starts at a base row at the top-left of its merge group, or at any larger cell. Tokens
    are ordered by image, then by the raster index of the merged-grid cell they start at. The
    cells are known to tile every image (checked), so every merge group of base cells is whole.

    Returns:
        ``llm_cell`` (L,) the merged-grid cell of each token,
        ``merge_rows`` (L, m * m) the rows the merger reads: a group's base rows in stock order
        (raster inside the group), or a larger cell's row m * m times.
    """
    device = rows.device
    grid_w = grids[image, 2]
    cell_offset = F.pad((grids[:, 1] * grids[:, 2]).cumsum(0), (1, 0))  # first base cell of each image
    base_cell = cell_offset[image] + rows * grid_w + cols  # batch-wide index of each row's top-left base cell
    is_base = cells == 1
    row_of_cell = torch.zeros(int(cell_offset[-1]), dtype=torch.long, device=device)  # larger cells: unused
    row_of_cell[base_cell[is_base]] = torch.arange(len(cells), device=device)[is_base]

    starts = (~is_base | ((rows % m == 0) & (cols % m == 0))).nonzero().squeeze(-1)
    llm_cell = (rows[starts] // m) * (grid_w[starts] // m) + cols[starts] // m
    merged_offset = F.pad((grids[:, 1] * grids[:, 2] // (m * m)).cumsum(0), (1, 0))
    order = torch.argsort(merged_offset[image[starts]] + llm_cell)
    starts, llm_cell = starts[order], llm_cell[order]

    dy, dx = torch.meshgrid(torch.arange(m, device=device), torch.arange(m, device=device), indexing="ij")
    group_cells = base_cell[starts, None] + dy.flatten() * grid_w[starts, None] + dx.flatten()  # (L, m*m)
    group_rows = row_of_cell[group_cells.clamp(max=len(row_of_cell) - 1)]
    merge_rows = torch.where(~is_base[starts, None], starts[:, None].expand(-1, m * m), group_rows)
    return llm_cell, merge_rows


def unpatchify(
    rows: torch.Tensor, grid_h: int, grid_w: int, patch_size: int, merge_size: int, temporal_patch_size: int
) -> torch.Tensor:
    """Inverse of the stock Qwen2-VL ``patchify`` for one image: (grid_h * grid_w, C*T*p*p) -> (1, C, H, W).

    Takes the first temporal copy (an image's copies are identical).
    """
    p, m, t = patch_size, merge_size, temporal_patch_size
    channels = rows.shape[-1] // (t * p * p)
    blocks = rows.reshape(grid_h // m, grid_w // m, m, m, channels, t, p, p)[..., 0, :, :]
    # bh bw m1 m2 c y x -> c (bh m1 y) (bw m2 x)  (rows: merge blocks, first temporal copy taken above)
    image = blocks.permute(4, 0, 2, 5, 1, 3, 6).reshape(channels, grid_h * p, grid_w * p)
    return image.unsqueeze(0)


def merge_block_order(rows: torch.Tensor, cols: torch.Tensor, grid_w: int, merge_size: int) -> torch.Tensor:
    """Permutation that sorts base cells (row, col) into the stock ``pixel_values`` order:
    m x m merge blocks in raster order, raster order inside each block."""
    m = merge_size
    blocks_per_row = -(-grid_w // m)
    key = ((rows // m) * blocks_per_row + cols // m) * (m * m) + (rows % m) * m + cols % m
    return torch.argsort(key)
