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
    tokens: int  # vision-encoder patches after APT
    base_tokens: int  # N: base patches without APT
    llm_tokens: int  # tokens the LLM sees after the m x m merger
    baseline_llm_tokens: int  # N / m^2
    merge_size: int

    @property
    def retention(self) -> float:
        return self.tokens / self.base_tokens

    @property
    def llm_retention(self) -> float:
        return self.llm_tokens / self.baseline_llm_tokens

    def to_dict(self) -> dict:
        out = asdict(self)
        out["tokens_per_scale"] = {str(size): n for size, n in self.tokens_per_scale.items()}
        out["retention"] = self.retention
        out["llm_retention"] = self.llm_retention
        return out


def merged_groups(base_mask: torch.Tensor, merge_size: int) -> torch.Tensor:
    """(B,) number of m x m merge groups holding at least one selected base cell.

    On smart-resized images every group is whole (N / m^2 groups in all); without resizing a
    trailing part-group counts as one token, as the merger would still emit one for it.
    """
    rows, cols = base_mask.shape[-2:]
    padded = F.pad(base_mask.float(), (0, -cols % merge_size, 0, -rows % merge_size))
    groups = F.max_pool2d(padded.unsqueeze(1), merge_size).squeeze(1)
    return groups.flatten(1).sum(dim=1).long()


def token_stats(masks: Masks, merge_size: int = 2) -> list[TokenStats]:
    """Vision and LLM token counts of every image of a batch.

    Args:
        masks: {cell size: (B, rows_i, cols_i)} 0/1 selection masks (a partition of the base grid).
        merge_size: Qwen2-VL's spatial merge (m): an m x m group of base cells is one LLM token.

    Returns:
        One :class:`TokenStats` per image: a base cell counts 1/m^2 LLM token (counted per merge
        group holding a selected base cell), a larger cell 1; the baseline is N / m^2.
    """
    sizes = sorted(masks)
    base = masks[sizes[0]]
    rows, cols = base.shape[-2:]
    per_scale = torch.stack([masks[size].flatten(1).sum(dim=1) for size in sizes], dim=1).long().tolist()
    base_groups = merged_groups(base, merge_size).tolist()
    baseline_llm = math.ceil(rows / merge_size) * math.ceil(cols / merge_size)
    stats = []
    for counts, groups in zip(per_scale, base_groups):
        stats.append(
            TokenStats(
                tokens_per_scale=dict(zip(sizes, counts)),
                tokens=sum(counts),
                base_tokens=rows * cols,
                llm_tokens=groups + sum(counts[1:]),
                baseline_llm_tokens=baseline_llm,
                merge_size=merge_size,
            )
        )
    return stats
