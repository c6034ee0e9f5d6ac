"""One image -> everything apt-viz knows about it: load, resize as Qwen2-VL does, then the core seam.

No I/O besides reading the input. The stats.json record of an analysis is built by
:func:`apt_viz.report.records.stats_record`.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, replace
from typing import Any

import torch
from PIL import Image

from .core.accounting import TokenStats
from .core.config import APTConfig
from .core.grids import ImageHW, Maps
from .core.pipeline import run_apt, select
from .core.selection import BudgetInfo, Selection
from .imaging import load_image, pixels_to_image, resized_pixels


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
    original_hw: ImageHW  # as loaded (EXIF applied)
    pixels: torch.Tensor  # (3, H, W) uint8 on the CPU: the resized image, what Qwen2-VL sees
    config: APTConfig
    maps: Maps  # {cell size: (rows_i, cols_i)}
    selection: Selection  # batch of one
    stats: TokenStats

    @property
    def resized_hw(self) -> ImageHW:
        height, width = self.pixels.shape[-2:]
        return height, width

    @functools.cached_property
    def resized(self) -> Image.Image:
        """The resized image as a PIL image (made on first use: only pictures need it)."""
        return pixels_to_image(self.pixels)

    @property
    def masks(self) -> Maps:
        """{cell size: (rows_i, cols_i)} 0/1 selection masks."""
        return {size: mask[0] for size, mask in self.selection.masks.items()}

    @property
    def thresholds(self) -> list[float | None] | None:
        """Thresholds applied per scale above the base (v2: the effective ones; NaN -> None)."""
        if self.selection.thresholds is None:
            return None
        return [None if math.isnan(t) else float(t) for t in self.selection.thresholds[0].tolist()]

    @property
    def budget_info(self) -> BudgetInfo | None:
        return None if self.selection.budget_info is None else self.selection.budget_info[0]

    @property
    def target_retention(self) -> float | None:
        info = self.budget_info
        return None if info is None else info.target_retention

    def reselect(self, **changes: Any) -> ImageAnalysis:
        """The same image and maps under other selection settings (``method``, ``alpha``, ``thresholds``,
        ``budget_unit``).

        Only the selection and the token count are re-run; the importance maps are reused.
        """
        unknown = set(changes) - {"method", "alpha", "thresholds", "budget_unit"}
        if unknown:
            raise TypeError(
                f"reselect changes only method, alpha, thresholds and budget_unit, not {', '.join(sorted(unknown))}"
            )
        config = self.config.replace(**changes)
        batched = {size: m.unsqueeze(0) for size, m in self.maps.items()}
        result = select(batched, config, self.resized_hw)
        other = replace(self, config=config, selection=_on_cpu(result.selection), stats=result.stats[0])
        if "resized" in self.__dict__:  # the same picture: share it rather than make it again
            other.__dict__["resized"] = self.__dict__["resized"]
        return other


def analyze_image(
    image: Image.Image | str | os.PathLike, config: APTConfig = APTConfig(), *, source: str | None = None
) -> ImageAnalysis:
    """Prepare ``image`` as Qwen2-VL's processor would, score it, select patches and count tokens.

    Args:
        image: A PIL image or a path (loaded with :func:`apt_viz.imaging.load_image`).
        config: All settings (resize, backend, scorer, selection, device).
        source: The input's name in reports (default: the path).

    Returns:
        The :class:`ImageAnalysis`.

    Raises:
        ImageLoadError: the file cannot be used as an image.
        UnsupportedImageError: smart_resize refuses its size.
    """
    if not isinstance(image, Image.Image):
        source = source or os.fspath(image)
        image = load_image(image)
    pixels = resized_pixels(image, config.resize_spec, config.backend)
    # uint8 pixels: every scorer converts them to float32 itself, exactly (they are whole numbers)
    result = run_apt(pixels[None].to(resolve_device(config.device)), config)
    return ImageAnalysis(
        source=source,
        original_hw=(image.height, image.width),
        pixels=pixels,
        config=config,
        maps={size: m[0].cpu() for size, m in result.maps.items()},
        selection=_on_cpu(result.selection),
        stats=result.stats[0],
    )


def _on_cpu(selection: Selection) -> Selection:
    selection.masks = {size: mask.cpu() for size, mask in selection.masks.items()}
    return selection
