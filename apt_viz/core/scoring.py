"""Importance scorers (docs/contract.md, section 3): (B, C, H, W) images in [0, 255] -> {cell size: (B, h_i, w_i)}.

Higher score = more detail = split. Pure tensor functions; they run on whatever device the
images are on and accept any H, W (grids are zero-padded at the bottom/right). :data:`SCORERS`
maps each :class:`~apt_viz.core.config.Scorer` to its function: adding a scorer is one function
and one entry there.
"""
from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Iterator
from typing import Protocol

import torch
import torch.nn.functional as F

from .config import Aggregate, AggregateT, Scorer, ScorerT, as_choice
from .grids import Maps, grid_shape, scale_sizes
from .random_maps import compute_patch_random_batched

GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
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
    integer histograms: one scatter-add over the base grid, and each coarser grid's histogram
    is the sum of its 2x2 children's. On the CPU the call runs on one thread whatever
    ``torch.get_num_threads()`` says, and leaves that setting as it was (docs/performance.md).

    Args:
        images: (B, C, H, W) in [0, 255] (RGB; a single channel is taken as gray), any device.
        patch_size: Base cell size; grid i has cells of ``patch_size * 2**i``.
        num_scales: Number of grids.
        bins: Histogram bins over [0, 256): bin = floor(gray * bins / 256).
        pad_value: Score of every cell in the last row (column) of a grid whose rows (columns)
            are padded, as the official code marks them.

    Returns:
        {cell size: (B, ceil(H / s), ceil(W / s))} float32 entropies in bits, smallest size first.
    """
    with single_threaded(images.device):
        return _entropy_maps(images, patch_size, num_scales, bins, pad_value)


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


def _entropy_maps(
    images: torch.Tensor, patch_size: int, num_scales: int, bins: int, pad_value: float
) -> ImportanceMaps:
    """The body of :func:`compute_patch_entropy_batched`."""
    batch, _, height, width = images.shape
    device = images.device
    sizes = scale_sizes(patch_size, num_scales)
    rows, cols = grid_shape(height, width, patch_size)
    # Base-grid histograms strip by strip of cell rows into one count buffer. On the CPU every
    # temporary lives in a per-thread workspace that is reused from call to call: freshly mapped
    # temporaries cost a page fault per 4 KiB, which made the time depend on what the process had
    # allocated before (11-28 ms for the same photo). On GPUs the caching allocator does this.
    counts = _workspace(device, "counts", (batch, rows, cols, bins), count_dtype(patch_size**2, device))
    counts.zero_()
    for first, last in _strips(rows, batch * cols * patch_size**2, device):
        keys = _strip_levels(images, first * patch_size, min(last * patch_size, height), bins,
                             (last - first) * patch_size, cols * patch_size)
        _scatter_counts(counts, keys, first, last - first, patch_size)  # padding -> bin 0

    maps: ImportanceMaps = {}
    for i, size in enumerate(sizes):
        if i > 0:
            counts = _merge_children(counts, grid_shape(height, width, size), sizes[i - 1] ** 2, f"merged{i}")
        entropy = _entropy_from_counts(counts, size * size)
        if height % size:
            entropy[:, -1, :] = pad_value
        if width % size:
            entropy[:, :, -1] = pad_value
        maps[size] = entropy
    return maps


# Per-thread scratch buffers of the CPU entropy path, by name. A buffer larger than the limit is
# allocated per call instead of kept (a one-off huge batch should not pin its memory for good).
_WORKSPACE = threading.local()
_WORKSPACE_LIMIT_BYTES = 256 << 20


def _workspace(device: torch.device, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised ``shape`` tensor: on the CPU a view of this thread's reusable buffer ``name``."""
    numel = math.prod(shape)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if device.type != "cpu" or numel * itemsize > _WORKSPACE_LIMIT_BYTES:
        return torch.empty(shape, dtype=dtype, device=device)
    buffers: dict[str, torch.Tensor] = _WORKSPACE.__dict__.setdefault("buffers", {})
    buffer = buffers.get(name)
    if buffer is None or buffer.dtype != dtype or buffer.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: usable in place inside and outside inference mode
            buffer = buffers[name] = torch.empty(numel, dtype=dtype)
    return buffer[:numel].view(shape)


