"""A compact, exact encoding of a selection (``--save-masks``) and its reader.

A selection is a quadtree over the grids: every cell of the largest grid is one token unless it is
*split*, and a split cell's children are tokens unless split in turn; the base cells under a split
cell are tokens. So the masks of every scale follow from one bit per cell of the grids above the
base ("is this cell split?"), and the encoding stores exactly those bits:

    byte 0        format version (1)
    bytes 1...    the split bits of grid S-1, then S-2, ..., then 1 (largest cells first), each
                  grid row-major, packed 8 to a byte, most significant bit first (numpy.packbits)

A 1232x812 image (88 x 58 base cells, grids 44 x 29 and 22 x 15) takes 1 + 201 bytes instead of
the 6,710 bytes of one byte per cell of its three masks. The grid shapes come from the image size
(``resized_height``, ``resized_width`` of the row) and the patch sizes, so nothing else is stored.
:func:`decode_masks` restores the masks exactly (``tests/test_stats_masks.py`` checks every method).
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.grids import ImageHW, grid_shape, scale_sizes, upsample_cells

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..core.selection import Masks

FORMAT_VERSION = 1


def split_cells(masks: Masks) -> dict[int, torch.Tensor]:
    """{size: (B, rows_i, cols_i) bool} the split cells of every grid above the base.

    A cell is split when it is covered from above (it is in the largest grid, or its parent is
    split) and not selected itself.

    Args:
        masks: {cell size: (B, rows_i, cols_i)} 0/1 masks that partition the base grid.

    Returns:
        The split cells of each grid above the base, on the masks' device.
    """
    import torch

    sizes = sorted(masks)
    split: dict[int, torch.Tensor] = {}
    covered: torch.Tensor | None = None
    for i in range(len(sizes) - 1, 0, -1):
        selected = masks[sizes[i]] > 0
        if covered is None:
            covered = torch.ones_like(selected)
        split[sizes[i]] = covered & ~selected
        covered = upsample_cells(split[sizes[i]], 2, masks[sizes[i - 1]].shape[-2:])
    return split


def masks_from_split(split: dict[int, torch.Tensor], sizes: Sequence[int], base_shape: tuple[int, ...]) -> Masks:
    """The 0/1 float masks of a quadtree from the split cells of every grid above the base.

    The inverse of :func:`split_cells`.

    Args:
        split: {size: (..., rows_i, cols_i) bool} split cells of every grid above the base.
        sizes: Every cell size, the base included.
        base_shape: Shape of the base grid's mask, (..., rows_0, cols_0).

    Returns:
        {cell size: (..., rows_i, cols_i) float32 0/1}, smallest size first.
    """
    import torch

    sizes = sorted(sizes)
    device = next(iter(split.values())).device if split else None
    masks: Masks = {}
    covered = torch.ones(split[sizes[-1]].shape if split else base_shape, dtype=torch.bool, device=device)
    for i in range(len(sizes) - 1, -1, -1):
        if i < len(sizes) - 1:
            shape = split[sizes[i]].shape if i > 0 else base_shape
            covered = upsample_cells(split[sizes[i + 1]], 2, shape[-2:])
        masks[sizes[i]] = (covered & ~split[sizes[i]] if i > 0 else covered).float()
    return dict(sorted(masks.items()))


def encode_masks(masks: Masks) -> list[bytes]:
    """The encoding of every image of a batch (see the module docstring).

    Args:
        masks: {cell size: (B, rows_i, cols_i)} 0/1 masks that partition the base grid, any device.

    Returns:
        One ``bytes`` per image.

    Raises:
        RuntimeError: the masks are not a partition of the base grid (they could not be restored).
    """
    import numpy as np
    import torch

    sizes = sorted(masks)
    batch = masks[sizes[0]].shape[0]
    split = split_cells(masks)
    restored = masks_from_split(split, sizes, tuple(masks[sizes[0]].shape))
    if not all(torch.equal(restored[size], (masks[size] > 0).float()) for size in sizes):
        raise RuntimeError("the selection masks are not a quadtree partition of the base grid; cannot encode them")
    if len(sizes) == 1:
        return [bytes([FORMAT_VERSION])] * batch
    bits = torch.cat([split[size].flatten(1) for size in reversed(sizes[1:])], dim=1)
    packed = np.packbits(bits.cpu().numpy(), axis=1)
    header = bytes([FORMAT_VERSION])
    return [header + row.tobytes() for row in packed]


def decode_masks(data: bytes, image_hw: ImageHW, patch_size: int = 14, num_scales: int = 3) -> Masks:
    """Restore the masks of one image from its ``masks`` value (``apt-viz stats --save-masks``).

    Args:
        data: The encoded selection (the ``masks`` column of a row).
        image_hw: (H, W) the selection was made on: the row's ``resized_height``, ``resized_width``.
        patch_size: Base patch size of the run (14 for Qwen2-VL).
        num_scales: Number of scales of the run (3: 14, 28, 56 px).

    Returns:
        {cell size: (rows_i, cols_i) float32 0/1 tensor}, smallest size first: exactly the masks
        the run selected (``ImageAnalysis.masks``), a partition of the base grid.

    Raises:
        ValueError: ``data`` is not an encoding of this version or does not fit the grids.
    """
    import numpy as np
    import torch

    if not data or data[0] != FORMAT_VERSION:
        raise ValueError(f"not an apt-viz mask encoding (version byte {data[:1]!r}, expected {FORMAT_VERSION})")
    height, width = image_hw
    sizes = scale_sizes(patch_size, num_scales)
    shapes = {size: grid_shape(height, width, size) for size in sizes}
    count = sum(rows * cols for size, (rows, cols) in shapes.items() if size != sizes[0])
    expected = 1 + (count + 7) // 8
    if len(data) != expected:
        raise ValueError(f"mask encoding of {len(data)} bytes does not fit a {height}x{width} image "
                         f"({expected} bytes for patch size {patch_size}, {num_scales} scales)")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8, offset=1), count=count).astype(bool)
    split: dict[int, torch.Tensor] = {}
    offset = 0
    for size in reversed(sizes[1:]):
        rows, cols = shapes[size]
        split[size] = torch.from_numpy(bits[offset : offset + rows * cols].reshape(rows, cols).copy())
        offset += rows * cols
    return masks_from_split(split, sizes, shapes[sizes[0]])


@dataclass(frozen=True)
class SavedSelection:
    """One row of a ``stats --save-masks`` table, decoded."""

    path: str
    setting: str  # e.g. "budget alpha=0.3"
    image_hw: ImageHW  # the resized (H, W) the masks refer to
    masks: Masks  # {cell size: (rows_i, cols_i) float32 0/1}


def read_masks(table: str | os.PathLike, *, setting: str | None = None) -> Iterator[SavedSelection]:
    """Iterate over the selections saved in an ``apt-viz stats --save-masks`` table.

    Reads the table row group by row group (memory stays flat) and skips rows of failed inputs.
    The patch sizes come from the table's ``tokens_<size>`` columns.

    Args:
        table: The Parquet file (either engine; a folder of Parquet files is read as one table).
        setting: Only rows of this ``setting`` (e.g. ``"budget alpha=0.3"``); None: every row.

    Returns:
        An iterator of :class:`SavedSelection` (path, setting, resized size, masks), in table order.

    Raises:
        ValueError: the table has no ``masks`` column (it was written without ``--save-masks``).
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    dataset = ds.dataset(os.fspath(table), format="parquet")
    names = dataset.schema.names
    if "masks" not in names:
        raise ValueError(f"{os.fspath(table)}: no masks column; write the table with apt-viz stats --save-masks")
    sizes = sorted(int(name.removeprefix("tokens_")) for name in names if name.removeprefix("tokens_").isdigit())
    row_filter = pc.field("error").is_null()
    if setting is not None:
        row_filter = row_filter & (pc.field("setting") == setting)
    columns = ["path", "setting", "resized_height", "resized_width", "masks"]
    for batch in dataset.to_batches(columns=columns, filter=row_filter):
        for row in batch.to_pylist():
            hw = (row["resized_height"], row["resized_width"])
            yield SavedSelection(row["path"], row["setting"], hw,
                                 decode_masks(row["masks"], hw, sizes[0], len(sizes)))
