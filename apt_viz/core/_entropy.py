"""The entropy maps of docs/contract.md section 3 from exact integer histograms (docs/performance.md).

1. Levels and histograms of the base grid: the gray level of every pixel by the contract's float32
   operations, counted into its cell's histogram of the narrowest integer type.
2. Every coarser grid's histograms are the sums of their 2x2 children's (exact integer additions).
3. Entropy by lookup: ``-p log2(p + 1e-10)`` of every possible count is a table, and a cell's
   entropy is ``torch.sum`` over its row of ``bins`` terms, the very row and reduction of the dense
   formula, so every bit of the result is the same.

On the CPU, each step is one loop of the C kernel ``_cellhist`` (apt_viz/core/_cellhist.c), built
at install; the terms are still summed by ``torch.sum``. Without the kernel (no compiler at install,
or ``APT_VIZ_NATIVE=0``), and on GPUs, the steps are torch ops: a scatter-add of flat keys
``cell * bins + level`` a strip of cell rows at a time, adds of the children, and lookups (on the
CPU two uint8 counts at a time, :func:`pair_entropy`). Every path gives the same floats.
"""
from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable, Hashable
from types import ModuleType
from typing import TypeVar

import torch

from .grids import Maps, grid_shape, scale_sizes

GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
_STRIP_PIXELS = 1 << 18  # pixels per strip of cell rows: its buffers stay in the core's caches
_INT32_KEYS = 1 << 31  # keys of a strip below this are computed in int32
_LOOKUP_CELLS = 2048  # cells whose terms the kernel writes before torch.sum adds them: they stay in cache
NAN_MESSAGE = "images contain NaN: the entropy scorer needs finite pixel values"
_T = TypeVar("_T")


def _load_kernel() -> ModuleType | None:
    """The C kernel, built from _cellhist.c at install when a C compiler is there (setup.py); None without
    it, or when ``APT_VIZ_NATIVE=0`` asks for the torch path (e.g. to compare the two)."""
    if os.environ.get("APT_VIZ_NATIVE", "1") == "0":
        return None
    try:
        from . import _cellhist

        torch.empty(0).numpy()  # the arrays reach the kernel as numpy views: torch's numpy bridge must work
    except (ImportError, RuntimeError):
        return None
    return _cellhist


_native = _load_kernel()


def native_kernel() -> bool:
    """Whether the CPU runs the C kernel (apt_viz/core/_cellhist.c) rather than torch ops."""
    return _native is not None


