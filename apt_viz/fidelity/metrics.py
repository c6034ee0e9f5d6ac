"""Pixel fidelity against the full resized image, RGB in [0, 1] (docs/fidelity.md, docs/contract.md section 9).

- :func:`psnr`: 10 log10(1 / MSE) over all pixels and channels (None for an exact image).
- :func:`ssim`: scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=-1)`` (the definition, float64),
  computed with OpenCV's separable filter, the reference's moments (float64) shared by several
  candidates, each candidate's from its float32 difference to the reference, within
  :data:`SSIM_TOLERANCE` of it (docs/fidelity.md says why).
- :func:`detail_mask` and ``psnr(..., mask=...)`` (or :func:`psnr_of_error` on one
  :func:`pixel_error` map): ``psnr_detail``, the PSNR over the 25% of base
  cells with the highest entropy.
"""
from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.grids import ImageHW, partial_cells, upsample_cells

DETAIL_FRACTION = 0.25
SSIM_WINDOW = 11  # Gaussian window of scikit-image's gaussian_weights=True: radius int(3.5 * 1.5 + 0.5) = 5
SSIM_RADIUS = SSIM_WINDOW // 2
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2, SSIM_DATA_RANGE = 0.01, 0.03, 1.0  # scikit-image's defaults; images in [0, 1]
SSIM_SHIFT = 0.5  # the reference's moments and the cross moment are taken of x - 0.5
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


@dataclass(frozen=True)
class SSIMReference:
    """The reference side of SSIM, computed once and shared by every candidate (:func:`ssim_reference`).

    The maps (float32, computed in float64) are cropped to the part of the image the SSIM mean
    counts: (C, H - 10, W - 10), without the 5-pixel border.
    """

    planes: np.ndarray  # (C, H, W) float32: the reference
    shifted: np.ndarray  # (C, H, W) float32: the reference minus SSIM_SHIFT
    shifted_mean: np.ndarray  # local means of ``shifted``
    mean: np.ndarray  # local means: mu_x
    mean_square: np.ndarray  # mu_x^2 (the float32 product of ``mean``)
    variance: np.ndarray  # local variances: sigma_x^2


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
    channels = planes.shape[0]
    shifted = planes - np.float32(SSIM_SHIFT)  # E[x^2] - E[x]^2 loses less on values around 0
    moments = _gaussian(np.concatenate([shifted, shifted * shifted]), exact=True)[_INNER]
    shifted_mean = moments[:channels]
    variance = moments[channels:] - shifted_mean * shifted_mean
    mean = (shifted_mean + SSIM_SHIFT).astype(np.float32)
    return SSIMReference(planes, shifted, shifted_mean.astype(np.float32), mean, mean * mean,
                         variance.astype(np.float32))


