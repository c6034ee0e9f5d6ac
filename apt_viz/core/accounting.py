"""Qwen2-VL token accounting (docs/contract.md, section 5): masks -> vision-encoder and LLM token counts."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .selection import Masks


@dataclass(frozen=True)
class TokenStats:
    """Token counts of one image."""

    tokens_per_scale: dict[int, int]
    vision_tokens: int  # vision-encoder patches after APT
    base_tokens: int  # N: base patches without APT
    llm_tokens: int  # tokens the LLM sees after the m x m merger
    baseline_llm_tokens: int  # N / m^2
    merge_size: int

    @property
    def retention(self) -> float:
        return self.vision_tokens / self.base_tokens

    @property
    def llm_retention(self) -> float:
        return self.llm_tokens / self.baseline_llm_tokens

    def to_dict(self) -> dict:
        out = asdict(self)
        out["tokens_per_scale"] = {str(size): n for size, n in self.tokens_per_scale.items()}
        out["retention"] = self.retention
        out["llm_retention"] = self.llm_retention
        return out


@dataclass(frozen=True)
class LLMTokenGrid:
    """Cells of one kind that Qwen2-VL's LLM sees as one token each.

    Base patches reach the LLM through the m x m patch merger, so each merge group holding a
    selected base patch is one token; every larger patch is one token by itself.
    """

    patch_size: int  # px side of the vision patches inside one region
    cell_size: int  # px side of one region: merge_size * patch_size for merge groups, patch_size otherwise
    grid: torch.Tensor  # (B, rows, cols) bool on the cell_size grid: True where a region is one LLM token

    @property
    def is_merge_group(self) -> bool:
        return self.cell_size != self.patch_size

    def counts(self) -> torch.Tensor:
        """(B,) LLM tokens of this kind per image."""
        return self.grid.flatten(1).sum(dim=1).long()


def merge_groups(base_mask: torch.Tensor, merge_size: int) -> torch.Tensor:
    """(B, ceil(rows / m), ceil(cols / m)) bool: the m x m merge groups holding a selected base cell.

    On smart-resized images every group is whole (N / m^2 groups in all); without resizing a
    trailing part-group counts as one token, as the merger would still emit one for it.
    """
    rows, cols = base_mask.shape[-2:]
    padded = F.pad(base_mask.float(), (0, -cols % merge_size, 0, -rows % merge_size))
    return F.max_pool2d(padded.unsqueeze(1), merge_size).squeeze(1) > 0


def llm_token_grids(masks: Masks, merge_size: int = 2) -> list[LLMTokenGrid]:
    """The regions that become one LLM token each, kind by kind (smallest patches first).

    The one definition of Qwen2-VL's LLM tokens: :func:`token_stats` counts these grids and the
    LLM-token picture (:mod:`apt_viz.render.llm_tokens`) draws them, so the two cannot disagree.

    Args:
        masks: {cell size: (B, rows_i, cols_i)} 0/1 selection masks (a partition of the base grid).
        merge_size: Qwen2-VL's spatial merge (m).

    Returns:
        The merge groups of base patches (cell size m * base), then one grid per larger scale
        (its selected cells).
    """
    sizes = sorted(masks)
    base = sizes[0]
    grids = [LLMTokenGrid(base, base * merge_size, merge_groups(masks[base], merge_size))]
    grids += [LLMTokenGrid(size, size, masks[size] > 0) for size in sizes[1:]]
    return grids


def token_stats(masks: Masks, merge_size: int = 2) -> list[TokenStats]:
    """Vision and LLM token counts of every image of a batch.

    Args:
        masks: {cell size: (B, rows_i, cols_i)} 0/1 selection masks (a partition of the base grid).
        merge_size: Qwen2-VL's spatial merge (m): an m x m group of base cells is one LLM token.

    Returns:
        One :class:`TokenStats` per image: the LLM tokens are the regions of :func:`llm_token_grids`
        (a merge group holding a selected base cell, or a larger cell); the baseline is N / m^2.
    """
    sizes = sorted(masks)
    base = masks[sizes[0]]
    rows, cols = base.shape[-2:]
    per_scale = torch.stack([masks[size].flatten(1).sum(dim=1) for size in sizes], dim=1).long().tolist()
    llm_tokens = torch.stack([grid.counts() for grid in llm_token_grids(masks, merge_size)]).sum(dim=0).tolist()
    baseline_llm = math.ceil(rows / merge_size) * math.ceil(cols / merge_size)
    stats = []
    for counts, llm in zip(per_scale, llm_tokens):
        stats.append(
            TokenStats(
                tokens_per_scale=dict(zip(sizes, counts)),
                vision_tokens=sum(counts),
                base_tokens=rows * cols,
                llm_tokens=llm,
                baseline_llm_tokens=baseline_llm,
                merge_size=merge_size,
            )
        )
    return stats