def entropy_maps(images: torch.Tensor, patch_size: int, num_scales: int, bins: int, pad_value: float) -> Maps:
    """The body of :func:`apt_viz.core.scoring.compute_patch_entropy_batched` (same arguments)."""
    _, _, height, width = images.shape
    cpu = images.device.type == "cpu"
    counts = base_counts(images, patch_size, bins, 2 ** (num_scales - 1))
    maps: Maps = {}
    for i, size in enumerate(scale_sizes(patch_size, num_scales)):
        if i > 0:
            counts = merge_children(counts, (size // 2) ** 2, f"merged{i}")
        if cpu and _native is not None:
            entropy = native_entropy(counts, size * size)
        elif cpu and counts.dtype == torch.uint8 and bins % 2 == 0:
            entropy = pair_entropy(counts, size * size)
        else:  # GPUs (one dense launch), and counts wider than a byte (their pair table would not stay in cache)
            entropy = dense_entropy(counts, size * size)
        rows, cols = grid_shape(height, width, size)
        entropy = entropy[:, :rows, :cols].contiguous()  # drop the cells that only pad the grid
        if height % size:
            entropy[:, -1, :] = pad_value
        if width % size:
            entropy[:, :, -1] = pad_value
        maps[size] = entropy
    return maps


# --- workspace ---------------------------------------------------------------------------------

# Per-thread scratch buffers of the CPU path, by name: a freshly mapped temporary costs a page fault
# per 4 KiB, which made the time depend on what the process had allocated before (11 to 28 ms for
# the same photo). A buffer larger than the limit is allocated per call instead (a one-off huge
# batch should not pin its memory for good). On GPUs the caching allocator does this.
_WORKSPACE = threading.local()
_WORKSPACE_LIMIT_BYTES = 256 << 20


def workspace(device: torch.device, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised ``shape`` tensor: on the CPU a view of this thread's reusable buffer ``name``."""
    numel = math.prod(shape)
    if device.type != "cpu" or numel * dtype.itemsize > _WORKSPACE_LIMIT_BYTES:
        return torch.empty(shape, dtype=dtype, device=device)
    buffers: dict[str, torch.Tensor] = _WORKSPACE.__dict__.setdefault("buffers", {})
    buffer = buffers.get(name)
    if buffer is None or buffer.dtype != dtype or buffer.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: usable in place inside and outside inference mode
            buffer = buffers[name] = torch.empty(numel, dtype=dtype)
    return buffer[:numel].view(shape)


def _constant(make: Callable[..., _T]) -> Callable[..., _T]:
    """Cache a function that builds a read-only tensor (outside inference mode, so any caller may use it)."""

    @functools.lru_cache(maxsize=32)
    def cached(*args: Hashable) -> _T:
        with torch.inference_mode(False):
            return make(*args)

    return cached


# --- 1. base histograms ------------------------------------------------------------------------

def count_dtype(area: int, device: torch.device | None = None) -> torch.dtype:
    """Smallest integer dtype that holds counts up to ``area`` (int32 on GPUs, whose atomics want it)."""
    if device is not None and torch.device(device).type != "cpu":
        return torch.int32
    if area <= torch.iinfo(torch.uint8).max:
        return torch.uint8
    if area <= torch.iinfo(torch.int16).max:
        return torch.int16
    return torch.int32


def base_counts(images: torch.Tensor, patch_size: int, bins: int, multiple: int) -> torch.Tensor:
    """Histograms (B, R, C, bins) of the base cells, over a grid padded to a ``multiple`` of cells per side.

    Pixels beyond the image (the contract's zero padding, and the cells added to reach the multiple,
    which make every coarser grid an exact 2x2 merge) count as level 0.
    """
    batch, _, height, width = images.shape
    device = images.device
    rows, cols = (math.ceil(n / multiple) * multiple for n in grid_shape(height, width, patch_size))
    counts = workspace(device, "counts", (batch, rows, cols, bins), count_dtype(patch_size**2, device))
    if device.type == "cpu" and _native is not None:
        pixels = images if images.dtype in (torch.float32, torch.uint8) else images.float()
        weights, folded = _gray_weights(bins, images.shape[1] == 3, device)
        weights3 = (*weights.view(-1).tolist(), 0.0, 0.0)[:3]  # one weight when not RGB: the kernel takes three
        if _native.base_counts(pixels.detach().numpy(), counts.numpy(), weights3,
                               1.0 if folded else bins / 256.0, patch_size):
            raise ValueError(NAN_MESSAGE)
        return counts
    if device.type != "cpu" and _has_nan(images):  # a CUDA scatter to the index of NaN would assert on the device
        raise ValueError(NAN_MESSAGE)
    counts.zero_()
    if device.type == "cpu":  # one image and a few cell rows at a time, in cache
        step, images_per_piece = max(1, _STRIP_PIXELS // (cols * patch_size**2)), 1
    else:  # one piece: few large launches
        step, images_per_piece = rows, batch
    one = torch.ones(1, dtype=counts.dtype, device=device)
    for first_image in range(0, batch, images_per_piece):
        pixels = images[first_image : first_image + images_per_piece]
        for first in range(0, rows, step):
            last = min(first + step, rows)
            levels = workspace(device, "levels", (len(pixels), (last - first) * patch_size, cols * patch_size),
                               torch.float32)
            gray_levels(pixels, first * patch_size, bins, levels)
            keys = _keys(levels, patch_size, bins)
            target = counts[first_image : first_image + len(pixels), first:last]  # contiguous: one image, or all rows
            try:
                target.view(-1).scatter_add_(0, keys, one.expand(keys.numel()))
            except RuntimeError:  # an index out of range: the level of NaN (checked only now, at no cost before)
                if _has_nan(pixels):
                    raise ValueError(NAN_MESSAGE) from None
                raise
    return counts


def _has_nan(images: torch.Tensor) -> bool:
    return images.is_floating_point() and bool(torch.isnan(images).any())


def gray_levels(images: torch.Tensor, top: int, bins: int, levels: torch.Tensor) -> None:
    """Write the histogram levels of image rows ``[top, top + levels.shape[1])`` into ``levels`` (B, h, w).

    ``clamp(gray * bins / 256, 0, bins - 1)`` with gray = 0.2989 R + 0.5870 G + 0.1140 B in float32,
    the contract's operations in its order (the first channel if not RGB); 0 beyond the image. The
    level is the integer part, taken by the conversion to integer keys (truncation is floor for
    values >= 0, so no separate floor pass). When ``bins / 256`` is a power of two it is folded into
    the weights (scaling by a power of two is exact in floating point, so every product and sum is
    the same).
    """
    batch, channels, height, width = images.shape
    device = images.device
    inside = max(0, min(height - top, levels.shape[1]))
    gray = levels[:, :inside, :width]
    pixels = images[:, : 3 if channels == 3 else 1, top : top + inside]
    if torch.promote_types(pixels.dtype, torch.float32) != torch.float32:  # e.g. float64: to float32 first
        pixels = workspace(device, "pixels", tuple(pixels.shape), torch.float32).copy_(pixels)
    weights, folded = _gray_weights(bins, channels == 3, device)

    def product(channel: int, out: torch.Tensor) -> torch.Tensor:
        if pixels.dtype == torch.float32:
            return torch.mul(pixels[:, channel], weights[channel], out=out)
        # e.g. uint8: converted (exactly) first, then multiplied; about 20% faster than a mixed-type mul
        return out.copy_(pixels[:, channel]).mul_(weights[channel])

    product(0, gray)
    if channels == 3:
        # Channel by channel through one plane-sized buffer rather than a 3-channel product buffer:
        # the image is read once and what is written stays in the core's cache.
        buffer = workspace(device, "product", (batch, inside, width), torch.float32)
        gray.add_(product(1, buffer))
        gray.add_(product(2, buffer))
    if not folded:
        gray.mul_(bins / 256.0)
    if images.dtype != torch.uint8:  # uint8 gray is below 255: its levels are already in range
        gray.clamp_(0, bins - 1)
    if inside < levels.shape[1]:
        levels[:, inside:].zero_()
    if width < levels.shape[2]:
        levels[:, :inside, width:].zero_()


@_constant
def _gray_weights(bins: int, rgb: bool, device: torch.device) -> tuple[torch.Tensor, bool]:
    """The float32 weights (3 or 1, 1, 1) that multiply the channels, and whether bins / 256 is in them."""
    scale = bins / 256.0
    folded = scale == 2.0 ** round(math.log2(scale))
    factor = scale if folded else 1.0
    weights = [w * factor for w in GRAY_WEIGHTS] if rgb else [factor]
    return torch.tensor(weights, dtype=torch.float32, device=device).view(-1, 1, 1), folded


def _keys(levels: torch.Tensor, size: int, bins: int) -> torch.Tensor:
    """Flat int64 keys ``cell * bins + level`` of a piece's levels (B, rows * size, cols * size), consumed."""
    batch, height, width = levels.shape
    rows, cols = height // size, width // size
    keys = workspace(levels.device, "keys", (levels.numel(),), torch.int64)
    if levels.device.type == "cpu" and batch * rows * cols * bins < _INT32_KEYS:
        # float32 -> int32, int32 adds, int32 -> int64 is about twice as fast here as float32 -> int64.
        narrow = workspace(levels.device, "keys32", levels.shape, torch.int32).copy_(levels)  # truncates: floor
        narrow.add_(_key_plane(rows, cols, size, bins))
        return keys.copy_(narrow.view(-1))
    keys.view(levels.shape).copy_(levels)  # truncates: floor
    cells = torch.arange(batch * rows * cols, device=levels.device).view(batch, rows, 1, cols, 1) * bins
    keys.view(batch, rows, size, cols, size).add_(cells)
    return keys


@_constant
def _key_plane(rows: int, cols: int, size: int, bins: int) -> torch.Tensor:
    """(rows * size, cols * size) int32: ``cell * bins`` at every pixel of each cell (CPU)."""
    cells = torch.arange(rows * cols, dtype=torch.int32).view(rows, 1, cols, 1) * bins
    return cells.expand(rows, size, cols, size).reshape(rows * size, cols * size)


# --- 2. coarser grids --------------------------------------------------------------------------

def merge_children(counts: torch.Tensor, child_area: int, name: str) -> torch.Tensor:
    """Histograms of the next grid (B, R/2, C/2, bins): each cell's 2x2 children summed (by the kernel on
    the CPU; else rows then columns)."""
    batch, rows, cols, bins = counts.shape
    dtype = count_dtype(4 * child_area, counts.device)
    merged = workspace(counts.device, name, (batch, rows // 2, cols // 2, bins), dtype)
    if counts.device.type == "cpu" and _native is not None:  # widens as it adds
        _native.merge_children(counts.numpy(), merged.numpy())
        return merged
    if counts.dtype != dtype:  # widen first (one pass): the sum of two cells may not fit the children's type
        # (into a workspace buffer: an add of mixed types would allocate the widened copy every call)
        counts = workspace(counts.device, f"{name}-widened", tuple(counts.shape), dtype).copy_(counts)
    pairs = counts.view(batch, rows // 2, 2, cols, bins)
    half = workspace(counts.device, f"{name}-rows", (batch, rows // 2, cols, bins), dtype)
    torch.add(pairs[:, :, 0], pairs[:, :, 1], out=half)
    pairs = half.view(batch, rows // 2, cols // 2, 2, bins)
    return torch.add(pairs[:, :, :, 0], pairs[:, :, :, 1], out=merged)


# --- 3. entropy from counts --------------------------------------------------------------------

@_constant
def entropy_table(area: int, device: torch.device) -> torch.Tensor:
    """``-p log2(p + 1e-10)`` for p = count / area, count = 0..area (float32; read-only)."""
    p = torch.arange(area + 1, device=device, dtype=torch.float64) / area
    return (-(p * torch.log2(p + 1e-10))).to(torch.float32)


def dense_entropy(counts: torch.Tensor, area: int, chunk: int = 2048) -> torch.Tensor:
    """(B, R, C) entropies: per cell, ``torch.sum`` of the ``bins`` terms looked up in :func:`entropy_table`.

    Cells are processed ``chunk`` at a time on the CPU so the float temporaries stay small.
    """
    table = entropy_table(area, counts.device)
    flat = counts.reshape(-1, counts.shape[-1])
    cells = flat.shape[0]
    if counts.device.type != "cpu":  # one launch; GPU memory bandwidth is not the bottleneck there
        chunk = max(cells, 1)
    out = torch.empty(cells, dtype=torch.float32, device=counts.device)
    for start in range(0, cells, chunk):
        part = flat[start : start + chunk]
        index = workspace(counts.device, "index", (part.numel(),), torch.int32).copy_(part.reshape(-1))
        terms = workspace(counts.device, "terms", (part.numel(),), torch.float32)
        torch.index_select(table, 0, index, out=terms)
        torch.sum(terms.view(part.shape), dim=-1, out=out[start : start + chunk])
    return out.view(counts.shape[:-1])


def native_entropy(counts: torch.Tensor, area: int) -> torch.Tensor:
    """What :func:`dense_entropy` gives for contiguous CPU ``counts``, with the lookups in the C kernel.

    The kernel writes the row of ``bins`` terms of :data:`_LOOKUP_CELLS` cells at a time (a word of
    zero counts without a lookup), and ``torch.sum`` adds each row, the same reduction over the same
    row as :func:`dense_entropy`.
    """
    assert _native is not None, "native_entropy needs the C kernel"
    *grid, bins = counts.shape
    cells = math.prod(grid)
    table = entropy_table(area, counts.device).numpy()
    flat = counts.view(cells, bins)
    terms = workspace(counts.device, "native-terms", (min(_LOOKUP_CELLS, cells), bins), torch.float32)
    out = torch.empty(cells, dtype=torch.float32)
    for start in range(0, cells, _LOOKUP_CELLS):
        stop = min(start + _LOOKUP_CELLS, cells)
        _native.lookup(flat[start:stop].numpy(), table, terms[: stop - start].numpy())
        torch.sum(terms[: stop - start], dim=-1, out=out[start:stop])
    return out.view(grid)


@_constant
def pair_table(area: int, device: torch.device) -> torch.Tensor:
    """int64 words holding the :func:`entropy_table` terms of two uint8 counts, the first at the lower address.

    A word's index is the two counts' bytes read as one 16-bit integer (:func:`_pair_index`: no
    arithmetic per pair). The table is built from those very bytes, whatever the machine's byte order.
    """
    terms = entropy_table(area, torch.device("cpu"))
    terms = torch.cat([terms, terms.new_zeros(256 - terms.numel())])  # counts above area never occur
    word = torch.arange(1 << 16)
    first, second = word % 256, word // 256
    index = _pair_index(torch.stack([first, second], 1).to(torch.uint8).view(-1)).long()
    table = torch.empty(1 << 16, dtype=torch.int64)
    table[index] = torch.stack([terms[first], terms[second]], 1).contiguous().view(torch.int64).view(-1)
    return table.to(device)


_UINT16: torch.dtype | None = getattr(torch, "uint16", None)


def _pair_index(counts: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """int32 indices into :func:`pair_table` of consecutive pairs of flat contiguous uint8 ``counts``."""
    halves = counts.view(_UINT16 or torch.int16)
    out = torch.empty(halves.shape, dtype=torch.int32) if out is None else out
    out.copy_(halves)
    if _UINT16 is None:  # torch before 2.3 has no uint16: read signed, then keep the low 16 bits
        out.bitwise_and_(0xFFFF)
    return out


def pair_entropy(counts: torch.Tensor, area: int, chunk: int = 1024) -> torch.Tensor:
    """What :func:`dense_entropy` gives for contiguous uint8 ``counts`` and an even count of bins, with one
    table lookup per two bins (CPU).

    A lookup returns an int64 word holding two float32 terms, so the looked-up words, viewed as float32,
    are the very row of ``bins`` terms that :func:`dense_entropy` sums, and ``torch.sum`` of that row gives
    the same float. A lookup costs about the same for 8 bytes as for 4 (``index_select`` is a scalar loop
    over the indices), so this halves the cost of the largest step. The words are made and summed
    ``chunk`` cells at a time, so that they are still in the core's cache when summed.
    """
    *grid, bins = counts.shape
    cells, half = math.prod(grid), bins // 2
    device = counts.device
    table = pair_table(area, device)
    index = _pair_index(counts.view(-1), out=workspace(device, "pair-index", (cells * half,), torch.int32))
    words = workspace(device, "pair-words", (min(chunk, cells) * half,), torch.int64)
    terms = words.view(torch.float32).view(-1, bins)
    out = torch.empty(cells, dtype=torch.float32, device=device)
    for start in range(0, cells, chunk):
        stop = min(start + chunk, cells)
        torch.index_select(table, 0, index[start * half : stop * half], out=words[: (stop - start) * half])
        torch.sum(terms[: stop - start], dim=-1, out=out[start:stop])
    return out.view(grid)
