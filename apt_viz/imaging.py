"""Image preparation as Qwen2-VL's processors see it (docs/contract.md, section 1).

Loading (first frame, EXIF orientation, RGB as transformers' ``convert_to_rgb``) and the resize to
``smart_resize`` with either of transformers' backends: ``torchvision`` (what ``AutoImageProcessor``
loads for Qwen2-VL in transformers 5, the default) or ``pil``. Each gives exactly the pixels its
transformers image processor gives, so the CLI selects what the model's processor selects.
"""
from __future__ import annotations

import io
import os
from typing import IO, TYPE_CHECKING

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .core.config import Backend, BackendT, as_choice
from .core.qwen2vl import ResizeSpec, UnsupportedImageError

if TYPE_CHECKING:  # pragma: no cover
    import torch


class ImageLoadError(ValueError):
    """An input that cannot be turned into an image Qwen2-VL would accept."""


# What makes an input unusable (as opposed to a bug in apt-viz): a batch reports these per input.
INPUT_ERRORS = (ImageLoadError, UnsupportedImageError)


def convert_to_rgb(image: Image.Image) -> Image.Image:
    """RGB exactly as transformers' ``convert_to_rgb``: transparency is composited onto white.

    Args:
        image: Any PIL image (palette, grayscale, CMYK, 16-bit, with or without alpha).

    Returns:
        An RGB image (``image`` itself when it already is one).
    """
    if image.mode == "RGB":
        return image
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | os.PathLike, max_image_pixels: int | None = Image.MAX_IMAGE_PIXELS) -> Image.Image:
    """Open ``path`` as Qwen2-VL would take it: first frame, EXIF orientation applied, RGB.

    Args:
        path: The image file.
        max_image_pixels: Pillow's decompression-bomb limit for this call (None: no limit).

    Returns:
        An RGB PIL image, fully loaded (the file is closed).

    Raises:
        ImageLoadError: one line for anything unusable: missing, empty, not an image, truncated,
            or larger than ``max_image_pixels``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageLoadError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ImageLoadError(f"{path}: empty file (0 bytes)")
    return _open_image(path, path, max_image_pixels)


def load_image_bytes(data: bytes, name: str, max_image_pixels: int | None = Image.MAX_IMAGE_PIXELS) -> Image.Image:
    """:func:`load_image` for the content of a file that was read elsewhere (e.g. by Ray from object storage).

    Args:
        data: The file's bytes.
        name: What error messages call the input (its path or URI).
        max_image_pixels: Pillow's decompression-bomb limit for this call (None: no limit).

    Returns:
        An RGB PIL image, the same as :func:`load_image` gives for a file holding ``data``.

    Raises:
        ImageLoadError: as :func:`load_image`.
    """
    if not data:
        raise ImageLoadError(f"{name}: empty file (0 bytes)")
    return _open_image(io.BytesIO(data), name, max_image_pixels)


def _open_image(source: str | IO[bytes], name: str, max_image_pixels: int | None) -> Image.Image:
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_image_pixels
    try:
        with Image.open(source) as opened:
            opened.seek(0)  # animated images: the first frame, as transformers' loader does
            opened.load()
            image = ImageOps.exif_transpose(opened)
            return convert_to_rgb(image).copy()
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"{name}: too large ({exc}); raise --max-image-pixels to allow it") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{name}: not a readable image") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated / corrupt data
        raise ImageLoadError(f"{name}: corrupt or truncated image ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


def resize_for_qwen2vl(
    image: Image.Image, spec: ResizeSpec = ResizeSpec(), backend: BackendT = Backend.TORCHVISION
) -> Image.Image:
    """The RGB image resized to ``smart_resize`` with bicubic interpolation, as Qwen2-VL's processor does.

    Args:
        image: Any PIL image (converted to RGB first).
        spec: Target-size rule; with ``spec.resize`` False the image keeps its size.
        backend: ``torchvision``: the pixels of transformers' ``Qwen2VLImageProcessor`` (torch's
            antialiased bicubic on uint8, the kernel torchvision's ``resize`` runs on the CPU);
            ``pil``: those of ``Qwen2VLImageProcessorPil`` (Pillow's BICUBIC).

    Returns:
        The resized RGB image (the input itself when the size does not change).

    Raises:
        UnsupportedImageError: smart_resize refuses the size (aspect ratio over 200).
    """
    backend = as_choice(Backend, backend, "backend")
    image = convert_to_rgb(image)
    height, width = spec.target_hw(image.height, image.width)
    if (height, width) == (image.height, image.width):
        return image
    if backend is Backend.PIL:
        return image.resize((width, height), resample=Image.Resampling.BICUBIC)
    return pixels_to_image(_resize_like_torchvision(image, height, width))


def resized_pixels(
    image: Image.Image, spec: ResizeSpec = ResizeSpec(), backend: BackendT = Backend.TORCHVISION
) -> torch.Tensor:
    """:func:`resize_for_qwen2vl` as the (3, H, W) uint8 tensor the scorers take, without a PIL image on the way.

    Args:
        image: Any PIL image (converted to RGB first).
        spec: Target-size rule.
        backend: ``torchvision`` or ``pil`` (see :func:`resize_for_qwen2vl`).

    Returns:
        The resized pixels, (3, H, W) uint8, contiguous: exactly those of :func:`resize_for_qwen2vl`.

    Raises:
        UnsupportedImageError: smart_resize refuses the size (aspect ratio over 200).
    """
    backend = as_choice(Backend, backend, "backend")
    image = convert_to_rgb(image)
    height, width = spec.target_hw(image.height, image.width)
    if (height, width) == (image.height, image.width):
        return image_to_pixels(image)
    if backend is Backend.PIL:
        return image_to_pixels(image.resize((width, height), resample=Image.Resampling.BICUBIC))
    return _resize_like_torchvision(image, height, width)


def _resize_like_torchvision(image: Image.Image, height: int, width: int) -> torch.Tensor:
    """``torchvision.transforms.v2.functional.resize(uint8 CHW, BICUBIC, antialias=True)`` on the CPU:
    (3, height, width) uint8, contiguous.

    torchvision sends CPU uint8 bicubic input straight to this ``interpolate`` call (no float
    round trip); calling it here gives the same bytes (a test pins it against torchvision and
    transformers) without importing torchvision, whose import pulls in ``torch._dynamo`` (~1.2 s).
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    # h w c -> 1 c h w as a view: the uint8 antialias kernel gives the same bytes for this layout as for
    # the planar copy transformers' process_image makes (a test pins it), without making that copy
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None]
    return F.interpolate(pixels, size=(height, width), mode="bicubic", align_corners=False, antialias=True)[0]


