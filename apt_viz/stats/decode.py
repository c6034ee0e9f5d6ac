"""Decode and resize one input as Qwen2-VL's processor would: the CPU half of a ``stats`` run.

Runs in worker processes (local engine) or Ray tasks, so it imports torch, numpy and Pillow only
when called. It uses the same functions as ``apt-viz run`` (:func:`~apt_viz.imaging.load_image`,
:func:`~apt_viz.imaging.resized_pixels`, the pixels of ``resize_for_qwen2vl``), and hands back
the resized pixels as a compact uint8 array: 3 bytes per pixel instead of the 12 of a float tensor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ..core.config import APTConfig


@dataclass
class Decoded:
    """One input after decoding and resizing: its pixels, or why it failed."""

    path: str
    original_hw: tuple[int, int] | None = None  # as loaded (EXIF applied)
    pixels: np.ndarray | None = None  # (H, W, 3) uint8, resized: a view of planar (3, H, W) memory
    error: str | None = None  # one line
    internal: bool = False  # the error is a bug in apt-viz, not a bad input
    slot: int | None = None  # local engine: the shared-memory slot holding the pixels ...
    shape: tuple[int, ...] | None = None  # ... and their shape (then ``pixels`` is None)
    original: np.ndarray | None = None  # keep_original: (h, w, 3) uint8 as loaded (fidelity's uniform baselines)


def decode(path: str, config: APTConfig, max_image_pixels: int | None = None, data: bytes | None = None,
           debug: bool = False, keep_original: bool = False) -> Decoded:
    """Load ``path`` (or its content ``data``), resize it for Qwen2-VL, and return the uint8 pixels.

    Args:
        path: The input (a local path, or the name of ``data``).
        config: Supplies the resize rule and backend.
        max_image_pixels: Decompression-bomb limit (None: none).
        data: The file's bytes when they were read elsewhere (Ray); None: read ``path``.
        debug: Put the traceback of an internal error in its message.
        keep_original: Also return the image as loaded (``--fidelity``: the uniform baselines resize it).

    Returns:
        A :class:`Decoded`; it never raises for a bad input.
    """
    from ..batch.failures import failure_of
    from ..imaging import load_image, load_image_bytes, resized_pixels

    original_hw = None
    try:
        image = load_image(path, max_image_pixels) if data is None else load_image_bytes(data, path, max_image_pixels)
        original_hw = (image.height, image.width)
        pixels = resized_pixels(image, config.resize_spec, config.backend)
        kept = None
        if keep_original:
            import numpy as np

            kept = np.asarray(image)
        return Decoded(path, original_hw, pixels.numpy().transpose(1, 2, 0), original=kept)  # c h w -> h w c (a view)
    except Exception as exc:
        failure = failure_of(path, exc, debug)
        return Decoded(path, original_hw, error=failure.error, internal=failure.kind == "internal")
