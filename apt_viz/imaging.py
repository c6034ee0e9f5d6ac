"""Image preparation as Qwen2-VL's processor sees it (SPEC section 1).

Pillow only: loading, EXIF orientation, RGB conversion, ``smart_resize`` and the BICUBIC resize.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 1280
MAX_ASPECT_RATIO = 200


class ImageLoadError(ValueError):
    """An input that cannot be turned into an image Qwen2-VL would accept."""


def smart_resize(
    height: int,
    width: int,
    factor: int = PATCH_SIZE * MERGE_SIZE,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, int]:
    """Qwen2-VL's target size: both sides multiples of ``factor``, area within [min_pixels, max_pixels].

    Identical to ``transformers.models.qwen2_vl.image_processing_qwen2_vl.smart_resize``
    (pinned by a test against it), including its ``ValueError`` for aspect ratios over 200.
    """
    if min(height, width) <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
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


def convert_to_rgb(image: Image.Image) -> Image.Image:
    """RGB exactly as transformers' ``convert_to_rgb``: transparency is composited onto white."""
    if image.mode == "RGB":
        return image
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | os.PathLike, max_image_pixels: int | None = Image.MAX_IMAGE_PIXELS) -> Image.Image:
    """Open ``path`` as Qwen2-VL would take it: first frame, EXIF orientation applied, RGB.

    Raises :class:`ImageLoadError` with a one-line reason for anything unusable: missing,
    empty, not an image, truncated, or larger than ``max_image_pixels`` (Pillow's
    decompression-bomb guard; ``None`` disables it).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageLoadError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ImageLoadError(f"{path}: empty file (0 bytes)")
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_image_pixels
    try:
        with Image.open(path) as opened:
            opened.seek(0)  # animated images: the first frame, as transformers' loader does
            opened.load()
            image = ImageOps.exif_transpose(opened)
            return convert_to_rgb(image).copy()
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"{path}: too large ({exc}); raise --max-image-pixels to allow it") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not a readable image") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated / corrupt data
        raise ImageLoadError(f"{path}: corrupt or truncated image ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


@dataclass(frozen=True)
class ResizeSpec:
    """How an image is sized for Qwen2-VL."""

    patch_size: int = PATCH_SIZE
    merge_size: int = MERGE_SIZE
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    resize: bool = True

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after preparation; the original size when ``resize`` is False."""
        if not self.resize:
            return height, width
        return smart_resize(height, width, self.patch_size * self.merge_size, self.min_pixels, self.max_pixels)


def resize_for_qwen2vl(image: Image.Image, spec: ResizeSpec = ResizeSpec()) -> Image.Image:
    """The RGB image resized to ``smart_resize`` with Pillow BICUBIC (unchanged when ``spec.resize`` is False)."""
    image = convert_to_rgb(image)
    height, width = spec.target_size(image.height, image.width)
    if (height, width) == (image.height, image.width):
        return image
    return image.resize((width, height), resample=Image.Resampling.BICUBIC)


def pil_to_tensor(image: Image.Image) -> "torch.Tensor":
    """(1, 3, H, W) float32 in [0, 255]."""
    import numpy as np
    import torch

    array = np.asarray(convert_to_rgb(image), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float()


ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG is an error, never silently grey
