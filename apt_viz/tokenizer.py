"""``PatchTokenizer``: normalized images -> importance maps -> masks -> mixed-scale patch groups.

Same interface as the official APT ``PatchTokenizer`` (SPEC section 6), with the selection method
and alpha added. Qwen2-VL has no class token, so unlike the ViT original no ``-1`` class entry is
prepended to ``output_mask`` and ``seqlens`` count image patches only.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .grids import grid_shape, scale_sizes
from .scoring import compute_importance_maps
from .selection import Masks, check_selection_args, select_patches

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class PatchTokenizer(nn.Module):
    """Mixed-resolution patch tokenizer.

    Args:
        num_scales: grids of ``base_patch_size * 2**i`` for ``i < num_scales``.
        base_patch_size: the smallest patch (14 for Qwen2-VL).
        image_size: optional default (H, W) (or one int) used by ``construct_masks`` to locate
            partial cells when maps come without images; ``forward`` uses the real size.
        thresholds: v1 thresholds, one per scale above the base (default ``[3.0, 2.0]``).
        mean, std: the normalization the input images carry (un-done before scoring).
        method: importance scorer, ``entropy``, ``laplacian`` or ``upsample_mse``.
        patch_selection_method: ``v1``, ``v2`` or ``budget``.
        alpha: v2 threshold scale, or budget fraction of base patches.
    """

    def __init__(
        self,
        num_scales: int = 3,
        base_patch_size: int = 14,
        image_size: int | tuple[int, int] | None = None,
        thresholds: Sequence[float] | None = None,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        method: str = "entropy",
        patch_selection_method: str = "v1",
        alpha: float = 1.0,
        laplacian_aggregate: str = "mean",
        bins: int = 512,
    ) -> None:
        super().__init__()
        check_selection_args(patch_selection_method, alpha, thresholds, num_scales)
        self.num_scales = num_scales
        self.base_patch_size = base_patch_size
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.thresholds = list(thresholds) if thresholds is not None else None
        self.method = method
        self.patch_selection_method = patch_selection_method
        self.alpha = alpha
        self.laplacian_aggregate = laplacian_aggregate
        self.bins = bins
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.last_budget_info: list[dict[str, Any]] | None = None
        self.last_thresholds: torch.Tensor | None = None

    @property
    def patch_sizes(self) -> list[int]:
        return scale_sizes(self.base_patch_size, self.num_scales)

    def unnormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized images -> [0, 255] (x * std + mean, times 255, clamped)."""
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return ((images.float() * std + mean) * 255.0).clamp_(0, 255)

    @torch.no_grad()
    def compute_importance_maps(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        """Importance maps of normalized images, one (B, h_i, w_i) tensor per patch size."""
        return compute_importance_maps(
            self.unnormalize(images),
            self.method,
            self.base_patch_size,
            self.num_scales,
            bins=self.bins,
            aggregate=self.laplacian_aggregate,
        )

    def construct_masks(
        self,
        importance_maps: dict[int, torch.Tensor],
        patch_selection_method: str | None = None,
        alpha: float | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> tuple[Masks, torch.Tensor, list[int]]:
        """Masks per size, the flat ``output_mask`` of scale indices (1 = base) and per-image ``seqlens``.

        ``patch_selection_method`` and ``alpha`` override the constructor's for this call. Sets
        ``last_budget_info`` (per image for budget, else None) and ``last_thresholds``.
        """
        method = patch_selection_method or self.patch_selection_method
        alpha = self.alpha if alpha is None else alpha
        selection = select_patches(
            importance_maps,
            method,
            alpha=alpha,
            thresholds=self.thresholds,
            image_size=image_size or self.image_size,
        )
        self.last_budget_info = selection.budget_info
        self.last_thresholds = selection.thresholds
        masks = selection.masks
        scale_ids = torch.cat(
            [masks[size].flatten(1) * (idx + 1) for idx, size in enumerate(self.patch_sizes)], dim=1
        )
        output_mask = scale_ids[scale_ids != 0]
        seqlens = scale_ids.ne(0).sum(dim=1).tolist()
        return masks, output_mask, seqlens

    def construct_patch_groups(self, images: torch.Tensor, masks: Masks) -> dict[str, torch.Tensor]:
        """Selected patches per scale.

        For each size s_i: ``resized_patches_{s}`` (n, C, p, p) cut from the zero-padded image
        downsampled by 2^i (bilinear, as in APT), ``full_patches_{s}`` (n, 4^i, C, p, p) the
        full-resolution base patches under each selected cell (i > 0, row-major inside the cell),
        and ``pos_embed_mask_{s}`` (B, h_i * w_i) bool.
        """
        batch, channels, height, width = images.shape
        p = self.base_patch_size
        out: dict[str, torch.Tensor] = {}
        for idx, size in enumerate(self.patch_sizes):
            rows, cols = grid_shape(height, width, size)
            selected = masks[size].bool()
            padded = F.pad(images, (0, cols * size - width, 0, rows * size - height))
            scaled = padded
            if idx > 0:
                scaled = F.interpolate(padded, scale_factor=0.5**idx, mode="bilinear", align_corners=False)
                n = size // p
                constituents = (
                    padded.view(batch, channels, rows, n, p, cols, n, p)
                    .permute(0, 2, 5, 3, 6, 1, 4, 7)
                    .reshape(batch, rows, cols, n * n, channels, p, p)
                )
                out[f"full_patches_{size}"] = constituents[selected]
            patches = scaled.view(batch, channels, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5)
            out[f"resized_patches_{size}"] = patches[selected]
            out[f"pos_embed_mask_{size}"] = selected.flatten(1)
        return out

    def forward(
        self,
        images: torch.Tensor,
        importance_maps: dict[int, torch.Tensor] | None = None,
        patch_selection_method: str | None = None,
        alpha: float | None = None,
    ) -> dict[str, Any]:
        """Everything a mixed-scale patch embedding needs for a batch of normalized images."""
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
