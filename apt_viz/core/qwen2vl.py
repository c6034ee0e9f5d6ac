"""Qwen2-VL's image geometry: its constants, ``smart_resize`` and :class:`ResizeSpec` (docs/contract.md, section 1).

Pure Python (no torch, no Pillow): a training data loader or a model server can size images
exactly as Qwen2-VL's processor does without pulling in the app.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 1280
MAX_ASPECT_RATIO = 200
# The normalisation of Qwen2-VL's processor (transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class UnsupportedImageError(ValueError):
    """An image Qwen2-VL's processor refuses by its size (aspect ratio over 200, an empty side)."""


def smart_resize(
    height: int,
    width: int,
    factor: int = PATCH_SIZE * MERGE_SIZE,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, int]:
    """Qwen2-VL's target size: both sides multiples of ``factor``, area within [min_pixels, max_pixels].

    Identical to ``transformers.models.qwen2_vl.image_processing_qwen2_vl.smart_resize`` (a test
    pins it), including its refusal of aspect ratios over 200.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        factor: Both output sides are multiples of it (``patch_size * merge_size``).
        min_pixels: Smallest output area.
        max_pixels: Largest output area.

    Returns:
        ``(height, width)`` after resizing.

    Raises:
        UnsupportedImageError: a side is not positive or the aspect ratio exceeds 200 (a
            ``ValueError``, as in transformers).
    """
    if min(height, width) <= 0:
        raise UnsupportedImageError(f"image size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise UnsupportedImageError(
            f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, "
            f"got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class ResizeSpec:
    """How an image is sized for Qwen2-VL: ``smart_resize``'s settings, or no resize at all."""

    patch_size: int = PATCH_SIZE
    merge_size: int = MERGE_SIZE
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    resize: bool = True

    def target_hw(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` after preparation; the original size when ``resize`` is False."""
        if not self.resize:
            return height, width
        return smart_resize(height, width, self.patch_size * self.merge_size, self.min_pixels, self.max_pixels)
