"""Pixel fidelity against the full resized image, RGB in [0, 1] (docs/fidelity.md, docs/contract.md section 9).

- :func:`psnr`: 10 log10(1 / MSE) over all pixels and channels (None for an exact image).
- :func:`ssim`: scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=-1)``, float64 (docs/fidelity.md says
  why that library).
- :func:`detail_mask` and ``psnr(..., mask=...)`` (or :func:`psnr_of_error` on one
  :func:`pixel_error` map): ``psnr_detail``, the PSNR over the 25% of base
  cells with the highest entropy.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..core.grids import ImageHW, partial_cells, upsample_cells

DETAIL_FRACTION = 0.25
SSIM_WINDOW = 11  # Gaussian window of scikit-image's gaussian_weights=True: radius int(3.5 * 1.5 + 0.5) = 5
SSIM_SIGMA = 1.5
SSIM_DATA_RANGE = 1.0  # images in [0, 1]


def psnr(reference: torch.Tensor, candidate: torch.Tensor, mask: torch.Tensor | None = None) -> float | None:
    """PSNR in dB of images in [0, 1]: ``10 log10(1 / MSE)``, the MSE over every channel of every pixel.

    Args:
        reference: (..., C, H, W) in [0, 1] (one image).
        candidate: Same shape.
        mask: Optional (H, W) bool: only these pixels count (all channels).

    Returns:
        The PSNR; None when the candidate equals the reference exactly (or the mask is empty).
    """
    return psnr_of_error(pixel_error(reference, candidate), mask)


def pixel_error(reference: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """(H, W) float32: each pixel's squared error averaged over its channels (the MSE is its mean)."""
    difference = (reference.float() - candidate.float()).reshape(-1, *reference.shape[-2:])
    # a sum of contiguous planes: a reduction over the channel axis strides through the whole image
    planes = difference.unbind(0)
    error = planes[0].square()
    for plane in planes[1:]:
        error.add_(plane.square())
    return error.div_(len(planes))


def psnr_of_error(error: torch.Tensor, mask: torch.Tensor | None = None) -> float | None:
    """:func:`psnr` from a :func:`pixel_error` map (summed in float64), over ``mask``'s pixels if given."""
    count = error.numel()
    if mask is not None:
        mask = mask.to(error.device)
        count = int(mask.sum())
        error = torch.where(mask, error, 0)  # the masked pixels' sum, without gathering them (2x faster)
    if count == 0:
        return None
    mse = float(error.sum(dtype=torch.float64)) / count
    return None if mse == 0 else 10 * math.log10(1 / mse)


def detail_mask(base_entropy: torch.Tensor, image_hw: ImageHW, patch_size: int,
                fraction: float = DETAIL_FRACTION) -> torch.Tensor:
    """(H, W) bool: the pixels of the most detailed base cells.

    The whole base cells (a partial one, of an image that is not a multiple of p, is left out)
    whose entropy is at least the ``ceil(fraction * n)``-th largest of the n whole cells: at least
    ``fraction`` of them, every cell tied with the last one included.

    Args:
        base_entropy: (rows, cols) entropy of the base grid (the entropy scorer's base-scale map).
        image_hw: (H, W) of the image.
        patch_size: Base patch size p.
        fraction: Share of the base cells to keep (0.25 for ``psnr_detail``).

    Returns:
        (H, W) bool mask of the pixels of those cells.
    """
    height, width = image_hw
    whole = ~partial_cells(height, width, patch_size, base_entropy.device)
    if base_entropy.shape != whole.shape:
        raise ValueError(f"base_entropy must be the {tuple(whole.shape)} base grid of a {height}x{width} image, "
                         f"got {tuple(base_entropy.shape)}")
    scores = base_entropy[whole]
    if scores.numel() == 0:
        return torch.zeros(height, width, dtype=torch.bool)
    count = max(1, math.ceil(fraction * scores.numel()))
    threshold = torch.topk(scores, count).values[-1]
    cells = whole & (base_entropy >= threshold)
    return upsample_cells(cells, patch_size, (height, width))


def ssim(reference: torch.Tensor, candidates: Sequence[torch.Tensor], *, threads: int | None = None
         ) -> list[float | None]:
    """SSIM of each candidate against ``reference``, by scikit-image (docs/contract.md section 9).

    Each value is scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=-1)`` on float64 copies: the mean of
    the SSIM map without its 5-pixel border, averaged over channels. The library is the
    definition, so nothing here re-derives it; docs/fidelity.md says why scikit-image (speed and
    precision against kornia) and what it costs.

    Args:
        reference: (1, C, H, W) or (C, H, W) RGB in [0, 1], any device.
        candidates: Images of the same shape.
        threads: Candidates scored at once (default: torch's thread count, so a worker limited to
            one thread stays on one). scipy's filters release the GIL, so 2 threads score 4
            candidates in about 0.6 of the time of one.

    Returns:
        One value per candidate; None when a side is shorter than the 11-pixel window.

    Raises:
        ValueError: a candidate's shape differs from the reference's.
    """
    target = _channels_last(reference)
    if min(target.shape[:2]) < SSIM_WINDOW:
        return [None] * len(candidates)
    from skimage.metrics import structural_similarity  # imports scipy: only when a score is asked for

    def score(candidate: torch.Tensor) -> float:
        image = _channels_last(candidate)
        if image.shape != target.shape:
            raise ValueError(f"SSIM of a {tuple(image.shape)} candidate against a {tuple(target.shape)} reference")
        return float(structural_similarity(target, image, gaussian_weights=True, sigma=SSIM_SIGMA,
                                           use_sample_covariance=False, data_range=SSIM_DATA_RANGE, channel_axis=-1))

    workers = max(1, min(len(candidates), threads or torch.get_num_threads()))
    if workers == 1:
        return [score(candidate) for candidate in candidates]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(score, candidates))


def _channels_last(image: torch.Tensor) -> np.ndarray:
    """(H, W, C) float64 on the CPU, as scikit-image takes it."""
    planes = image.reshape(-1, *image.shape[-2:]).detach().cpu().double()
    return planes.permute(1, 2, 0).numpy()  # c h w -> h w c
