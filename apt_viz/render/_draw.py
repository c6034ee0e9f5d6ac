"""Drawing building blocks shared by every picture: colours, the inferno table, fonts, cell outlines, legends.

Pictures are drawn with numpy and Pillow rather than matplotlib, which costs 100-300 ms per figure:
a 1 MP image's heatmaps and overlay render in a few tens of milliseconds.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Colour = tuple[int, int, int]


# One colour per scale, smallest first (RGB): easy to tell apart on photos and on each other.
SCALE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 48, 48),  # 14 px: red
    (40, 220, 40),  # 28 px: green
    (50, 140, 255),  # 56 px: blue
    (255, 200, 0),
    (230, 60, 230),
    (0, 230, 230),
)
SPLIT_OUTLINE = (0, 255, 255)  # cyan: stands out on every colour of inferno
PARTIAL_HATCH = ((150, 150, 150), (90, 90, 90))  # grey stripes: cells that reach past the image
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
FONT_SIZE = 13
COLORBAR_WIDTH = 16
# Weight of the photo when a map is blended over it: pytorch-grad-cam's show_cam_on_image default.
IMAGE_WEIGHT = 0.5
MARGIN = 8
TITLE_HEIGHT = FONT_SIZE + 6 + MARGIN // 2  # the heatmap starts this far below the top


# The inferno colour map, 256 RGB triples as hex: exactly OpenCV's COLORMAP_INFERNO (a test pins it),
# inlined because importing cv2 just for this table would add ~0.2 s to every run.
_INFERNO_HEX = (
    "00000401000501010601010802010a02020c02020e03021004031204031405041706041907051b08051d09061f0a0722"
    "0b07240c08260d08290e092b10092d110a30120a32140b34150b37160b39180c3c190c3e1b0c411c0c431e0c451f0c48"
    "210c4a230c4c240c4f260c51280b53290b552b0b572d0b592f0a5b310a5c320a5e340a5f3609613809623909633b0964"
    "3d09653e0966400a67420a68440a68450a69470b6a490b6a4a0c6b4c0c6b4d0d6c4f0d6c510e6c520e6d540f6d550f6d"
    "57106e59106e5a116e5c126e5d126e5f136e61136e62146e64156e65156e67166e69166e6a176e6c186e6d186e6f196e"
    "71196e721a6e741a6e751b6e771c6d781c6d7a1d6d7c1d6d7d1e6d7f1e6c801f6c82206c84206b85216b87216b88226a"
    "8a226a8c23698d23698f24699025689225689326679526679727669827669a28659b29649d29649f2a63a02a63a22b62"
    "a32c61a52c60a62d60a82e5fa92e5eab2f5ead305dae305cb0315bb1325ab3325ab43359b63458b73557b93556ba3655"
    "bc3754bd3853bf3952c03a51c13a50c33b4fc43c4ec63d4dc73e4cc83f4bca404acb4149cc4248ce4347cf4446d04545"
    "d24644d34743d44842d54a41d74b3fd84c3ed94d3dda4e3cdb503bdd513ade5238df5337e05536e15635e25734e35933"
    "e45a31e55c30e65d2fe75e2ee8602de9612bea632aeb6429eb6628ec6726ed6925ee6a24ef6c23ef6e21f06f20f1711f"
    "f1731df2741cf3761bf37819f47918f57b17f57d15f67e14f68013f78212f78410f8850ff8870ef8890cf98b0bf98c0a"
    "f98e09fa9008fa9207fa9407fb9606fb9706fb9906fb9b06fb9d07fc9f07fca108fca309fca50afca60cfca80dfcaa0f"
    "fcac11fcae12fcb014fcb216fcb418fbb61afbb81dfbba1ffbbc21fbbe23fac026fac228fac42afac62df9c72ff9c932"
    "f9cb35f8cd37f8cf3af7d13df7d340f6d543f6d746f5d949f5db4cf4dd4ff4df53f4e156f3e35af3e55df2e661f2e865"
    "f2ea69f1ec6df1ed71f1ef75f1f179f2f27df2f482f3f586f3f68af4f88ef5f992f6fa96f8fb9af9fc9dfafda1fcffa4"
)


@functools.lru_cache(maxsize=1)
def inferno_lut() -> np.ndarray:
    """(256, 3) uint8 RGB lookup table of the inferno colour map."""
    table = np.frombuffer(bytes.fromhex(_INFERNO_HEX), dtype=np.uint8).reshape(256, 3)
    table.flags.writeable = False
    return table


@functools.lru_cache(maxsize=4)
def font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def to_numpy(values: Any) -> np.ndarray:
    """A CPU tensor or array-like as a numpy array (squeezing a leading batch dimension of 1)."""
    array = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values)
    return array[0] if array.ndim == 3 and array.shape[0] == 1 else array


def cell_pixels(cells: np.ndarray, cell_size: int, image_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling of a per-cell array to pixels, cropped to the image.

    Args:
        cells: (rows, cols) or (rows, cols, C) values, one per cell of the ``cell_size`` grid.
        cell_size: Cell side in pixels.
        image_hw: (H, W) of the image the grid covers (the grid may reach past it).

    Returns:
        (H, W) or (H, W, C): every pixel holds its cell's value. Colour cells first and upsample
        after: looking colours up per pixel (``lut[indices]``) is ~4x slower at 1 MP.
    """
    height, width = image_hw
    return np.repeat(np.repeat(cells, cell_size, axis=0), cell_size, axis=1)[:height, :width]