def _strips(rows: int, pixels_per_row: int, device: torch.device, target: int = 1 << 17) -> list[tuple[int, int]]:
    """[first, last) cell-row ranges of about ``target`` pixels each (one range on GPUs)."""
    step = rows if device.type != "cpu" else max(1, target // max(pixels_per_row, 1))
    return [(first, min(first + step, rows)) for first in range(0, rows, step)]


def _strip_levels(
    images: torch.Tensor, top: int, bottom: int, bins: int, padded_height: int, padded_width: int
) -> torch.Tensor:
    """Histogram levels of image rows [top, bottom) as int64 (B, padded_height, padded_width), padding 0.

    The same float32 operations as ``floor(grayscale(images) * bins / 256)`` (so the same bins),
    written into workspace buffers; the input may be any dtype and layout (e.g. an HWC view).
    """
    batch, channels, _, width = images.shape
    device, height = images.device, bottom - top
    pixels = images[:, :, top:bottom]
    gray = _workspace(device, "gray", (batch, height, width), torch.float32)
    if channels == 3:
        rgb = pixels
        if pixels.dtype != torch.float32 or pixels.stride(-1) != 1:  # e.g. uint8, or an HWC view
            rgb = _workspace(device, "rgb", (batch, 3, height, width), torch.float32)
            rgb.copy_(pixels)  # one pass: contiguous rows make the arithmetic below vectorise
        term = _workspace(device, "term", (batch, height, width), torch.float32)
        torch.mul(rgb[:, 0], GRAY_WEIGHTS[0], out=gray)
        gray.add_(torch.mul(rgb[:, 1], GRAY_WEIGHTS[1], out=term))
        gray.add_(torch.mul(rgb[:, 2], GRAY_WEIGHTS[2], out=term))
    else:
        gray.copy_(pixels[:, 0])
    gray.mul_(bins / 256.0).floor_().clamp_(0, bins - 1)
    levels = _workspace(device, "levels", (batch, padded_height, padded_width), torch.int64)
    levels[:, :height, :width].copy_(gray)  # exact: non-negative whole numbers
    levels[:, height:].zero_()
    levels[:, :height, width:].zero_()
    return levels


def _scatter_counts(counts: torch.Tensor, levels: torch.Tensor, first: int, rows: int, size: int) -> None:
    """Add the histograms of the cell rows [first, first + rows) to ``counts`` (B, R, C, bins).

    ``levels`` (B, rows*size, C*size) int64 is consumed: it is turned in place into flat indices
    (image, cell, level) of ``counts``.
    """
    batch, total_rows, cols, bins = counts.shape
    device = counts.device
    cell_keys = (torch.arange(first, first + rows, device=device)[:, None] * cols
                 + torch.arange(cols, device=device)[None, :]) * bins  # (rows, cols): flat cell index * bins
    keys = levels.view(batch, rows, size, cols, size).add_(cell_keys.view(1, rows, 1, cols, 1))
    if batch > 1:
        keys.view(batch, -1).add_(torch.arange(batch, device=device)[:, None] * (total_rows * cols * bins))
    # The narrowest integer type that holds a cell's count keeps this buffer small: on CPU,
    # filling and scattering into it dominates the cost, several times faster than bincount's int64.
    one = torch.ones(1, dtype=counts.dtype, device=device).expand(keys.numel())
    counts.view(-1).scatter_add_(0, keys.view(-1), one)


def count_dtype(area: int, device: torch.device | None = None) -> torch.dtype:
    """Smallest integer dtype that holds counts up to ``area`` (int32 on GPUs, whose atomics want it)."""
    if device is not None and torch.device(device).type != "cpu":
        return torch.int32
    if area <= torch.iinfo(torch.uint8).max:
        return torch.uint8
    if area <= torch.iinfo(torch.int16).max:
        return torch.int16
    return torch.int32


def _merge_children(counts: torch.Tensor, shape: tuple[int, int], child_area: int, name: str) -> torch.Tensor:
    """Histograms of the next grid: the sum of each cell's 2x2 children.

    A child beyond the grid is all padding: it adds ``child_area`` to bin 0 (exact integer sums,
    so the order of the additions does not matter).
    """
    batch, bins = counts.shape[0], counts.shape[-1]
    merged = _workspace(counts.device, name, (batch, *shape, bins), count_dtype(4 * child_area, counts.device))
    merged.zero_()
    for dy in (0, 1):
        for dx in (0, 1):
            child = counts[:, dy::2, dx::2]  # (B, ceil((rows - dy) / 2), ceil((cols - dx) / 2), bins)
            inside_rows, inside_cols = child.shape[1:3]
            if child.dtype != merged.dtype:  # widen into the workspace: an in-place add would allocate it
                child = _workspace(counts.device, "widened", tuple(child.shape), merged.dtype).copy_(child)
            merged[:, :inside_rows, :inside_cols] += child
            merged[:, inside_rows:, :, 0] += child_area
            merged[:, :inside_rows, inside_cols:, 0] += child_area
    return merged


@functools.lru_cache(maxsize=32)
def _entropy_table(area: int, device: torch.device) -> torch.Tensor:
    """``-p log2(p + 1e-10)`` for p = count / area, count = 0..area (float32; read-only)."""
    with torch.inference_mode(False):  # cached: must not be an inference tensor when first made in one
        p = torch.arange(area + 1, device=device, dtype=torch.float64) / area
        return (-(p * torch.log2(p + 1e-10))).to(torch.float32)


def _entropy_from_counts(counts: torch.Tensor, area: int, chunk: int = 1024) -> torch.Tensor:
    """-sum_b p_b log2(p_b + 1e-10) with p_b = count_b / area, via a lookup table over the integer counts.

    Cells are processed ``chunk`` at a time so the float temporaries stay small and cache-resident.
    """
    table = _entropy_table(area, counts.device)
    flat = counts.reshape(-1, counts.shape[-1])
    cells = flat.shape[0]
    if counts.is_cuda:  # one launch; GPU memory bandwidth is not the bottleneck there
        chunk = max(cells, 1)
    out = torch.empty(cells, dtype=torch.float32, device=counts.device)
    for start in range(0, cells, chunk):
        part = flat[start : start + chunk]
        index = _workspace(counts.device, "index", (part.numel(),), torch.int32)
        terms = _workspace(counts.device, "terms", (part.numel(),), torch.float32)
        index.copy_(part.reshape(-1))
        torch.index_select(table, 0, index, out=terms)
        torch.sum(terms.view(part.shape), dim=-1, out=out[start : start + chunk])
    return out.view(counts.shape[:-1])


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

