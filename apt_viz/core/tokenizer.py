"""``PatchTokenizer``: normalized images -> importance maps -> masks -> mixed-scale patch groups.

Same interface as the official APT ``PatchTokenizer`` (docs/contract.md, section 6), with the
selection method and alpha added, going through the one seam (:mod:`apt_viz.core.pipeline`).
Qwen2-VL has no class token, so unlike the ViT original no ``-1`` class entry is prepended to
``output_mask`` and ``seqlens`` count image patches only.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import (
    Aggregate,
    AggregateT,
    APTConfig,
    BudgetUnit,
    BudgetUnitT,
    Method,
    MethodT,
    Scorer,
    ScorerT,
    as_choice,
)
from .grids import ImageHW, Maps, grid_shape, scale_sizes
from .patches import construct_patch_groups
from .pipeline import compute_maps, select
from .qwen2vl import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from .selection import BudgetInfo, Masks


class PatchTokenizer(nn.Module):
    """Mixed-resolution patch tokenizer.

    Args:
        num_scales: Grids of ``base_patch_size * 2**i`` for ``i < num_scales``.
        base_patch_size: The smallest patch (14 for Qwen2-VL).
        image_size: Optional default (H, W) (or one int) used by ``construct_masks`` to locate
            partial cells when maps come without images; ``forward`` uses the real size.
        thresholds: v1 thresholds, one per scale above the base (default ``[3.0, 2.0]``).
        mean: Per-channel mean the input images were normalized with (un-done before scoring).
        std: Per-channel std the input images were normalized with.
        scorer: Importance scorer, ``entropy``, ``laplacian``, ``upsample_mse`` or ``random``.
        patch_selection_method: ``v1``, ``v2`` or ``budget``.
        alpha: v2 threshold factor, or budget fraction of the base patches (or LLM tokens).
        laplacian_aggregate: Per-cell aggregate of laplacian / upsample_mse.
        bins: Entropy histogram bins.
        method: The official APT name of ``scorer`` (an alias; give one of the two).
        budget_unit: budget: ``vision`` (alpha of the base patches) or ``llm`` (alpha of the
            stock LLM tokens, merge size 2).
        seed: Seed of the ``random`` scorer.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        num_scales: int = 3,
        base_patch_size: int = 14,
        image_size: int | ImageHW | None = None,
        thresholds: Sequence[float] | None = None,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        scorer: ScorerT | None = None,
        patch_selection_method: MethodT = Method.V1,
        alpha: float = 1.0,
        laplacian_aggregate: AggregateT = Aggregate.MEAN,
        bins: int = 512,
        *,
        method: ScorerT | None = None,
        budget_unit: BudgetUnitT = BudgetUnit.VISION,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if scorer is not None and method is not None and as_choice(Scorer, scorer, "scorer") != as_choice(
            Scorer, method, "scorer"
        ):
            raise ValueError(f"scorer={scorer!r} and its alias method={method!r} disagree; give one of them")
        self.num_scales = num_scales
        self.base_patch_size = base_patch_size
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.thresholds = list(thresholds) if thresholds is not None else None
        self.scorer = scorer if scorer is not None else method if method is not None else Scorer.ENTROPY
        self.patch_selection_method = patch_selection_method
        self.alpha = alpha
        self.laplacian_aggregate = laplacian_aggregate
        self.bins = bins
        self.budget_unit = budget_unit
        self.seed = seed
        self.config()  # invalid settings fail here, not at the first call
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.last_budget_info: list[BudgetInfo] | None = None
        self.last_thresholds: torch.Tensor | None = None

    @property
    def method(self) -> ScorerT:
        """The official APT name of :attr:`scorer`."""
        return self.scorer

    @method.setter
    def method(self, value: ScorerT) -> None:
        self.scorer = value

    @property
    def patch_sizes(self) -> list[int]:
        return scale_sizes(self.base_patch_size, self.num_scales)

    def config(self, patch_selection_method: MethodT | None = None, alpha: float | None = None) -> APTConfig:
        """The settings as a validated :class:`APTConfig` (call overrides applied)."""
        return APTConfig(
            patch_size=self.base_patch_size,
            num_scales=self.num_scales,
            scorer=as_choice(Scorer, self.scorer, "scorer"),
            aggregate=as_choice(Aggregate, self.laplacian_aggregate, "aggregate"),
            bins=self.bins,
            seed=self.seed,
            budget_unit=as_choice(BudgetUnit, self.budget_unit, "budget_unit"),
            method=as_choice(Method, patch_selection_method or self.patch_selection_method, "patch_selection_method"),
            alpha=self.alpha if alpha is None else alpha,
            thresholds=None if self.thresholds is None else tuple(self.thresholds),
        )

    def unnormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized images -> [0, 255] (x * std + mean, times 255, clamped)."""
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return ((images.float() * std + mean) * 255.0).clamp_(0, 255)

    @torch.no_grad()
    def compute_importance_maps(self, images: torch.Tensor) -> Maps:
        """Importance maps of normalized (B, C, H, W) images: {cell size: (B, rows_i, cols_i)}."""
        return compute_maps(self.unnormalize(images), self.config())

    def construct_masks(
        self,
        importance_maps: Maps,
        patch_selection_method: MethodT | None = None,
        alpha: float | None = None,
        image_size: ImageHW | None = None,
    ) -> tuple[Masks, torch.Tensor, list[int]]:
        """Select patches from importance maps.

        Args:
            importance_maps: {cell size: (B, rows_i, cols_i)}.
            patch_selection_method: Overrides the constructor's for this call.
            alpha: Overrides the constructor's for this call.
            image_size: (H, W) of the images (default: the constructor's ``image_size``).

        Returns:
            The masks per size, the flat ``output_mask`` of scale indices (1 = base; image after
            image, scale after scale) and per-image ``seqlens``. Sets ``last_budget_info`` (per
            image for budget, else None) and ``last_thresholds``.
        """
        result = select(importance_maps, self.config(patch_selection_method, alpha), image_size or self.image_size)
        self.last_budget_info = result.selection.budget_info
        self.last_thresholds = result.selection.thresholds
        masks = result.selection.masks
        scale_ids = torch.cat([masks[size].flatten(1) * (idx + 1) for idx, size in enumerate(self.patch_sizes)], dim=1)
        output_mask = scale_ids[scale_ids != 0]
        seqlens = scale_ids.ne(0).sum(dim=1).tolist()
        return masks, output_mask, seqlens

    def construct_patch_groups(self, images: torch.Tensor, masks: Masks) -> dict[str, torch.Tensor]:
        """Selected patches per scale: see :func:`apt_viz.core.patches.construct_patch_groups`."""
        return construct_patch_groups(images, masks, self.base_patch_size)

    def forward(
        self,
        images: torch.Tensor,
        importance_maps: Maps | None = None,
        patch_selection_method: MethodT | None = None,
        alpha: float | None = None,
    ) -> dict[str, Any]:
        """Everything a mixed-scale patch embedding needs for a batch of normalized images.

        Args:
            images: (B, C, H, W) normalized with ``mean`` / ``std``.
            importance_maps: Precomputed maps (default: computed from ``images``).
            patch_selection_method: Overrides the constructor's for this call.
            alpha: Overrides the constructor's for this call.

        Returns:
            :meth:`construct_patch_groups`' keys plus ``output_mask``, ``seqlens``, ``cu_seqlens``
            (B + 1,) int32, ``max_seqlen``, ``retained_frac`` = sum(seqlens) / (B * N) and ``masks``.
        """
        batch, _, height, width = images.shape
        if importance_maps is None:
            importance_maps = self.compute_importance_maps(images)
        masks, output_mask, seqlens = self.construct_masks(
            importance_maps, patch_selection_method, alpha, image_size=(height, width)
        )
        out: dict[str, Any] = self.construct_patch_groups(images, masks)
        rows, cols = grid_shape(height, width, self.base_patch_size)
        lengths = torch.tensor(seqlens, dtype=torch.int32, device=images.device)
        out["output_mask"] = output_mask
        out["seqlens"] = seqlens
        out["cu_seqlens"] = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        out["max_seqlen"] = max(seqlens)
        out["retained_frac"] = sum(seqlens) / (batch * rows * cols)
        out["masks"] = masks
        return out