def blend(base: np.ndarray, top: np.ndarray, weight: float | np.ndarray) -> np.ndarray:
    """``(1 - w) * base + w * top`` of two (H, W, 3) uint8 arrays, rounded, as uint8.

    Args:
        base: (H, W, 3) uint8.
        top: (H, W, 3) uint8.
        weight: The weight ``w`` of ``top``: one float in [0, 1], or (H, W) uint8 per-pixel weights
            in 1/255 (make them with :func:`weights` and :func:`weight_of`).

    Returns:
        (H, W, 3) uint8, by Pillow's ``Image.composite`` (C, ~3 ms at 1 MP; float32 numpy takes
        ~11 ms). Per-pixel weights draw outlines and lines in the same pass: a boolean
        gather/scatter of (H, W, 3) pixels afterwards costs as much as the blend itself.
    """
    height, width = base.shape[:2]
    if isinstance(weight, np.ndarray):
        mask = Image.fromarray(weight, mode="L") if weight.dtype == np.uint8 else None
        if mask is None:
            raise ValueError(f"per-pixel weights must be uint8 (1/255 steps), got {weight.dtype}")
    else:
        mask = Image.new("L", (width, height), weight_of(weight))
    return np.asarray(Image.composite(Image.fromarray(top), Image.fromarray(base), mask))


def weights(image_hw: tuple[int, int], weight: float) -> np.ndarray:
    """(H, W) uint8 per-pixel blend weights, all ``weight``; masked pixels get other :func:`weight_of` values."""
    return np.full(image_hw, weight_of(weight), dtype=np.uint8)


def weight_of(weight: float) -> int:
    """A blend weight in [0, 1] as :func:`blend` applies it: an integer number of 1/255ths."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"a blend weight must be in [0, 1], got {weight}")
    return round(weight * 255)


def region_edges(labels: np.ndarray) -> np.ndarray:
    """Bool (H, W): pixels with a 4-neighbour in another region, plus the image border.

    ``labels`` (H, W) holds a region id per pixel. Each region gets its own 1 px ring, so the line
    between two regions is 2 px: one in each region's colour.
    """
    edges = np.zeros(labels.shape, dtype=bool)
    across = labels[:, 1:] != labels[:, :-1]  # (H, W - 1): pixel and its right neighbour differ
    down = labels[1:, :] != labels[:-1, :]  # (H - 1, W): pixel and the one below differ
    edges[:, 1:] |= across
    edges[:, :-1] |= across
    edges[1:, :] |= down
    edges[:-1, :] |= down
    edges[[0, -1], :] = True
    edges[:, [0, -1]] = True
    return edges


def cell_edges(height: int, width: int, cell_size: int, thickness: int = 1) -> np.ndarray:
    """Bool (H, W): pixels on the edges of the ``cell_size`` grid (each cell's own border ring)."""
    ys = np.arange(height) % cell_size
    xs = np.arange(width) % cell_size
    row_edge = (ys < thickness) | (ys >= cell_size - thickness) | (np.arange(height) >= height - thickness)
    col_edge = (xs < thickness) | (xs >= cell_size - thickness) | (np.arange(width) >= width - thickness)
    return row_edge[:, None] | col_edge[None, :]


def hatch(height: int, width: int, period: int = 6, offset: int = 0) -> np.ndarray:
    """Bool (H, W) diagonal stripes; ``offset`` = y0 + x0 of a crop keeps them in phase with the whole."""
    return ((np.arange(height)[:, None] + np.arange(width)[None, :] + offset) % period) < period // 2


def text_width(text: str, size: int = FONT_SIZE) -> int:
    left, _top, right, _bottom = font(size).getbbox(text)
    return int(right - left)


def with_legend(
    picture: Image.Image,
    entries: Sequence[tuple[tuple[int, int, int], str]],
    caption: str | Sequence[str] | None,
) -> Image.Image:
    """``picture`` above a legend: optional caption lines, then swatches laid out in rows."""
    line = FONT_SIZE + 8
    swatch = 14
    captions = [text for text in ([caption] if isinstance(caption, str) else caption or []) if text]
    items = [(colour, text, swatch + 6 + text_width(text) + 16) for colour, text in entries]
    width = max(
        picture.width, *(text_width(text) + 2 * MARGIN for text in captions), max(w for *_, w in items) + MARGIN
    )
    rows: list[list[tuple[tuple[int, int, int], str, int]]] = [[]]
    used = MARGIN
    for item in items:
        if rows[-1] and used + item[2] > width:
            rows.append([])
            used = MARGIN
        rows[-1].append(item)
        used += item[2]
    legend_height = MARGIN + line * (len(rows) + len(captions))
    canvas = Image.new("RGB", (width, picture.height + legend_height), BACKGROUND)
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = picture.height + MARGIN // 2 + 2
    for text in captions:
        draw.text((MARGIN, y), text, fill=TEXT, font=font())
        y += line
    for row in rows:
        x = MARGIN
        for colour, text, item_width in row:
            draw.rectangle([x, y + 1, x + swatch, y + 1 + swatch], fill=colour, outline=TEXT)
            draw.text((x + swatch + 6, y + 1), text, fill=TEXT, font=font())
            x += item_width
        y += line
    return canvas
