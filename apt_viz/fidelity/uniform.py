"""The uniform baseline: the stock processor with a lower ``max_pixels``, at APT's cost (docs/fidelity.md).

:func:`matched_max_pixels` finds the ``max_pixels`` whose ``smart_resize`` output has the base-patch
count closest to a target; :func:`uniform_view` resizes the original image to it with the run's
resize backend (as the stock processor configured that way would) and upsamples it back to the
full resized size for comparison.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from ..core.config import APTConfig, Backend, BackendT
from ..core.grids import ImageHW
from ..core.qwen2vl import ResizeSpec, smart_resize
from ..imaging import pil_to_tensor, resize_for_qwen2vl
from .reconstruction import upsample


def matched_max_pixels(original_hw: ImageHW, target_patches: int, spec: ResizeSpec | APTConfig) -> int:
    """The ``max_pixels`` that gives the base-patch count closest to ``target_patches``.

    The stock processor (``size={"shortest_edge": spec.min_pixels, "longest_edge": max_pixels}``)
    resizes an ``original_hw`` image to ``smart_resize(..., max_pixels)``. Among the base-patch
    counts ``(H / p) * (W / p)`` it can give, the closest to the target wins (a tie goes to the
    fewer patches); the smallest ``max_pixels`` that gives it is returned, never below
    ``spec.min_pixels`` nor one merged patch (so it is a valid
    :class:`~apt_viz.core.config.APTConfig` setting too).

    ``smart_resize`` shrinks (``floor``) while ``max_pixels`` is below the area A of the size it
    rounds to, and returns that size from A on. The count never decreases as ``max_pixels``
    grows below A (a binary search finds the target there); from A on it is one count. The two
    are not ordered: with a side clamped to one merged patch (aspect ratios near 200), shrinking
    can give more patches than the rounded size.

    Args:
        original_hw: (H, W) of the image as loaded (before any resize).
        target_patches: The base-patch count to match (e.g. APT's vision tokens, or 4 x its LLM tokens).
        spec: Supplies ``patch_size``, ``merge_size`` and ``min_pixels`` (its own ``max_pixels`` is ignored).

    Returns:
        The ``max_pixels`` (an integer number of pixels).

    Raises:
        ValueError: ``target_patches`` is not positive; UnsupportedImageError: smart_resize refuses the size.
    """
    if target_patches < 1:
        raise ValueError(f"target_patches must be a positive number of base patches, got {target_patches}")
    patches = _patch_counter(original_hw, spec)
    factor = spec.patch_size * spec.merge_size
    lowest = max(spec.min_pixels, factor * factor)
    height, width = original_hw
    rounded = round(height / factor) * factor * round(width / factor) * factor  # A: smart_resize shrinks below it
    options = {patches(max(rounded, lowest)): max(rounded, lowest)}  # count -> smallest max_pixels giving it
    if lowest < rounded:  # the shrinking range [lowest, A - 1], where the count is monotone
        last = rounded - 1
        above = _first(lowest, last, _reaches(patches, target_patches))
        for max_pixels in [last] if above is None else [above, above - 1]:
            if max_pixels >= lowest:  # the nearest counts on either side of the target
                count = patches(max_pixels)
                smallest = _first(lowest, max_pixels, _reaches(patches, count))
                options[count] = min(options.get(count, max_pixels), smallest or max_pixels)
    best = min(options, key=lambda count: (abs(count - target_patches), count))
    return options[best]


def uniform_hw(original_hw: ImageHW, max_pixels: int, spec: ResizeSpec | APTConfig) -> ImageHW:
    """(H, W) the stock processor resizes an ``original_hw`` image to with ``max_pixels``."""
    factor = spec.patch_size * spec.merge_size
    return smart_resize(original_hw[0], original_hw[1], factor, spec.min_pixels, max_pixels)


@dataclass(frozen=True)
class UniformView:
    """The uniform baseline of one image at one cost."""

    image: torch.Tensor  # (1, 3, H, W) RGB in [0, 1], upsampled to the full resized size
    resized: Image.Image  # what the stock processor with ``max_pixels`` sees
    max_pixels: int
    resized_hw: ImageHW  # its size
    vision_tokens: int  # its base patches
    llm_tokens: int  # vision_tokens / merge_size^2


def uniform_view(
    original: Image.Image,
    target_patches: int,
    config: APTConfig,
    full_hw: ImageHW,
    backend: BackendT | None = None,
) -> UniformView:
    """The stock processor's view of ``original`` at about ``target_patches`` base patches.

    Args:
        original: The image as loaded (RGB, EXIF applied).
        target_patches: Base patches to match (:func:`matched_max_pixels`).
        config: The run's settings: patch and merge size, min_pixels, and the resize backend.
        full_hw: (H, W) of the full resized image the baseline is compared with.
        backend: Resize backend (default: the config's).

    Returns:
        A :class:`UniformView`; its image is resized from ``original`` with the run's backend and
        upsampled back (bilinear, ``align_corners=False``) to ``full_hw``.
    """
    max_pixels = matched_max_pixels((original.height, original.width), target_patches, config)
    spec = dataclasses.replace(config.resize_spec, max_pixels=max_pixels, resize=True)
    resized = resize_for_qwen2vl(original, spec, Backend(backend) if backend is not None else config.backend)
    patches = (resized.height // config.patch_size) * (resized.width // config.patch_size)
    image = upsample(pil_to_tensor(resized) / 255.0, full_hw)
    return UniformView(
        image=image,
        resized=resized,
        max_pixels=max_pixels,
        resized_hw=(resized.height, resized.width),
        vision_tokens=patches,
        llm_tokens=patches // config.merge_size**2,
    )


def _patch_counter(original_hw: ImageHW, spec: ResizeSpec | APTConfig) -> Callable[[int], int]:
    def patches(max_pixels: int) -> int:
        height, width = uniform_hw(original_hw, max_pixels, spec)
        return (height // spec.patch_size) * (width // spec.patch_size)

    return patches


def _reaches(patches: Callable[[int], int], count: int) -> Callable[[int], bool]:
    return lambda max_pixels: patches(max_pixels) >= count


def _first(low: int, high: int, holds: Callable[[int], bool]) -> int | None:
    """The smallest integer in [low, high] where the monotone ``holds`` is true (None: nowhere)."""
    if not holds(high):
        return None
    while low < high:
        middle = (low + high) // 2
        if holds(middle):
            high = middle
        else:
            low = middle + 1
    return low
