"""The pixels of the selected cells, as APT's mixed-scale patch embedding consumes them.

A cell of grid i (size ``p * 2**i``) is embedded from the zero-padded image downsampled by
``2**i`` (bilinear, ``align_corners=False``, as the official APT code does; for 28 px this is an
exact 2x2 average), cut into ``p x p`` patches; its full-resolution base patches are kept too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .grids import grid_shape
from .selection import Masks


def construct_patch_groups(
    images: torch.Tensor, masks: Masks, patch_size: int, *, full_patches: bool = True
) -> dict[str, torch.Tensor]:
    """Selected patches per scale.

    Args:
        images: (B, C, H, W), any value range (normalized images in APT).
        masks: {cell size: (B, rows_i, cols_i)} 0/1 selection masks, smallest size first.
        patch_size: Base patch size p.
        full_patches: Also gather ``full_patches_{s}`` (the fidelity reconstruction needs only
            the rows the model embeds).

    Returns:
        For each cell size s of grid i: ``resized_patches_{s}`` (n_s, C, p, p) from the image
        downsampled by 2^i, ``full_patches_{s}`` (n_s, 4^i, C, p, p) the base patches under each
        cell in row-major order (i > 0 only), and ``pos_embed_mask_{s}`` (B, rows_i * cols_i) bool.
        Rows follow the masks' order: image, then row, then column.
    """
    batch, channels, height, width = images.shape
    p = patch_size
    out: dict[str, torch.Tensor] = {}
    for level, size in enumerate(sorted(masks)):
        rows, cols = grid_shape(height, width, size)
        selected = masks[size].bool()
        pad = (0, cols * size - width, 0, rows * size - height)
        padded = F.pad(images, pad) if any(pad) else images
        scaled = padded
        if level > 0:
            scaled = F.interpolate(padded, scale_factor=0.5**level, mode="bilinear", align_corners=False)
        if level > 0 and full_patches:
            n = size // p
            # b ch (r n1 y) (c n2 x) -> b r c (n1 n2) ch y x
            constituents = (
                padded.view(batch, channels, rows, n, p, cols, n, p)
                .permute(0, 2, 5, 3, 6, 1, 4, 7)
                .reshape(batch, rows, cols, n * n, channels, p, p)
            )
            out[f"full_patches_{size}"] = constituents[selected]
        # b ch (r y) (c x) -> b r c ch y x
        patches = scaled.view(batch, channels, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5)
        out[f"resized_patches_{size}"] = patches[selected]
        out[f"pos_embed_mask_{size}"] = selected.flatten(1)
    return out
