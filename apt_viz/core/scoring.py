"""Importance scorers (docs/contract.md, section 3): (B, C, H, W) images in [0, 255] -> {cell size: (B, h_i, w_i)}.

Higher score = more detail = split. Pure tensor functions; they run on whatever device the
images are on and accept any H, W (grids are zero-padded at the bottom/right). :data:`SCORERS`
maps each :class:`~apt_viz.core.config.Scorer` to its function: adding a scorer is one function
and one entry there.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Protocol

import torch
import torch.nn.functional as F

from ._entropy import GRAY_WEIGHTS, entropy_maps
from .config import Aggregate, AggregateT, Scorer, ScorerT, as_choice
from .grids import Maps, grid_shape, scale_sizes
from .random_maps import compute_patch_random_batched

# Official compute_patch_mse_batched defaults (APT's PatchTokenizer passes (1.0, 0.5, 0.25), whose
# 1.0 makes the 14 px map identically zero); beyond three scales the last factor repeats.
UPSAMPLE_MSE_FACTORS = (0.5, 0.5, 0.25)

ImportanceMaps = Maps


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, W) float32 luma, ``0.2989 R + 0.5870 G + 0.1140 B`` (first channel if not RGB)."""
    images = images.float()
    if images.shape[1] != 3:
        return images[:, 0]
    r, g, b = images.unbind(1)
    return GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b


# --- entropy -----------------------------------------------------------------------------------

def compute_patch_entropy_batched(
    images: torch.Tensor,
    patch_size: int = 14,
    num_scales: int = 3,
    bins: int = 512,
    pad_value: float = 1e6,
) -> ImportanceMaps:
    """Shannon entropy (bits) of the gray-level histogram of every cell of every grid.

    Same numbers as the official APT ``compute_patch_entropy_batched`` (padded zeros counted,
    ``p log2(p + 1e-10)``, padded last row/column set to ``pad_value``), computed from exact
    integer histograms: one counting pass over the base grid, each coarser grid's histogram is the
    sum of its 2x2 children's, and a table of the terms (apt_viz/core/_entropy.py; on the CPU a C
    kernel where it is built, else torch ops, with the same numbers). On the CPU the call runs on
    one thread whatever ``torch.get_num_threads()`` says, and leaves that setting as it was
    (docs/performance.md).

    Args:
        images: (B, C, H, W) in [0, 255] (RGB; a single channel is taken as gray), any device.
        patch_size: Base cell size; grid i has cells of ``patch_size * 2**i``.
        num_scales: Number of grids.
        bins: Histogram bins over [0, 256): bin = floor(gray * bins / 256).
        pad_value: Score of every cell in the last row (column) of a grid whose rows (columns)
            are padded, as the official code marks them.

    Returns:
        {cell size: (B, ceil(H / s), ceil(W / s))} float32 entropies in bits, smallest size first.

    Raises:
        ValueError: a pixel is NaN.
    """
    with single_threaded(images.device):
        return entropy_maps(images, patch_size, num_scales, bins, pad_value)


