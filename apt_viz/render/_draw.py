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


def cell_edges(height: int, width: int, cell_size: int, thickness: int = 1) -> np.ndarray:
    """Bool (H, W): pixels on the edges of the ``cell_size`` grid (each cell's own border ring)."""
    ys = np.arange(height) % cell_size
    xs = np.arange(width) % cell_size
    row_edge = (ys < thickness) | (ys >= cell_size - thickness) | (np.arange(height) >= height - thickness)
    col_edge = (xs < thickness) | (xs >= cell_size - thickness) | (np.arange(width) >= width - thickness)
    return row_edge[:, None] | col_edge[None, :]


def hatch(height: int, width: int, period: int = 6) -> np.ndarray:
    """Bool (H, W) diagonal stripes."""
    return ((np.arange(height)[:, None] + np.arange(width)[None, :]) % period) < period // 2


def text_width(text: str, size: int = FONT_SIZE) -> int:
    left, _top, right, _bottom = font(size).getbbox(text)
    return int(right - left)


def with_legend(
    picture: Image.Image, entries: Sequence[tuple[tuple[int, int, int], str]], caption: str | None
) -> Image.Image:
    """``picture`` above a legend: optional caption line, then swatches laid out in rows."""
    line = FONT_SIZE + 8
    swatch = 14
    items = [(colour, text, swatch + 6 + text_width(text) + 16) for colour, text in entries]
    width = max(picture.width, text_width(caption) + 2 * MARGIN if caption else 0, max(w for *_, w in items) + MARGIN)
    rows: list[list[tuple[tuple[int, int, int], str, int]]] = [[]]
    used = MARGIN
    for item in items:
        if rows[-1] and used + item[2] > width:
            rows.append([])
            used = MARGIN
        rows[-1].append(item)
        used += item[2]
    legend_height = MARGIN + line * (len(rows) + (1 if caption else 0))
    canvas = Image.new("RGB", (width, picture.height + legend_height), BACKGROUND)
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = picture.height + MARGIN // 2 + 2
    if caption:
        draw.text((MARGIN, y), caption, fill=TEXT, font=font())
        y += line
    for row in rows:
        x = MARGIN
        for colour, text, item_width in row:
            draw.rectangle([x, y + 1, x + swatch, y + 1 + swatch], fill=colour, outline=TEXT)
            draw.text((x + swatch + 6, y + 1), text, fill=TEXT, font=font())
            x += item_width
        y += line
    return canvas
