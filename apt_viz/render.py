"""Pictures of an APT analysis: per-scale importance heatmaps and the patch-boundary overlay.

Pure functions from arrays/tensors to PIL images (no file I/O). Drawn with numpy and Pillow
rather than matplotlib, which costs 100-300 ms per figure: a 1 MP image's heatmaps and overlay
render in a few tens of milliseconds.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import ImageAnalysis

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


# --- building blocks -----------------------------------------------------------------------------

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


def expand_cells(cells: np.ndarray, cell_size: int, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour upsampling of a per-cell array to pixels, cropped to ``height x width``."""
    return np.repeat(np.repeat(cells, cell_size, axis=0), cell_size, axis=1)[:height, :width]


def partial_cell_mask(shape: tuple[int, int], cell_size: int, height: int, width: int) -> np.ndarray:
    """Bool (rows, cols): cells that extend beyond a ``height x width`` image (SPEC 2)."""
    rows, cols = shape
    row_partial = (np.arange(1, rows + 1) * cell_size) > height
    col_partial = (np.arange(1, cols + 1) * cell_size) > width
    return row_partial[:, None] | col_partial[None, :]


def split_cells(masks: Mapping[int, Any], size: int) -> np.ndarray:
    """Bool grid of scale ``size``: cells that will be split, i.e. covered by smaller selected cells.

    A cell is split when it is neither kept at its own scale nor inside a kept larger cell.
    """
    sizes = sorted(masks)
    grid = to_numpy(masks[size]) > 0
    rows, cols = grid.shape
    covered = grid.copy()
    for larger in (s for s in sizes if s > size):
        factor = larger // size
        kept = to_numpy(masks[larger]) > 0
        covered |= np.repeat(np.repeat(kept, factor, axis=0), factor, axis=1)[:rows, :cols]
    return ~covered


def _cell_edges(height: int, width: int, cell_size: int, thickness: int = 1) -> np.ndarray:
    """Bool (H, W): pixels on the edges of the ``cell_size`` grid (each cell's own border ring)."""
    ys = np.arange(height) % cell_size
    xs = np.arange(width) % cell_size
    row_edge = (ys < thickness) | (ys >= cell_size - thickness) | (np.arange(height) >= height - thickness)
    col_edge = (xs < thickness) | (xs >= cell_size - thickness) | (np.arange(width) >= width - thickness)
    return row_edge[:, None] | col_edge[None, :]


def _hatch(height: int, width: int, period: int = 6) -> np.ndarray:
    """Bool (H, W) diagonal stripes."""
    return ((np.arange(height)[:, None] + np.arange(width)[None, :]) % period) < period // 2


def _text_width(text: str, size: int = FONT_SIZE) -> int:
    left, _top, right, _bottom = font(size).getbbox(text)
    return int(right - left)


def format_number(value: float) -> str:
    # A constant cell's entropy is -log2(1 + 1e-10) = -1.4e-10 by the formula: show it as 0.
    return f"{0.0 if abs(value) < 1e-6 else value:.3g}"


# --- heatmap -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeatmapPixels:
    """A heatmap before decoration: (H, W, 3) uint8 pixels and what the caption reports."""

    pixels: np.ndarray
    low: float  # colour range, over the whole (non-partial) cells
    high: float
    cells: int
    split: int | None  # cells outlined as split (None: not shown)
    partial: int