@contextlib.contextmanager
def single_threaded(device: torch.device | str) -> Iterator[None]:
    """Run the block on one torch thread when ``device`` is the CPU, then restore the thread count.

    For the entropy path, whose ops are many, small and memory-bound: a second thread does not
    make them faster, and when another process holds a core each op waits at an OpenMP barrier
    for it (10 to 40 times slower on a busy 2-core machine; docs/performance.md). Only under
    torch's OpenMP backend (that of its Linux builds), where the count is the calling thread's
    own setting: threads that score at the same time keep theirs. A thread whose first parallel
    op starts while the block runs takes the count of 1 as its own. Under the native backend the
    count cannot change once set, and the block runs as it is.
    """
    threads = torch.get_num_threads() if torch.device(device).type == "cpu" else 1
    if threads == 1 or not _per_thread_count():
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.lru_cache(maxsize=1)
def _per_thread_count() -> bool:
    """Whether torch's intra-op threads are OpenMP's, whose count is a per-thread setting."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


# --- laplacian ---------------------------------------------------------------------------------

_LAPLACIAN_KERNEL = ((1.0, 1.0, 1.0), (1.0, -8.0, 1.0), (1.0, 1.0, 1.0))


def compute_patch_laplacian_batched(
    images: torch.Tensor,
    patch_size: int = 14,
    num_scales: int = 3,
    aggregate: AggregateT = Aggregate.MEAN,
) -> ImportanceMaps:
    """|3x3 Laplacian| of gray / 255 (reflect padding), aggregated per cell.

    Args:
        images: (B, C, H, W) in [0, 255].
        patch_size: Base cell size; grid i has cells of ``patch_size * 2**i``.
        num_scales: Number of grids.
        aggregate: ``mean``, ``max`` or ``std`` (unbiased, as the official code) per cell.

    Returns:
        {cell size: (B, ceil(H / s), ceil(W / s))}; the response is zero-padded to the grid.
    """
    gray = (grayscale(images) / 255.0).unsqueeze(1)
    mode = "reflect" if min(gray.shape[-2:]) > 1 else "replicate"  # reflect needs 2+ pixels
    kernel = torch.tensor(_LAPLACIAN_KERNEL, device=gray.device, dtype=gray.dtype).view(1, 1, 3, 3)
    response = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode=mode), kernel).abs().squeeze(1)
    return {size: pool_cells(response, size, aggregate) for size in scale_sizes(patch_size, num_scales)}


# --- upsample_mse ------------------------------------------------------------------------------

def upsample_mse_factor(level: int) -> float:
    """Downsampling factor of grid ``level``: ``(0.5, 0.5, 0.25)[level]``, the last one beyond."""
    return UPSAMPLE_MSE_FACTORS[min(level, len(UPSAMPLE_MSE_FACTORS) - 1)]


def compute_patch_upsample_mse_batched(
    images: torch.Tensor,
    patch_size: int = 14,
    num_scales: int = 3,
    aggregate: AggregateT = Aggregate.MEAN,
) -> ImportanceMaps:
    """Error of a bilinear down-and-up round trip, aggregated per cell.

    The official ``compute_patch_mse_batched`` with its default factors: RGB / 255 is resized by
    :func:`upsample_mse_factor` and back by its inverse (``align_corners=False``); when rounding
    leaves the result off the image size, it is resized once more to H x W. The squared error is
    averaged over channels.

    Args:
        images: (B, C, H, W) in [0, 255].
        patch_size: Base cell size; grid i has cells of ``patch_size * 2**i``.
        num_scales: Number of grids.
        aggregate: ``mean``, ``max`` or ``std`` per cell.

    Returns:
        {cell size: (B, ceil(H / s), ceil(W / s))}; the error map is zero-padded to the grid.
    """
    rgb = images.float() / 255.0
    height, width = rgb.shape[-2:]
    maps: ImportanceMaps = {}
    for level, size in enumerate(scale_sizes(patch_size, num_scales)):
        factor = upsample_mse_factor(level)
        down = F.interpolate(rgb, scale_factor=factor, mode="bilinear", align_corners=False)
        up = F.interpolate(down, scale_factor=1.0 / factor, mode="bilinear", align_corners=False)
        if up.shape[-2:] != (height, width):
            up = F.interpolate(up, size=(height, width), mode="bilinear", align_corners=False)
        error = (rgb - up).square().mean(dim=1)
        maps[size] = pool_cells(error, size, aggregate)
    return maps


# --- shared ------------------------------------------------------------------------------------

def pool_cells(values: torch.Tensor, size: int, aggregate: AggregateT = Aggregate.MEAN) -> torch.Tensor:
    """Aggregate a (B, H, W) map per ``size`` cell after zero-padding it to the grid -> (B, rows, cols)."""
    aggregate = as_choice(Aggregate, aggregate, "aggregate")
    batch, height, width = values.shape
    rows, cols = grid_shape(height, width, size)
    padded = F.pad(values, (0, cols * size - width, 0, rows * size - height))
    # b (r y) (c x) -> b r c (y x)
    cells = padded.view(batch, rows, size, cols, size).permute(0, 1, 3, 2, 4).reshape(batch, rows, cols, -1)
    if aggregate is Aggregate.MEAN:
        return cells.mean(dim=-1)
    if aggregate is Aggregate.MAX:
        return cells.amax(dim=-1)
    return cells.std(dim=-1)


class ScorerFn(Protocol):
    """The shape every registered scorer has (keyword options it does not use are ignored)."""

    def __call__(
        self, images: torch.Tensor, patch_size: int, num_scales: int, *, bins: int, aggregate: AggregateT, seed: int
    ) -> ImportanceMaps: ...


def _entropy(
    images: torch.Tensor, patch_size: int, num_scales: int, *, bins: int, aggregate: AggregateT, seed: int
) -> ImportanceMaps:
    return compute_patch_entropy_batched(images, patch_size, num_scales, bins=bins)


def _laplacian(
    images: torch.Tensor, patch_size: int, num_scales: int, *, bins: int, aggregate: AggregateT, seed: int
) -> ImportanceMaps:
    return compute_patch_laplacian_batched(images, patch_size, num_scales, aggregate)


def _upsample_mse(
    images: torch.Tensor, patch_size: int, num_scales: int, *, bins: int, aggregate: AggregateT, seed: int
) -> ImportanceMaps:
    return compute_patch_upsample_mse_batched(images, patch_size, num_scales, aggregate)


def _random(
    images: torch.Tensor, patch_size: int, num_scales: int, *, bins: int, aggregate: AggregateT, seed: int
) -> ImportanceMaps:
    return compute_patch_random_batched(images, patch_size, num_scales, seed)


SCORERS: dict[Scorer, ScorerFn] = {
    Scorer.ENTROPY: _entropy,
    Scorer.LAPLACIAN: _laplacian,
    Scorer.UPSAMPLE_MSE: _upsample_mse,
    Scorer.RANDOM: _random,
}


def compute_importance_maps(
    images: torch.Tensor,
    scorer: ScorerT = Scorer.ENTROPY,
    patch_size: int = 14,
    num_scales: int = 3,
    *,
    bins: int = 512,
    aggregate: AggregateT = Aggregate.MEAN,
    seed: int = 0,
) -> ImportanceMaps:
    """Run the named scorer (see :data:`SCORERS`).

    Args:
        images: (B, C, H, W) in [0, 255], on any device.
        scorer: ``entropy``, ``laplacian``, ``upsample_mse`` or ``random``.
        patch_size: Base cell size.
        num_scales: Number of grids.
        bins: Entropy histogram bins.
        aggregate: Per-cell aggregate of laplacian / upsample_mse.
        seed: Seed of the ``random`` scorer.

    Returns:
        {cell size: (B, rows_i, cols_i)} float32 scores, smallest size first.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    function = SCORERS[as_choice(Scorer, scorer, "scorer")]
    return function(images, patch_size, num_scales, bins=bins, aggregate=aggregate, seed=seed)