def image_to_pixels(image: Image.Image) -> torch.Tensor:
    """The RGB pixels of ``image`` as a contiguous (3, H, W) uint8 tensor.

    Band by band: a planar copy of an interleaved array is several times slower than Pillow's split.
    """
    import numpy as np
    import torch

    rgb = convert_to_rgb(image)
    planes = np.empty((3, rgb.height, rgb.width), dtype=np.uint8)
    for plane, band in zip(planes, rgb.split()):
        plane[...] = np.asarray(band)
    return torch.from_numpy(planes)


def pixels_to_image(pixels: torch.Tensor) -> Image.Image:
    """The RGB image of (3, H, W) uint8 pixels on the CPU (the inverse of :func:`image_to_pixels`).

    Pillow interleaves the three planes itself (``Image.merge``): several times faster than an
    interleaved copy of the tensor (c h w -> h w c) made by torch or numpy.
    """
    planes = pixels.contiguous().numpy()
    height, width = planes.shape[1:]
    bands = [Image.frombuffer("L", (width, height), plane, "raw", "L", 0, 1) for plane in planes]
    return Image.merge("RGB", bands)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """The RGB pixels of ``image`` as a (1, 3, H, W) float32 tensor in [0, 255]."""
    return image_to_pixels(image).unsqueeze(0).float()


ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG is an error, never silently grey
