"""Patch selection (docs/contract.md, section 4): importance maps -> masks that partition the base grid.

Every method returns ``{cell size: 0/1 float tensor (B, rows_i, cols_i)}`` in which each base cell
is covered by exactly one selected cell. Partial cells of grids above the base are never kept
whole. Function names are the official APT ones.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ._budget_splits import (
    budget_geometry,
    choose_splits,
    choose_splits_within,
    masks_from_splits,
    priorities,
    split_grids,
)
from .config import BudgetUnit, BudgetUnitT, Method, MethodT, as_choice, check_selection, default_thresholds
from .grids import ImageHW, Maps, infer_image_size, partial_cells, upsample_cells
from .qwen2vl import MERGE_SIZE

Masks = Maps  # {cell size: (B, rows_i, cols_i) 0/1 float}


@dataclass(frozen=True)
class BudgetInfo:
    """What the budget method decided for one image (docs/contract.md, sections 4 and 10).

    ``base_tokens`` is N as everywhere else; ``min_tokens`` is the minimum the forced splits of
    partial cells leave (schema 1 called it ``base_tokens`` inside ``budget_info``). ``budget`` is
    the target T in ``budget_unit``: vision tokens (T = round(alpha * N)) or LLM tokens
    (T = round(alpha * L), L = ``baseline_llm_tokens``); ``clamped`` compares T with the minimum
    in that unit. The three ``llm`` fields are filled in for the ``llm`` unit only.
    :meth:`as_seed_dict` gives the same decision under the names of the Qwen2-VL APT fork.
    """

    alpha: float
    base_tokens: int  # N: base patches
    min_tokens: int  # vision tokens after the forced splits alone
    top_cells: int  # cells of the largest grid, partial ones included (the fork's base_tokens)
    budget: int  # T, in budget_unit
    k: int  # splits applied, forced ones excluded
    vision_tokens: int  # tokens selected (<= budget unless clamped, for a budget in vision tokens)
    tokens_per_scale: dict[int, int]
    clamped: bool  # T below the minimum (in budget_unit): the result is the minimum
    budget_unit: BudgetUnit = BudgetUnit.VISION
    baseline_llm_tokens: int | None = None  # L = N / m^2 (llm unit)
    min_llm_tokens: int | None = None  # LLM tokens after the forced splits alone (llm unit)
    llm_tokens: int | None = None  # LLM tokens of the result (llm unit)

    @property
    def retention(self) -> float:
        return self.vision_tokens / self.base_tokens

    @property
    def target_retention(self) -> float | None:
        """T / N for a budget in vision tokens; None for one in LLM tokens (see ``target_llm_retention``)."""
        return self.budget / self.base_tokens if self.budget_unit is BudgetUnit.VISION else None

    @property
    def target_llm_retention(self) -> float | None:
        """T / L for a budget in LLM tokens; None for one in vision tokens."""
        if self.budget_unit is BudgetUnit.VISION or not self.baseline_llm_tokens:
            return None
        return self.budget / self.baseline_llm_tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``tokens_per_scale`` keyed by strings, the unit as its string), retentions included."""
        out = asdict(self)
        del out["top_cells"]  # the fork's quantity: in as_seed_dict, not in stats.json
        out["tokens_per_scale"] = {str(size): n for size, n in self.tokens_per_scale.items()}
        out["budget_unit"] = str(self.budget_unit)
        out["retention"] = self.retention
        out["target_retention"] = self.target_retention
        out["target_llm_retention"] = self.target_llm_retention
        return out

    def as_seed_dict(self) -> dict[str, int | float]:
        """This decision as the Qwen2-VL APT fork's ``PatchTokenizer.last_budget_info`` reported it.

        The fork (docs/migrating.md) kept every top-level cell whole, partial ones included, and
        reported how many splits the budget would allow from there, not how many were made.

        Returns:
            ``base_tokens``: cells of the largest grid (``top_cells``; equal to ``min_tokens``
            when both image sides are multiples of the largest patch); ``base_small_tokens``: N;
            ``budget``: T = round(alpha * N); ``k``: max(0, (T - top_cells) // 3); ``alpha``.
        """
        return {
            "base_tokens": self.top_cells,
            "base_small_tokens": self.base_tokens,
            "budget": self.budget,
            "k": max(0, (self.budget - self.top_cells) // 3),
            "alpha": self.alpha,
        }


@dataclass
class Selection:
    """What a selection method decided for a batch."""

    method: Method
    masks: Masks
    alpha: float | None = None  # v2, budget
    thresholds: torch.Tensor | None = None  # (B, S-1) applied per image: v1's, or v2's effective ones
    budget_info: list[BudgetInfo] | None = None  # per image, budget only


# --- shared steps --------------------------------------------------------------------------------

def _selectable_scores(maps: Maps, image_size: ImageHW | None) -> Maps:
    """Scores with partial cells of grids above the base set to +inf (never kept whole)."""
    height, width = image_size or infer_image_size(maps)
    sizes = sorted(maps)
    scores = {sizes[0]: maps[sizes[0]]}
    for size in sizes[1:]:
        partial = _partial_cells(height, width, size, maps[size].device)
        scores[size] = maps[size].float().masked_fill(partial, math.inf)
    return scores


@functools.lru_cache(maxsize=256)
def _partial_cells(height: int, width: int, size: int, device: torch.device) -> torch.Tensor:
    """:func:`~apt_viz.core.grids.partial_cells`, made once per geometry and device (read-only).

    Selection runs on many batches of the same image size; on a GPU this saves the launches of
    rebuilding the same small mask for every batch.
    """
    with torch.inference_mode(False):  # cached: must not be an inference tensor when first made in one
        return partial_cells(height, width, size, device)


def resolve_hierarchy(keep: Maps) -> Masks:
    """Official APT step: from the largest scale down, a kept cell removes every smaller cell under it."""
    sizes = sorted(keep)
    masks = {size: keep[size].float() for size in sizes}
    for i in range(len(sizes) - 1, 0, -1):
        for j in range(i):
            small = sizes[j]
            covered = upsample_cells(masks[sizes[i]], sizes[i] // small, masks[small].shape[-2:])
            masks[small] = masks[small] * (1 - covered)
    return masks


# --- v1 / v2 -------------------------------------------------------------------------------------

def select_patches_by_threshold(
    maps: Maps, thresholds: Sequence[float] | torch.Tensor, image_size: ImageHW | None = None
) -> Masks:
    """v1: keep a cell of scale i when its score is below ``thresholds[i-1]``, then resolve the hierarchy.

    Args:
        maps: {cell size: (B, rows_i, cols_i)} importance maps.
        thresholds: One per scale above the base (28 px first), or a (B, S-1) tensor of
            per-image thresholds.
        image_size: (H, W) of the image, to find partial cells; by default the base grid is
            taken as unpadded.

    Returns:
        {cell size: (B, rows_i, cols_i)} 0/1 masks that partition the base grid.
    """
    sizes = sorted(maps)
    per_image = torch.is_tensor(thresholds) and thresholds.dim() == 2
    if not per_image and len(thresholds) != len(sizes) - 1:
        raise ValueError(f"need {len(sizes) - 1} thresholds (one per scale above the base), got {len(thresholds)}")
    scores = _selectable_scores(maps, image_size)
    keep = {sizes[0]: torch.ones_like(maps[sizes[0]], dtype=torch.float32)}
    for i, size in enumerate(sizes[1:]):
        if torch.is_tensor(thresholds):
            applied = thresholds.to(scores[size].device, torch.float32)
            keep[size] = scores[size] < (applied[:, i, None, None] if per_image else applied[i])
        else:
            keep[size] = scores[size] < float(thresholds[i])
    return resolve_hierarchy(keep)


def dynamic_thresholds(maps: Maps, alpha: float, image_size: ImageHW | None = None) -> torch.Tensor:
    """v2's thresholds: ``alpha * mean(score_i)`` over the non-partial cells of each scale above the base.

    Returns:
        (B, S-1) float32; NaN where a scale has no whole cell (then nothing is kept there).
    """
    scores = _selectable_scores(maps, image_size)
    columns = []
    for size in sorted(maps)[1:]:
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


def select_patches_by_threshold_v2(maps: Maps, alpha: float = 1.0, image_size: ImageHW | None = None) -> Masks:
    """v2: v1 with per-image thresholds ``alpha * mean(score_i)``; higher alpha keeps more large cells.

    Args:
        maps: {cell size: (B, rows_i, cols_i)} importance maps.
        alpha: Threshold factor, > 0.
        image_size: (H, W) of the image (see :func:`select_patches_by_threshold`).

    Returns:
        {cell size: (B, rows_i, cols_i)} 0/1 masks that partition the base grid.
    """
    return select_patches_by_threshold(maps, dynamic_thresholds(maps, alpha, image_size), image_size)


# --- budget --------------------------------------------------------------------------------------

def budget_target(alpha: float, base_tokens: int) -> int:
    """T = round(alpha * N) (Python's round: halves go to the even integer)."""
    return round(alpha * base_tokens)


def select_patches_by_budget(
    maps: Maps,
    alpha: float,
    image_size: ImageHW | None = None,
    *,
    budget_unit: BudgetUnitT = BudgetUnit.VISION,
    merge_size: int = MERGE_SIZE,
) -> tuple[Masks, list[BudgetInfo]]:
    """budget: quadtree splits in order of priority until ``round(alpha * N)`` tokens.

    Every top-level cell starts as one token; partial cells are split first (forced); then whole
    cells are split in order of descending priority (a child never outranks its parent; ties:
    larger cell, then row, then column) while the tokens stay within the budget. With
    ``budget_unit="llm"`` the target is ``round(alpha * L)`` LLM tokens (L: the stock LLM tokens,
    N / m^2) and each split counts what it adds to the LLM tokens: with m = 2, 3 for a cell of the
    third grid or above and 0 for one of the second grid (its four base patches are one merge
    group, one LLM token, as the cell was); the splits stop before the first that would pass T.

    Args:
        maps: {cell size: (B, rows_i, cols_i)} importance maps.
        alpha: Fraction of the base patches (or of the stock LLM tokens), in (0, 1].
        image_size: (H, W) of the image (see :func:`select_patches_by_threshold`).
        budget_unit: ``vision`` (default) or ``llm``: what T counts.
        merge_size: The spatial merge m that makes LLM tokens of base patches (``llm``: 1 or 2).

    Returns:
        The masks ({cell size: (B, rows_i, cols_i)} 0/1, a partition of the base grid) and one
        :class:`BudgetInfo` per image.
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1] for budget, got {alpha}")
    unit = as_choice(BudgetUnit, budget_unit, "budget_unit")
    check_selection(Method.BUDGET, alpha, None, len(maps), budget_unit=unit, merge_size=merge_size)
    sizes = sorted(maps)
    height, width = image_size or infer_image_size(maps)
    base = maps[sizes[0]]
    batch, device = base.shape[0], base.device
    rows, cols = base.shape[-2:]
    base_tokens = rows * cols

    # Everything that depends on the geometry alone is worked out on the host, once per image
    # size, so the per-batch path never waits for the device (no .item(), no boolean indexing).
    shapes = tuple((size, *maps[size].shape[-2:]) for size in sizes)
    geometry = budget_geometry(height, width, shapes, device)
    min_tokens = geometry.min_tokens
    priority = priorities(_selectable_scores(maps, image_size), sizes)
    levels = list(range(len(sizes) - 1, 0, -1))  # candidates: largest scale first, row-major
    candidates = (
        torch.cat([priority[sizes[i]].flatten(1).index_select(1, geometry.whole[sizes[i]]) for i in levels], dim=1)
        if levels
        else torch.empty(batch, 0, device=device)
    )
    if unit is BudgetUnit.VISION:
        baseline_llm = min_llm = None
        target = budget_target(alpha, base_tokens)
        clamped = target < min_tokens
        k = 0 if clamped else min(candidates.shape[1], (target - min_tokens) // 3)  # a whole split adds 3 tokens
        splits = torch.full((batch,), k, dtype=torch.int64, device=device)  # per image: the kernels take a tensor
        chosen = choose_splits(candidates, splits)
        llm_added = splits  # not reported for this unit
    else:
        baseline_llm = math.ceil(rows / merge_size) * math.ceil(cols / merge_size)
        min_llm = geometry.min_llm_tokens if merge_size == 2 else min_tokens
        target = budget_target(alpha, baseline_llm)
        clamped = target < min_llm
        costs = torch.where(geometry.candidate_levels == 1, 0 if merge_size == 2 else 3, 3)
        chosen, splits, llm_added = choose_splits_within(candidates, costs, target - min_llm)
    split = split_grids(chosen, geometry, sizes, levels)
    masks = masks_from_splits(split, maps, sizes)

    # The one wait of a batch: the per-image counts that BudgetInfo reports.
    counts = [masks[size].flatten(1).sum(dim=1).long() for size in sizes]
    per_image = torch.stack([*counts, splits, llm_added], dim=1).tolist()
    info = []
    for *per_scale, k, added in per_image:
        if sum(per_scale) != min_tokens + 3 * k:  # the closed form and the masks must agree
            raise RuntimeError(f"budget selection is inconsistent: {sum(per_scale)} tokens, "
                               f"expected {min_tokens + 3 * k}")
        info.append(
            BudgetInfo(
                alpha=float(alpha),
                base_tokens=base_tokens,
                min_tokens=min_tokens,
                top_cells=shapes[-1][1] * shapes[-1][2],
                budget=target,
                k=k,
                vision_tokens=sum(per_scale),
                tokens_per_scale=dict(zip(sizes, per_scale)),
                clamped=bool(clamped),
                budget_unit=unit,
                baseline_llm_tokens=baseline_llm,
                min_llm_tokens=min_llm,
                llm_tokens=None if min_llm is None else min_llm + added,
            )
        )
    return masks, info


# --- one entry point -----------------------------------------------------------------------------

def select_patches(
    maps: Maps,
    method: MethodT = Method.V1,
    *,
    alpha: float = 1.0,
    thresholds: Sequence[float] | None = None,
    image_size: ImageHW | None = None,
    budget_unit: BudgetUnitT = BudgetUnit.VISION,
    merge_size: int = MERGE_SIZE,
) -> Selection:
    """Run a selection method by name and return the masks with what it decided.

    Args:
        maps: {cell size: (B, rows_i, cols_i)} importance maps.
        method: ``v1``, ``v2`` or ``budget``.
        alpha: v2 threshold factor (> 0) or budget fraction (in (0, 1]); unused by v1.
        thresholds: v1 thresholds (None: the official 3.0, 2.0).
        image_size: (H, W) of the image (see :func:`select_patches_by_threshold`).
        budget_unit: budget: ``vision`` or ``llm`` tokens (see :func:`select_patches_by_budget`).
        merge_size: budget in ``llm`` tokens: the spatial merge m.

    Returns:
        A :class:`Selection`: masks, the thresholds applied (v1, v2) or the budget info.
    """
    num_scales = len(maps)
    method = check_selection(method, alpha, thresholds, num_scales, budget_unit=budget_unit, merge_size=merge_size)
    batch = next(iter(maps.values())).shape[0]
    if method is Method.V1:
        applied = tuple(thresholds) if thresholds is not None else default_thresholds(num_scales)
        masks = select_patches_by_threshold(maps, applied, image_size)
        return Selection(method, masks, None, torch.tensor([applied] * batch, dtype=torch.float32).view(batch, -1))
    if method is Method.V2:
        effective = dynamic_thresholds(maps, alpha, image_size)
        return Selection(method, select_patches_by_threshold(maps, effective, image_size), alpha, effective.cpu())
    masks, info = select_patches_by_budget(maps, alpha, image_size, budget_unit=budget_unit, merge_size=merge_size)
    return Selection(method, masks, alpha, None, info)
