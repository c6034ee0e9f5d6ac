"""Seeded random importance maps: the ``random`` scorer, the random baseline of docs/fidelity.md.

Every cell of every grid gets a score drawn uniformly from [0, 1), in grid order (smallest cells
first, row-major), from a CPU ``torch.Generator`` seeded with ``seed``. The maps depend on the seed
and the grid shapes only, never on the pixels or the device: a batch, a GPU run and a run of one
image all give every image the same maps, so ``stats`` rows equal ``run`` for this scorer too.
"""
from __future__ import annotations

import torch

from .grids import Maps, grid_shape, scale_sizes


def compute_patch_random_batched(
    images: torch.Tensor, patch_size: int = 14, num_scales: int = 3, seed: int = 0
) -> Maps:
    """Uniform random scores for every cell, the same for every image of the batch.

    Args:
        images: (B, C, H, W); only the batch size, the image size and the device are used.
        patch_size: Base cell size; grid i has cells of ``patch_size * 2**i``.
        num_scales: Number of grids.
        seed: Seed of the CPU generator (the same seed gives the same maps on every device).

    Returns:
        {cell size: (B, ceil(H / s), ceil(W / s))} float32 scores in [0, 1), on the images' device.
    """
    batch, _, height, width = images.shape
    generator = torch.Generator().manual_seed(seed)
    maps: Maps = {}
    for size in scale_sizes(patch_size, num_scales):
        scores = torch.rand(grid_shape(height, width, size), generator=generator)
        maps[size] = scores.to(images.device).expand(batch, -1, -1).contiguous()
    return maps
