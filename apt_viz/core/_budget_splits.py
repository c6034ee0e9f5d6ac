"""The budget method's split machinery (docs/contract.md, section 4, step 4): the geometry of an
image size, the split priorities and order, and the masks the chosen splits give.
:func:`apt_viz.core.selection.select_patches_by_budget` is the entry point; this is its private half.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from .grids import Maps, partial_cells, upsample_cells

Masks = Maps  # {cell size: (B, rows_i, cols_i) 0/1 float}


@dataclass(frozen=True)
class BudgetGeometry:
    """What the budget method needs to know about an image size, on the maps' device."""

    partial: dict[int, torch.Tensor]  # size -> (rows_i, cols_i) bool, grids above the base
    whole: dict[int, torch.Tensor]  # size -> int64 flat indices of the whole cells, row-major
    candidate_levels: torch.Tensor  # (n,) int64 grid level of every candidate, in candidate order
    min_tokens: int  # tokens after the forced splits alone
    min_llm_tokens: int  # LLM tokens after the forced splits alone, with a merge size of 2


@functools.lru_cache(maxsize=256)
def budget_geometry(
    height: int, width: int, shapes: tuple[tuple[int, int, int], ...], device: torch.device
) -> BudgetGeometry:
    """Partial and whole cells and the forced minimum of grids ``shapes`` ((size, rows, cols), smallest
    first) over a ``height x width`` image, computed on the CPU and moved to ``device`` once."""
    with torch.inference_mode(False):  # cached: must not be an inference tensor when first made in one
        return make_budget_geometry(height, width, shapes, device)


def make_budget_geometry(
    height: int, width: int, shapes: tuple[tuple[int, int, int], ...], device: torch.device
) -> BudgetGeometry:
    sizes = [size for size, _, _ in shapes]
    partial = {size: partial_cells(height, width, size) for size in sizes[1:]}
    whole = {size: (~cells).flatten().nonzero().flatten() for size, cells in partial.items()}
    # Forced splits: every partial cell is replaced by its children inside the image.
    min_tokens = shapes[-1][1] * shapes[-1][2]
    for level in range(1, len(shapes)):
        children = children_inside(shapes[level - 1][1:], shapes[level][1:])
        min_tokens += int((children - 1)[partial[sizes[level]]].sum())
    # LLM tokens (m = 2) = vision tokens - base patches + split cells of the second grid: the base
    # patches under one such cell are one merge group. After the forced splits those cells are the
    # partial ones of the second grid.
    if len(shapes) > 1:
        partial_second = partial[sizes[1]]
        base_under = int(children_inside(shapes[0][1:], shapes[1][1:])[partial_second].sum())
        min_llm_tokens = min_tokens - base_under + int(partial_second.sum())
    else:  # base patches only: every merge group
        min_llm_tokens = math.ceil(shapes[0][1] / 2) * math.ceil(shapes[0][2] / 2)
    levels = range(len(shapes) - 1, 0, -1)
    candidate_levels = torch.cat(
        [torch.full((whole[sizes[i]].numel(),), i, dtype=torch.int64) for i in levels]
        if len(shapes) > 1 else [torch.empty(0, dtype=torch.int64)]
    )
    return BudgetGeometry(
        partial={size: cells.to(device) for size, cells in partial.items()},
        whole={size: index.to(device) for size, index in whole.items()},
        candidate_levels=candidate_levels.to(device),
        min_tokens=min_tokens,
        min_llm_tokens=min_llm_tokens,
    )


def priorities(scores: Maps, sizes: list[int]) -> Maps:
    """Split priority of every cell above the base: min(own score, parent's priority); NaN ranks last."""
    priority: Maps = {}
    for i in range(len(sizes) - 1, 0, -1):
        own = torch.nan_to_num(scores[sizes[i]], nan=-math.inf, posinf=math.inf)
        if i < len(sizes) - 1:
            own = torch.minimum(own, upsample_cells(priority[sizes[i + 1]], 2, own.shape[-2:]))
        priority[sizes[i]] = own
    return priority


def children_inside(child_shape: tuple[int, int], shape: tuple[int, int]) -> torch.Tensor:
    """(rows, cols) of a grid of ``shape``: how many cells of the child grid (``child_shape``) lie under each cell."""
    child_rows, child_cols = child_shape
    rows, cols = shape
    row_count = (child_rows - 2 * torch.arange(rows)).clamp(max=2)
    col_count = (child_cols - 2 * torch.arange(cols)).clamp(max=2)
    return row_count[:, None] * col_count[None, :]


def split_order(candidates: torch.Tensor) -> torch.Tensor:
    """(B, n) candidate indices in split order.

    A stable descending sort keeps the candidate order (larger cell, row, column) among equal
    priorities, and parents before their children (a child's priority never exceeds its parent's).
    """
    return torch.sort(candidates, dim=1, descending=True, stable=True).indices


def choose_splits(candidates: torch.Tensor, splits: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
    """(B, n) bool: the ``splits[b]`` highest-priority candidates of each image ``b``.

    The count is a (B,) tensor, so no image's count has to be read back to the host.
    """
    order = split_order(candidates) if order is None else order
    rank = torch.arange(candidates.shape[1], device=candidates.device)
    chosen = torch.zeros_like(candidates, dtype=torch.bool)
    return chosen.scatter_(1, order, rank[None, :] < splits[:, None])


def choose_splits_within(
    candidates: torch.Tensor, costs: torch.Tensor, allowance: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Splits in order while their summed ``costs`` (n,) stay within ``allowance``, per image.

    Returns:
        The chosen candidates (B, n) bool, the number of splits (B,) and their summed cost (B,),
        all on the device (the costs are non-negative, so the splits are a prefix of the order).
    """
    order = split_order(candidates)
    cost = costs.expand_as(order).gather(1, order)  # (B, n) in split order
    within = cost.cumsum(dim=1) <= allowance
    splits = within.sum(dim=1)
    return choose_splits(candidates, splits, order), splits, (cost * within).sum(dim=1)


def split_grids(chosen: torch.Tensor, geometry: BudgetGeometry, sizes: list[int], levels: list[int]) -> Maps:
    """{size: (B, rows_i, cols_i) bool} cells that are split: the partial ones and the chosen whole ones."""
    batch = chosen.shape[0]
    split: Maps = {}
    offset = 0
    for i in levels:
        whole = geometry.whole[sizes[i]]
        count = whole.numel()
        grid = geometry.partial[sizes[i]].expand(batch, -1, -1).clone()
        grid.view(batch, -1).index_copy_(1, whole, chosen[:, offset : offset + count])
        split[sizes[i]] = grid
        offset += count
    return split


def masks_from_splits(split: Maps, maps: Maps, sizes: list[int]) -> Masks:
    """A cell is selected when its parent is split (the top grid: always) and it is not split itself."""
    batch, device = maps[sizes[0]].shape[0], maps[sizes[0]].device
    masks: Masks = {}
    for i, size in enumerate(sizes):
        shape = maps[size].shape[-2:]
        parent_split = (
            upsample_cells(split[sizes[i + 1]], 2, shape)
            if i + 1 < len(sizes)
            else torch.ones(batch, *shape, dtype=torch.bool, device=device)
        )
        own_split = split.get(size, torch.zeros(batch, *shape, dtype=torch.bool, device=device))
        masks[size] = (parent_split & ~own_split).float()
    return masks