def heatmap_pixels(
    scores: Any, cell_size: int, image_size: tuple[int, int], *, split: Any | None = None
) -> HeatmapPixels:
    """Inferno colours of one scale's cell scores at the resized image size (nearest-neighbour cells).

    ``scores``: (rows, cols) cell scores of the ``cell_size`` grid; ``image_size``: (width, height)
    of the resized image. The colour range is taken from the whole (non-partial) cells only, so the
    entropy scorer's ``pad_value`` (1e6) on padded cells does not flatten it; partial cells are
    grey stripes. ``split`` (bool, rows x cols) outlines the cells that will be split in cyan.
    """
    width, height = image_size
    values = to_numpy(scores).astype(np.float64)
    partial = partial_cell_mask(values.shape, cell_size, height, width) | ~np.isfinite(values)
    whole = values[~partial]
    low, high = (float(whole.min()), float(whole.max())) if whole.size else (0.0, 0.0)
    span = high - low
    level = np.clip((values - low) / span, 0.0, 1.0) if span > 0 else np.full(values.shape, 0.5)
    level = np.nan_to_num(level, nan=0.0)
    colours = inferno_lut()[(level * 255).round().astype(np.uint8)]  # (rows, cols, 3)
    pixels = expand_cells(colours, cell_size, height, width).copy()

    if partial.any():
        partial_pixels = expand_cells(partial, cell_size, height, width)
        stripes = _hatch(height, width)
        pixels[partial_pixels & stripes] = PARTIAL_HATCH[1]
        pixels[partial_pixels & ~stripes] = PARTIAL_HATCH[0]
    n_split = None
    if split is not None:
        split_grid = to_numpy(split).astype(bool)
        n_split = int(split_grid.sum())
        thickness = 1 if cell_size < 28 else 2
        outline = expand_cells(split_grid, cell_size, height, width) & _cell_edges(height, width, cell_size, thickness)
        pixels[outline] = SPLIT_OUTLINE
    return HeatmapPixels(pixels, low, high, int(values.size), n_split, int(partial.sum()))


def heatmap_image(
    scores: Any,
    cell_size: int,
    image_size: tuple[int, int],
    *,
    split: Any | None = None,
    label: str = "importance",
) -> Image.Image:
    """:func:`heatmap_pixels` with a title (scale, value range), a colour bar and a key below.

    The heatmap itself sits at (0, :data:`TITLE_HEIGHT`) of the returned image, at the resized
    image size, so it lines up with the overlay.
    """
    heat = heatmap_pixels(scores, cell_size, image_size, split=split)
    title = f"{label}, scale {cell_size} px: range [{format_number(heat.low)}, {format_number(heat.high)}]"
    notes = []
    if heat.split is not None:
        notes.append((SPLIT_OUTLINE, f"split: {heat.split} of {heat.cells} cells"))
    if heat.partial:
        notes.append((PARTIAL_HATCH[0], f"partial (past the image edge): {heat.partial}"))
    return _heatmap_canvas(Image.fromarray(heat.pixels), title, heat.low, heat.high, notes)


def _heatmap_canvas(
    heatmap: Image.Image, title: str, low: float, high: float, notes: Sequence[tuple[tuple[int, int, int], str]]
) -> Image.Image:
    """Title above, colour bar with ticks to the right, notes (swatch + text) below."""
    width, height = heatmap.size
    line = TITLE_HEIGHT - MARGIN // 2
    ticks = [format_number(high), format_number((low + high) / 2), format_number(low)]
    bar_area = MARGIN + COLORBAR_WIDTH + 4 + max(_text_width(t) for t in ticks) + MARGIN
    content_width = max(
        width + bar_area, _text_width(title) + 2 * MARGIN, *(_text_width(n) + 30 for _c, n in notes)
    )
    canvas_height = line + MARGIN + height + MARGIN + line * len(notes)
    canvas = Image.new("RGB", (content_width, canvas_height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, 3), title, fill=TEXT, font=font())
    top = TITLE_HEIGHT
    canvas.paste(heatmap, (0, top))

    bar_height = max(height, 3 * line)
    gradient = inferno_lut()[np.linspace(255, 0, bar_height).round().astype(np.uint8)]
    bar = np.repeat(gradient[:, None, :], COLORBAR_WIDTH, axis=1)
    bar_x = width + MARGIN
    canvas.paste(Image.fromarray(np.ascontiguousarray(bar)), (bar_x, top))
    for fraction, tick in zip((0.0, 0.5, 1.0), ticks):
        y = top + fraction * (bar_height - 1)
        draw.line([(bar_x + COLORBAR_WIDTH, y), (bar_x + COLORBAR_WIDTH + 3, y)], fill=TEXT)
        draw.text((bar_x + COLORBAR_WIDTH + 5, y), tick, fill=TEXT, font=font(), anchor="lm")

    y = top + height + MARGIN
    for colour, note in notes:
        draw.rectangle([MARGIN, y + 2, MARGIN + 14, y + 14], outline=colour, width=3, fill=BACKGROUND)
        draw.text((MARGIN + 22, y + 1), note, fill=TEXT, font=font())
        y += line
    if canvas.height < top + bar_height + MARGIN:  # tiny image: the colour bar is the tallest thing
        grown = Image.new("RGB", (canvas.width, top + bar_height + MARGIN), BACKGROUND)
        grown.paste(canvas, (0, 0))
        canvas = grown
    return canvas