def ssim(reference: torch.Tensor, candidates: Sequence[torch.Tensor], *, threads: int | None = None,
         prepared: SSIMReference | None = None) -> list[float | None]:
    """SSIM of each candidate against ``reference``: scikit-image's definition, computed in float32.

    The definition (docs/contract.md, section 9) is scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1, channel_axis=-1)`` in float64: the mean of the SSIM map without the 5-pixel
    border it crops, averaged over channels. It is computed here with the same Gaussian window
    and borders (scipy's ``reflect``), applied by OpenCV's separable filter (2 to 3 times faster
    than scipy's, which scikit-image calls: docs/fidelity.md):

    - the reference's mean and variance once, in float64 (:func:`ssim_reference`);
    - per candidate y, three float32 maps of its difference d = y - x from the reference x:
      mu_d, E[d^2] and E[(x - 0.5) d], which give mu_y = mu_x + mu_d,
      sigma_xy = sigma_x^2 + cov(x, d) and sigma_y^2 = sigma_xy + cov(x, d) + var(d). Their
      float32 rounding scales with d, not with the pixel values: where the candidate is close to
      the reference (flat areas, kept patches) the cancellation of E[y^2] - E[y]^2 is gone;
    - the formula in place on the cropped maps, 32 rows at a time (they stay in the cache), each
      channel's mean summed in float64.

    The result is within :data:`SSIM_TOLERANCE` of the definition (measured: at most 4e-9 on the
    bundled photos; tests compare it with scikit-image), and exactly 1 for a candidate equal to
    the reference.

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
    channels = target.planes.shape[0]

    def score(candidate: torch.Tensor) -> float:
        planes = _planes(candidate)
        if planes.shape != target.planes.shape:
            raise ValueError(f"SSIM of a {tuple(planes.shape)} candidate against a {tuple(target.planes.shape)} "
                             "reference")
        with _workspace((3 * channels, *planes.shape[1:])) as moments:
            difference = np.subtract(planes, target.planes, out=moments[:channels])
            np.multiply(difference, difference, out=moments[channels : 2 * channels])
            np.multiply(difference, target.shifted, out=moments[2 * channels :])
            maps = _gaussian(moments, in_place=True)[_INNER]
            sums = np.zeros(channels)
            for rows in _row_chunks(maps.shape[1]):  # a chunk's maps stay in the cache through the formula
                chunk = maps[:, rows]
                sums += _similarity(target, chunk[:channels], chunk[channels : 2 * channels], chunk[2 * channels :],
                                    rows).sum(axis=(1, 2), dtype=np.float64)
        return float(np.mean(sums / (maps.shape[1] * maps.shape[2])))

    workers = max(1, min(len(candidates), threads or torch.get_num_threads()))
    if workers == 1:
        return [score(candidate) for candidate in candidates]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:  # OpenCV and numpy release the GIL for most of the work
        return list(pool.map(score, candidates))


_SPARE_BUFFERS: list[np.ndarray] = []  # float32 workspaces of finished scores, reused by the next ones
_SPARE_LOCK = threading.Lock()
_SPARE_COUNT = 2  # one per thread of a 2-core machine
_SPARE_MAX_FLOATS = 16 << 20  # 64 MB: the maps of images up to 1.8 MP are kept, larger ones freed


@contextlib.contextmanager
def _workspace(shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """A float32 array of ``shape`` (uninitialised) for the duration of the block, from a spare buffer if one
    is large enough: a fresh 36 MB array costs a page fault per 4 KiB on first touch (5 ms of the 7 ms it
    takes to fill a 1 MP candidate's maps here). At most two buffers of at most 64 MB are kept."""
    size = math.prod(shape)
    with _SPARE_LOCK:
        spare = next((i for i, buffer in enumerate(_SPARE_BUFFERS) if buffer.size >= size), None)
        buffer = _SPARE_BUFFERS.pop(spare) if spare is not None else np.empty(size, dtype=np.float32)
    try:
        yield buffer[:size].reshape(shape)
    finally:
        if buffer.size <= _SPARE_MAX_FLOATS:
            with _SPARE_LOCK:
                _SPARE_BUFFERS.append(buffer)
                _SPARE_BUFFERS.sort(key=lambda kept: kept.size)  # the smallest that fits is taken first
                del _SPARE_BUFFERS[:-_SPARE_COUNT]  # the largest ones stay


def _row_chunks(height: int, rows: int = 32) -> list[slice]:
    return [slice(start, min(start + rows, height)) for start in range(0, height, rows)]


def _similarity(target: SSIMReference, mean: np.ndarray, spread: np.ndarray, cross: np.ndarray,
                rows: slice) -> np.ndarray:
    """The SSIM map of some rows, from the candidate's difference maps (overwritten): mu_d, E[d^2], E[(x - 0.5) d].

    In place, one float32 step at a time, with one temporary. A candidate equal to the reference
    has mean = spread = cross = 0 here, and every step below then gives the same value on both
    sides of the ratio: exactly 1.
    """
    c1, c2 = _constants()
    variance, mean_x = target.variance[:, rows], target.mean[:, rows]
    work = np.multiply(target.shifted_mean[:, rows], mean)
    cross -= work  # cov(x, d)
    np.multiply(mean, mean, out=work)
    spread -= work  # var(d)
    spread += cross
    np.add(variance, cross, out=cross)  # sigma_xy
    spread += cross  # sigma_y^2
    cross *= 2
    cross += c2  # 2 sigma_xy + C2
    spread += variance
    spread += c2  # sigma_x^2 + sigma_y^2 + C2
    mean += mean_x  # mu_y
    np.multiply(mean_x, mean, out=work)
    work *= 2
    work += c1
    work *= cross  # (2 mu_x mu_y + C1)(2 sigma_xy + C2)
    mean *= mean
    mean += target.mean_square[:, rows]
    mean += c1
    mean *= spread  # (mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)
    work /= mean
    return work


_INNER = (slice(None), slice(SSIM_RADIUS, -SSIM_RADIUS), slice(SSIM_RADIUS, -SSIM_RADIUS))  # scikit-image's crop


def _constants() -> tuple[np.float32, np.float32]:
    """C1 and C2 of the SSIM formula, float32."""
    return np.float32((SSIM_K1 * SSIM_DATA_RANGE) ** 2), np.float32((SSIM_K2 * SSIM_DATA_RANGE) ** 2)


def _planes(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) float32 on the CPU."""
    return image.reshape(-1, *image.shape[-2:]).detach().cpu().float().numpy()


@functools.lru_cache(maxsize=1)
def _window() -> np.ndarray:
    """scikit-image's Gaussian window: scipy's ``_gaussian_kernel1d(1.5, 0, radius 5)``, float64."""
    offsets = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    weights = np.exp(-0.5 / SSIM_SIGMA**2 * offsets**2)
    return weights / weights.sum()


def _gaussian(planes: np.ndarray, *, in_place: bool = False, exact: bool = False) -> np.ndarray:
    """scipy's ``gaussian_filter(sigma=1.5, truncate=3.5, mode="reflect")`` of each (H, W) plane of a
    C-contiguous (N, H, W) float32 array, as scikit-image filters a channel.

    OpenCV's separable filter computes it (``BORDER_REFLECT`` is scipy's ``reflect``): in float32
    (within a few float32 ulps of the values' magnitude), or with ``exact`` in float64 (a float64
    result, as scipy's on float64 values). ``in_place`` overwrites ``planes`` (OpenCV filters
    support it; float32 only) instead of allocating the output.
    """
    import cv2

    window = _window()
    if exact:
        return np.stack([cv2.sepFilter2D(plane, cv2.CV_64F, window, window, borderType=cv2.BORDER_REFLECT)
                         for plane in planes])
    out = planes if in_place else np.empty_like(planes)
    for plane, filtered in zip(planes, out):
        cv2.sepFilter2D(plane, cv2.CV_32F, window, window, dst=filtered, borderType=cv2.BORDER_REFLECT)
    return out
