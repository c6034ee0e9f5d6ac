"""Shared memory for decoded pixels: how the local engine's workers hand images to a GPU without a pipe."""
from __future__ import annotations

import math
import mmap
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .decode import Decoded

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


class PixelSlots:
    """Fixed-size slots of anonymous shared memory for the decoded pixels.

    The block is mapped before the workers are forked, so they inherit it (no name in /dev/shm that
    a killed run could leave behind; the kernel frees it with the last process). A worker writes an
    image into the slot it was given; the main process reads it there and releases the slot once
    the image is scored. Pixels are stored planar, (3, H, W) as the scorers take them, and read back
    as an (H, W, 3) view. An image larger than a slot (``--no-resize``) travels through the pipe.

    Args:
        count: Number of slots.
        slot_bytes: Bytes per slot (3 per pixel).
    """

    def __init__(self, count: int, slot_bytes: int) -> None:
        self.count = count
        self.slot_bytes = slot_bytes
        self.buffer = mmap.mmap(-1, count * slot_bytes)
        self._free = list(range(count - 1, -1, -1))

    def take(self) -> int | None:
        """A free slot, or None when all are in use."""
        return self._free.pop() if self._free else None

    def release(self, slots: Iterable[int | None]) -> None:
        self._free.extend(slot for slot in slots if slot is not None)

    def view(self, slot: int, shape: tuple[int, ...]) -> np.ndarray:
        """The uint8 array of ``shape`` in ``slot`` (no copy)."""
        import numpy as np

        return np.frombuffer(self.buffer, dtype=np.uint8, count=math.prod(shape),
                             offset=slot * self.slot_bytes).reshape(shape)

    def put(self, decoded: Decoded, slot: int) -> Decoded:
        """In a worker: move ``decoded``'s pixels into ``slot`` when they fit."""
        pixels = decoded.pixels
        if pixels is not None and pixels.nbytes <= self.slot_bytes:
            height, width, channels = pixels.shape
            self.view(slot, (channels, height, width))[...] = pixels.transpose(2, 0, 1)  # h w c -> c h w
            decoded.shape, decoded.pixels = pixels.shape, None
        decoded.slot = slot
        return decoded

    def pixels(self, decoded: Decoded) -> np.ndarray | None:
        """In the main process: the (H, W, 3) pixels of ``decoded``, in its slot or sent along."""
        if decoded.pixels is not None or decoded.shape is None or decoded.slot is None:
            return decoded.pixels
        height, width, channels = decoded.shape
        return self.view(decoded.slot, (channels, height, width)).transpose(1, 2, 0)  # c h w -> h w c (a view)