# --- overlay -------------------------------------------------------------------------------------

def patch_overlay(
    image: Image.Image,
    masks: Mapping[int, Any],
    *,
    caption: str | None = None,
    tint: float = 0.18,
) -> Image.Image:
    """The resized image with the outline of every selected patch, one colour per scale, and a legend.

    ``masks``: {cell size: (rows, cols) 0/1} as selected (a partition of the base grid). Each
    selected cell is outlined in its scale's colour and lightly tinted (``tint``) so regions of
    one scale read as one colour. The legend below lists each scale's colour and token count.
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    height, width = rgb.shape[:2]
    sizes = sorted(masks)
    colour_of_pixel = np.zeros((height, width, 3), dtype=np.float32)
    outline = np.zeros((height, width), dtype=bool)
    counts = []
    for index, size in enumerate(sizes):
        kept = to_numpy(masks[size]) > 0
        counts.append(int(kept.sum()))
        here = expand_cells(kept, size, height, width)
        colour_of_pixel[here] = SCALE_COLOURS[index % len(SCALE_COLOURS)]
        outline |= here & _cell_edges(height, width, size)
    blended = rgb * (1.0 - tint) + colour_of_pixel * tint
    blended[outline] = colour_of_pixel[outline]
    picture = Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))

    entries = [
        (SCALE_COLOURS[i % len(SCALE_COLOURS)], f"{size} px: {count} patches")
        for i, (size, count) in enumerate(zip(sizes, counts))
    ]
    return _with_legend(picture, entries, caption)


def _with_legend(
    picture: Image.Image, entries: Sequence[tuple[tuple[int, int, int], str]], caption: str | None
) -> Image.Image:
    """``picture`` above a legend: optional caption line, then swatches laid out in rows."""
    line = FONT_SIZE + 8
    swatch = 14
    items = [(colour, text, swatch + 6 + _text_width(text) + 16) for colour, text in entries]
    width = max(picture.width, _text_width(caption) + 2 * MARGIN if caption else 0, max(w for *_, w in items) + MARGIN)
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


# --- one analysis --------------------------------------------------------------------------------

def selection_caption(analysis: "ImageAnalysis") -> str:
    """One line: method and its setting, tokens and retention (vs. target for budget)."""
    data = analysis.to_dict()
    method = data["method"]
    if method == "budget":
        setting = f"alpha {format_number(data['alpha'])}"
    elif method == "v2":
        effective = ", ".join("-" if t is None else format_number(t) for t in data["thresholds"] or [])
        setting = f"alpha {format_number(data['alpha'])} (thresholds {effective})"
    else:
        setting = "thresholds " + ", ".join(format_number(t) for t in data["thresholds"] or [])
    caption = f"{method}, {setting}: {data['tokens']} / {data['base_tokens']} patches ({data['retention']:.1%})"
    if data["target_retention"] is not None:
        caption += f", target {data['target_retention']:.1%}"
    return caption


def analysis_heatmaps(analysis: "ImageAnalysis") -> dict[int, Image.Image]:
    """{cell size: heatmap image} of every scale, with the cells that will be split outlined."""
    masks = analysis.masks
    return {
        size: heatmap_image(
            analysis.maps[size],
            size,
            analysis.resized_size,
            split=split_cells(masks, size) if size != min(masks) else None,
            label=f"{analysis.config.scorer} importance",
        )
        for size in sorted(analysis.maps)
    }


def analysis_overlay(analysis: "ImageAnalysis") -> Image.Image:
    """The patch-boundary overlay of an analysis, captioned with its method and token count."""
    return patch_overlay(analysis.resized, analysis.masks, caption=selection_caption(analysis))
