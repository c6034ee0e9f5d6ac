"""Patch selection (SPEC section 4): importance maps -> masks that partition the base grid.

Every method returns ``{cell size: 0/1 float tensor (B, h_i, w_i)}`` in which each base cell is
covered by exactly one selected cell. Partial cells of grids above the base are never kept whole.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .config import METHODS, check_selection_args, default_thresholds
from .grids import infer_image_size, partial_cells, upsample_cells


Masks = dict[int, torch.Tensor]
ImageSize = tuple[int, int]


@dataclass
class Selection:
    """What a selection method decided for a batch."""

    method: str
    masks: Masks
    alpha: float | None = None
    thresholds: torch.Tensor | None = None  # (B, S-1): the thresholds applied (effective ones for v2)
    budget_info: list[dict[str, Any]] | None = None  # per image, budget only


# --- shared steps --------------------------------------------------------------------------------

def _sizes(maps: dict[int, torch.Tensor]) -> list[int]:
    return sorted(maps)


def _selectable_scores(maps: dict[int, torch.Tensor], image_size: ImageSize | None) -> dict[int, torch.Tensor]:
    """Scores with partial cells of grids above the base set to +inf (never kept whole)."""
    height, width = image_size or infer_image_size(maps)
    sizes = _sizes(maps)
    scores = {sizes[0]: maps[sizes[0]]}
    for size in sizes[1:]:
        partial = partial_cells(height, width, size, maps[size].device)
        scores[size] = maps[size].float().masked_fill(partial, math.inf)
    return scores


def resolve_hierarchy(keep: dict[int, torch.Tensor]) -> Masks:
    """Official APT step: from the largest scale down, a kept cell removes every smaller cell under it."""
    sizes = _sizes(keep)
    masks = {size: keep[size].float() for size in sizes}
    for i in range(len(sizes) - 1, 0, -1):
        for j in range(i):
            small = sizes[j]
            covered = upsample_cells(masks[sizes[i]], sizes[i] // small, masks[small].shape[-2:])
            masks[small] = masks[small] * (1 - covered)
    return masks


# --- v1 / v2 -------------------------------------------------------------------------------------

def select_patches_by_threshold(
    maps: dict[int, torch.Tensor],
    thresholds: Sequence[float] | torch.Tensor,
    image_size: ImageSize | None = None,
) -> Masks:
    """v1: keep a cell of scale i when its score < ``thresholds[i-1]`` (a list, or a (B, S-1) tensor).

    ``image_size`` (H, W) locates partial cells; by default the base grid is taken as unpadded.
    """
    sizes = _sizes(maps)
    if len(thresholds) != len(sizes) - 1 and not (torch.is_tensor(thresholds) and thresholds.dim() == 2):
        raise ValueError(f"need {len(sizes) - 1} thresholds (one per scale above the base), got {len(thresholds)}")
    scores = _selectable_scores(maps, image_size)
    keep = {sizes[0]: torch.ones_like(maps[sizes[0]], dtype=torch.float32)}
    for i, size in enumerate(sizes[1:]):
        if torch.is_tensor(thresholds):
            limit = thresholds.to(scores[size].device, torch.float32)
            limit = limit[:, i, None, None] if limit.dim() == 2 else limit[i]
        else:
            limit = float(thresholds[i])
        keep[size] = scores[size] < limit
    return resolve_hierarchy(keep)


def dynamic_thresholds(
    maps: dict[int, torch.Tensor], alpha: float, image_size: ImageSize | None = None
) -> torch.Tensor:
    """v2's thresholds, (B, S-1): ``alpha * mean(score)`` over the non-partial cells of each scale.

    NaN where a scale has no whole cell (then nothing is kept at that scale).
    """
    scores = _selectable_scores(maps, image_size)
    columns = []
    for size in _sizes(maps)[1:]:
        score = scores[size].flatten(1)
        whole = torch.isfinite(score)
        total = torch.where(whole, score, torch.zeros_like(score)).sum(dim=1, dtype=torch.float64)
        count = whole.sum(dim=1)
        mean = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))
        columns.append((alpha * mean).float())
    batch = next(iter(maps.values())).shape[0]
    if not columns:
        return torch.empty(batch, 0)
    return torch.stack(columns, dim=1)


def select_patches_by_threshold_v2(
    maps: dict[int, torch.Tensor], alpha: float = 1.0, image_size: ImageSize | None = None
) -> Masks:
    """v2: v1 with per-image thresholds ``alpha * mean(score_i)``; higher alpha -> fewer tokens."""
    return select_patches_by_threshold(maps, dynamic_thresholds(maps, alpha, image_size), image_size)


# --- budget --------------------------------------------------------------------------------------

def budget_target(alpha: float, base_tokens: int) -> int:
    """T = round(alpha * N) (Python's round: halves go to the even integer)."""
    return round(alpha * base_tokens)


def select_patches_by_budget(
    maps: dict[int, torch.Tensor], alpha: float, image_size: ImageSize | None = None
) -> tuple[Masks, list[dict[str, Any]]]:
    """budget: quadtree splits in order of priority until ``round(alpha * N)`` tokens (SPEC 4).

    Returns the masks and, per image, ``budget_info`` (alpha, base_small_tokens, base_tokens,
    budget, k, actual_tokens, actual_retention, target_retention, tokens_per_scale, clamped).
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1] for budget, got {alpha}")
    sizes = _sizes(maps)
    height, width = image_size or infer_image_size(maps)
    scores = _selectable_scores(maps, image_size)
    base = maps[sizes[0]]
    batch, device = base.shape[0], base.device
    n_base = base.shape[-2] * base.shape[-1]
    target = budget_target(alpha, n_base)

    # Priorities top-down: a child never outranks its parent. NaN scores rank last.
    priority: dict[int, torch.Tensor] = {}
    for i in range(len(sizes) - 1, 0, -1):
        size = sizes[i]
        own = torch.nan_to_num(scores[size], nan=-math.inf, posinf=math.inf)
        if i < len(sizes) - 1:
            own = torch.minimum(own, upsample_cells(priority[sizes[i + 1]], 2, own.shape[-2:]))
        priority[size] = own

    # Forced splits (partial cells) and the minimum they leave.
    partial = {size: partial_cells(height, width, size, device) for size in sizes[1:]}
    top = sizes[-1]
    min_tokens = maps[top].shape[-2] * maps[top].shape[-1]
    for i, size in enumerate(sizes[1:], start=1):
        min_tokens += int((_children_inside(maps, sizes, i) - 1)[partial[size]].sum())

    # Candidates: whole cells above the base, largest scale first, row-major; a stable descending
    # sort then breaks priority ties by (larger cell, row, column) and keeps parents before children.
    levels = list(range(len(sizes) - 1, 0, -1))
    cand_priority = torch.cat(
        [priority[sizes[i]].flatten(1)[:, ~partial[sizes[i]].flatten()] for i in levels], dim=1
    ) if levels else torch.empty(batch, 0, device=device)
    n_candidates = cand_priority.shape[1]
    clamped = target < min_tokens
    k = 0 if clamped else min(n_candidates, (target - min_tokens) // 3)  # each whole split adds 3 tokens
    order = torch.sort(cand_priority, dim=1, descending=True, stable=True).indices[:, :k]
    chosen = torch.zeros(batch, n_candidates, dtype=torch.bool, device=device)
    chosen.scatter_(1, order, True)

    split: dict[int, torch.Tensor] = {}
    offset = 0
    for i in levels:
        size = sizes[i]
        whole = ~partial[size]
        count = int(whole.sum())
        grid = partial[size].expand(batch, -1, -1).clone()
        grid[:, whole] = chosen[:, offset : offset + count]
        split[size] = grid
        offset += count

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

    tokens = min_tokens + 3 * k
    info = []
    for b in range(batch):
        per_scale = {size: int(masks[size][b].sum()) for size in sizes}
        info.append(
            {
                "alpha": float(alpha),
                "base_small_tokens": n_base,
                "base_tokens": min_tokens,
                "budget": target,
                "k": k,
                "actual_tokens": sum(per_scale.values()),
                "actual_retention": sum(per_scale.values()) / n_base,
                "target_retention": target / n_base,
                "tokens_per_scale": per_scale,
                "clamped": bool(clamped),
            }
        )
        assert info[-1]["actual_tokens"] == tokens  # the closed form and the masks must agree
    return masks, info


def _children_inside(maps: dict[int, torch.Tensor], sizes: list[int], level: int) -> torch.Tensor:
    """(h_i, w_i): how many cells of grid ``level - 1`` lie under each cell of grid ``level``."""
    child_rows, child_cols = maps[sizes[level - 1]].shape[-2:]
    rows, cols = maps[sizes[level]].shape[-2:]
    device = maps[sizes[level]].device
    row_count = (child_rows - 2 * torch.arange(rows, device=device)).clamp(max=2)
    col_count = (child_cols - 2 * torch.arange(cols, device=device)).clamp(max=2)
    return row_count[:, None] * col_count[None, :]


# --- one entry point -----------------------------------------------------------------------------

def select_patches(
    maps: dict[int, torch.Tensor],
    method: str = "v1",
    *,
    alpha: float = 1.0,
    thresholds: Sequence[float] | None = None,
    image_size: ImageSize | None = None,
) -> Selection:
    """Run ``method`` (``v1``, ``v2`` or ``budget``) and return the masks with what it decided."""
    num_scales = len(maps)
    check_selection_args(method, alpha, thresholds, num_scales)
    batch = next(iter(maps.values())).shape[0]
    if method == "v1":
        applied = list(thresholds) if thresholds is not None else default_thresholds(num_scales)
        masks = select_patches_by_threshold(maps, applied, image_size)
        return Selection("v1", masks, None, torch.tensor([applied] * batch, dtype=torch.float32).view(batch, -1))
    if method == "v2":
        effective = dynamic_thresholds(maps, alpha, image_size)
        return Selection("v2", select_patches_by_threshold(maps, effective, image_size), alpha, effective.cpu())
    masks, info = select_patches_by_budget(maps, alpha, image_size)
    return Selection("budget", masks, alpha, None, info)
