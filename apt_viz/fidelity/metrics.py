"""Pixel fidelity against the full resized image, RGB in [0, 1] (docs/fidelity.md, docs/contract.md section 9).

- :func:`psnr`: 10 log10(1 / MSE) over all pixels and channels (None for an exact image).
- :func:`ssim`: scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=-1)`` (the definition, float64),
  computed in float32 with the reference's moments shared by several candidates, within
  :data:`SSIM_TOLERANCE` of it (docs/fidelity.md says why).
- :func:`detail_mask` and ``psnr(..., mask=...)`` (or :func:`psnr_of_error` on one
  :func:`pixel_error` map): ``psnr_detail``, the PSNR over the 25% of base
  cells with the highest entropy.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.grids import ImageHW, partial_cells, upsample_cells

DETAIL_FRACTION = 0.25
SSIM_WINDOW = 11  # Gaussian window of scikit-image's gaussian_weights=True: radius int(3.5 * 1.5 + 0.5) = 5
SSIM_RADIUS = SSIM_WINDOW // 2
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2, SSIM_DATA_RANGE = 0.01, 0.03, 1.0  # scikit-image's defaults; images in [0, 1]
SSIM_SHIFT = 0.5  # float32 moments are taken of x - 0.5
SSIM_TOLERANCE = 1e-6  # |apt-viz's float32 SSIM - scikit-image's float64 SSIM| at most (docs/contract.md section 9)


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
    if mask is not None:
        error = error[mask.to(error.device)]
    if error.numel() == 0:
        return None
    mse = float(error.sum(dtype=torch.float64)) / error.numel()
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


@dataclass(frozen=True)
class SSIMReference:
    """The reference side of SSIM, computed once and shared by every candidate (:func:`ssim_reference`)."""

    shifted: np.ndarray  # (C, H, W) float32: the reference minus SSIM_SHIFT
    mean: np.ndarray  # (C, H, W) float32: its local means (shifted)
    variance: np.ndarray  # (C, H, W) float32: its local variances


def ssim_reference(reference: torch.Tensor) -> SSIMReference | None:
    """The reference's local means and variances (None when a side is shorter than the 11-pixel window).

    Args:
        reference: (1, C, H, W) or (C, H, W) RGB in [0, 1], any device.

    Returns:
        The :class:`SSIMReference` that :func:`ssim` takes as ``prepared``.
    """
    planes = _planes(reference)
    if min(planes.shape[-2:]) < SSIM_WINDOW:
        return None
    moments = _gaussian(np.concatenate([planes, planes * planes]))
    channels = planes.shape[0]
    mean = moments[:channels]
    return SSIMReference(planes, mean, moments[channels:] - mean * mean)


def ssim(reference: torch.Tensor, candidates: Sequence[torch.Tensor], *, threads: int | None = None,
         prepared: SSIMReference | None = None) -> list[float | None]:
    """SSIM of each candidate against ``reference``: scikit-image's definition, computed in float32.

    The definition (docs/contract.md, section 9) is scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1, channel_axis=-1)`` in float64: the mean of the SSIM map without the 5-pixel
    border it crops, averaged over channels. It is computed here with the same Gaussian filter
    (scipy's ``correlate1d``, the window scikit-image builds, ``reflect`` mode), once for the
    reference's moments and once per candidate for its own and the cross moment (three maps
    instead of five), in float32 on values shifted by -0.5 (the variances E[x^2] - E[x]^2 lose less
    there), each map's mean summed in float64. The result is within :data:`SSIM_TOLERANCE` of the
    definition (measured: below 1e-7 on the bundled photos; tests compare it with scikit-image).

    Args:
        reference: (1, C, H, W) or (C, H, W) RGB in [0, 1], any device.
        candidates: Images of the same shape.
        threads: Candidates scored at once (default: torch's thread count, so a worker limited to
            one thread stays on one).
        prepared: :func:`ssim_reference` of ``reference``, when scoring it against many candidates.

    Returns:
        One value per candidate; None when a side is shorter than the 11-pixel window.
    """
    target = prepared if prepared is not None else ssim_reference(reference)
    if target is None:
        return [None] * len(candidates)
    c1, c2 = np.float32((SSIM_K1 * SSIM_DATA_RANGE) ** 2), np.float32((SSIM_K2 * SSIM_DATA_RANGE) ** 2)
    shift = np.float32(SSIM_SHIFT)
    channels = target.shifted.shape[0]
    inner = (slice(None), slice(SSIM_RADIUS, -SSIM_RADIUS), slice(SSIM_RADIUS, -SSIM_RADIUS))

    def score(candidate: torch.Tensor) -> float:
        planes = _planes(candidate)
        if planes.shape != target.shifted.shape:
            raise ValueError(f"SSIM of a {tuple(planes.shape)} candidate against a {tuple(target.shifted.shape)} "
                             "reference")
        moments = _gaussian(np.concatenate([planes, planes * planes, target.shifted * planes]))
        mean = moments[:channels]
        variance = moments[channels : 2 * channels] - mean * mean
        covariance = moments[2 * channels :] - target.mean * mean
        mean_x, mean_y = target.mean + shift, mean + shift  # the means of the unshifted images
        similarity = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)
                      / ((mean_x * mean_x + mean_y * mean_y + c1) * (target.variance + variance + c2)))
        cropped = similarity[inner]
        return float(np.mean([plane.mean(dtype=np.float64) for plane in cropped]))

    workers = max(1, min(len(candidates), threads or torch.get_num_threads()))
    if workers == 1:
        return [score(candidate) for candidate in candidates]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:  # numpy and scipy.ndimage release the GIL for most of the work
        return list(pool.map(score, candidates))


def _planes(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) float32 on the CPU, shifted by -SSIM_SHIFT."""
    planes = image.reshape(-1, *image.shape[-2:]).detach().cpu().float().numpy()
    return planes - np.float32(SSIM_SHIFT)


@functools.lru_cache(maxsize=1)
def _window() -> np.ndarray:
    """scikit-image's Gaussian window: scipy's ``_gaussian_kernel1d(1.5, 0, radius 5)``, float64."""
    offsets = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    weights = np.exp(-0.5 / SSIM_SIGMA**2 * offsets**2)
    return weights / weights.sum()


def _gaussian(planes: np.ndarray) -> np.ndarray:
    """scipy's ``gaussian_filter(sigma=1.5, truncate=3.5, mode="reflect")`` of each (H, W) plane
    (rows, then columns, as scikit-image filters a 2-D channel)."""
    from scipy.ndimage import correlate1d

    window = _window()
    return correlate1d(correlate1d(planes, window, axis=-2, mode="reflect"), window, axis=-1, mode="reflect")
