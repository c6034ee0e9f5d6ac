"""Pictures of fidelity (docs/fidelity.md): APT's reconstruction, its error map, the uniform baseline beside it.

The reconstruction and the baseline are the float images fidelity scores, rounded to uint8 (a kept
base patch is the resized image's pixels exactly). The error map colours each pixel's error as the
heatmaps colour scores (inferno, title, colour bar): the root of the squared error averaged over
the three channels, in levels of 255, so that its square's mean is the MSE the PSNR reports.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .._text import format_number
from ._draw import inferno_lut, to_numpy
from .heatmap import _heatmap_canvas

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..fidelity import Fidelity, FidelityViews

ERROR_PERCENTILE = 99.5  # the colour range ends here: a few seams would otherwise leave the map black


def float_image(image: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) RGB in [0, 1] -> an RGB picture, each value rounded to the nearest level."""
    levels = image.reshape(-1, *image.shape[-2:]).detach().float().mul(255).round_().clamp_(0, 255)
    return Image.fromarray(np.ascontiguousarray(to_numpy(levels).astype(np.uint8).transpose(1, 2, 0)))  # c h w -> h w c


def error_map_image(error: torch.Tensor | np.ndarray, label: str = "APT") -> Image.Image:
    """The per-pixel error drawn like a heatmap: inferno from 0 to the 99.5th percentile, with a colour bar.

    Args:
        error: (H, W) per-pixel squared error averaged over channels, images in [0, 1]
            (:func:`apt_viz.fidelity.pixel_error`).
        label: Whose error it is (the title).

    Returns:
        The picture; the map sits at (0, ``TITLE_HEIGHT``) at the image size.
    """
    levels = np.sqrt(to_numpy(error).astype(np.float32)) * 255  # RMS over the channels, in levels of 255
    high = float(np.percentile(levels, ERROR_PERCENTILE)) if levels.size else 0.0
    peak = float(levels.max()) if levels.size else 0.0
    scaled = levels / high if high > 0 else np.zeros_like(levels)
    colours = np.take(inferno_lut(), (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8), axis=0)
    title = (f"{label}: per-pixel error (RMS over RGB, levels of 255), colours to the {ERROR_PERCENTILE:g}th "
             f"percentile {format_number(high)}; max {format_number(peak)}")
    return _heatmap_canvas(Image.fromarray(colours), title, 0.0, high, [])


def fidelity_pictures(views: FidelityViews, scores: Fidelity) -> dict[str, Image.Image]:
    """The three pictures of ``04_fidelity/``: ``reconstruction``, ``error_map``, ``uniform_equal_vision``.

    Args:
        views: The images fidelity compared (:func:`apt_viz.fidelity.fidelity_views`).
        scores: Their scores (for the titles' PSNR).

    Returns:
        {name: picture}; the reconstruction and the baseline at the full resized size, undecorated.
    """
    from ..fidelity import pixel_error

    psnr = scores.apt.psnr
    label = "APT" if psnr is None else f"APT, PSNR {psnr:.2f} dB"
    return {
        "reconstruction": float_image(views.apt),
        "error_map": error_map_image(pixel_error(views.reference, views.apt), label),
        "uniform_equal_vision": float_image(views.uniform_equal_vision.image),
    }
