"""One image -> everything apt-viz knows about it (no I/O besides reading the input)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any

import torch
from PIL import Image

from . import __version__
from .accounting import TokenStats, token_stats
from .config import APTConfig
from .grids import grid_shape
from .imaging import load_image, pil_to_tensor, resize_for_qwen2vl
from .scoring import compute_importance_maps
from .selection import Selection, select_patches


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an explicit ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    return torch.device(device)


@dataclass
class ImageAnalysis:
    """The APT analysis of one image. Tensors are on the CPU, without the batch dimension."""

    source: str | None
    original_size: tuple[int, int]  # (width, height)
    resized: Image.Image
    config: APTConfig
    maps: dict[int, torch.Tensor]
    selection: Selection
    stats: TokenStats

    @property
    def masks(self) -> dict[int, torch.Tensor]:
        return {size: mask[0] for size, mask in self.selection.masks.items()}

    @property
    def resized_size(self) -> tuple[int, int]:
        return self.resized.size

    @property
    def thresholds(self) -> list[float | None] | None:
        """Thresholds applied per scale above the base (v2: the effective ones; NaN -> None)."""
        if self.selection.thresholds is None:
            return None
        return [None if math.isnan(t) else float(t) for t in self.selection.thresholds[0].tolist()]

    @property
    def budget_info(self) -> dict[str, Any] | None:
        return None if self.selection.budget_info is None else self.selection.budget_info[0]

    @property
    def target_retention(self) -> float | None:
        info = self.budget_info
        return None if info is None else info["target_retention"]

    def reselect(self, **changes: Any) -> "ImageAnalysis":
        """The same image and importance maps under other selection settings (``method``, ``alpha``,
        ``thresholds``): only the selection and the token count are re-run, the maps are reused."""
        unknown = set(changes) - {"method", "alpha", "thresholds"}
        if unknown:
            raise TypeError(f"reselect changes only method, alpha and thresholds, not {', '.join(sorted(unknown))}")
        config = self.config.replace(**changes)
        width, height = self.resized_size
        batched = {size: m.unsqueeze(0) for size, m in self.maps.items()}
        selection, stats = _select(batched, config, (height, width))
        return replace(self, config=config, selection=selection, stats=stats)

    def to_dict(self) -> dict[str, Any]:
        """The content of ``stats.json`` (SPEC section 7)."""
        width, height = self.resized_size
        info = self.budget_info
        if info is not None:
            info = {**info, "tokens_per_scale": {str(k): v for k, v in info["tokens_per_scale"].items()}}
        stats = self.stats.to_dict()
        return {
            "input": self.source,
            "original_size": {"width": self.original_size[0], "height": self.original_size[1]},
            "resized_size": {"width": width, "height": height},
            "grid_sizes": {
                str(size): {"rows": rows, "cols": cols}
                for size in self.config.patch_sizes
                for rows, cols in [grid_shape(height, width, size)]
            },
            "scorer": self.config.scorer,
            "method": self.selection.method,
            "alpha": self.selection.alpha,
            "thresholds": self.thresholds,
            "tokens_per_scale": stats["tokens_per_scale"],
            "tokens": self.stats.tokens,
            "base_tokens": self.stats.base_tokens,
            "retention": self.stats.retention,
            "target_retention": self.target_retention,
            "budget_info": info,
            "qwen2vl": {
                "merge_size": self.config.merge_size,
                "vision_tokens": self.stats.tokens,
                "baseline_vision_tokens": self.stats.base_tokens,
                "vision_ratio": self.stats.retention,
                "llm_tokens": self.stats.llm_tokens,
                "baseline_llm_tokens": self.stats.baseline_llm_tokens,
                "llm_ratio": self.stats.llm_retention,
            },
            "config": self.config.to_dict(),
            "apt_viz_version": __version__,
        }


def analyze_image(
    image: Image.Image | str | os.PathLike, config: APTConfig = APTConfig(), *, source: str | None = None
) -> ImageAnalysis:
    """Prepare ``image`` as Qwen2-VL would, score it, select patches and count tokens."""
    if not isinstance(image, Image.Image):
        source = source or os.fspath(image)
        image = load_image(image)
    original_size = image.size
    resized = resize_for_qwen2vl(image, config.resize_spec)
    device = resolve_device(config.device)
    tensor = pil_to_tensor(resized).to(device)
    maps = compute_importance_maps(
        tensor, config.scorer, config.patch_size, config.num_scales, bins=config.bins, aggregate=config.aggregate
    )
    selection, stats = _select(maps, config, (resized.height, resized.width))
    return ImageAnalysis(
        source=source,
        original_size=original_size,
        resized=resized,
        config=config,
        maps={size: m[0].cpu() for size, m in maps.items()},
        selection=selection,
        stats=stats,
    )


def _select(
    maps: dict[int, torch.Tensor], config: APTConfig, image_size: tuple[int, int]
) -> tuple[Selection, TokenStats]:
    """Selection (masks moved to the CPU) and token counts of batched maps of one image."""
    selection = select_patches(
        maps,
        config.method,
        alpha=config.alpha,
        thresholds=config.thresholds,
        image_size=image_size,
    )
    selection.masks = {size: mask.cpu() for size, mask in selection.masks.items()}
    return selection, token_stats(selection.masks, config.merge_size)[0]
