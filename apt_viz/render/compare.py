"""One sheet comparing the selection methods on one image: v1, v2 and budget overlays side by side.

The image is scored once; every panel re-runs only the selection (:meth:`ImageAnalysis.reselect`).
Columns are the methods (v1, v2, budget), rows the alpha values (v2 and budget); v1 has no alpha
and appears once. Each panel is the patch overlay of :mod:`apt_viz.render`, captioned with its
setting, vision tokens, retention and Qwen2-VL LLM tokens. Pure: returns a PIL image.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ..analysis import ImageAnalysis

DEFAULT_ALPHAS = {"v2": 1.0, "budget": 0.5}  # without --alphas: APT's v2 default, half the base patches
COLUMNS = ("v1", "v2", "budget")
GAP = 12
SHEET_TITLE_HEIGHT = 28


@dataclass(frozen=True)
class Panel:
    """One overlay of the sheet: its analysis and where it was pasted (left, top, right, bottom)."""

    analysis: ImageAnalysis
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class ComparisonSheet:
    image: Image.Image
    panels: list[Panel]
    skipped: list[str]  # settings that cannot run (budget alpha > 1), one line each


PanelSetting = dict[str, Any]  # reselect() arguments: {"method": ..., "alpha": ...}


def panel_settings(alphas: Sequence[float] | None) -> tuple[list[list[PanelSetting | None]], list[str]]:
    """Rows of panel settings {method, alpha} (v1 only in the first row) and what was skipped."""
    skipped: list[str] = []
    if not alphas:
        return [[{"method": "v1"}, {"method": "v2", "alpha": DEFAULT_ALPHAS["v2"]},
                 {"method": "budget", "alpha": DEFAULT_ALPHAS["budget"]}]], skipped
    rows: list[list[PanelSetting | None]] = []
    for index, alpha in enumerate(alphas):
        row: list[PanelSetting | None] = [{"method": "v1"}] if index == 0 else [None]
        row.append({"method": "v2", "alpha": alpha})
        if alpha <= 1:
            row.append({"method": "budget", "alpha": alpha})
        else:
            row.append(None)
            skipped.append(f"budget at alpha {alpha:g} skipped: budget alpha is a fraction in (0, 1]")
        rows.append(row)
    return rows, skipped


def panel_caption(analysis: ImageAnalysis) -> str:
    """The overlay caption of :mod:`apt_viz.render` plus the LLM tokens Qwen2-VL would see."""
    from .overlay import selection_caption

    stats = analysis.stats
    return f"{selection_caption(analysis)}; LLM {stats.llm_tokens} / {stats.baseline_llm_tokens}"


def compare_sheet(
    analysis: ImageAnalysis, alphas: Sequence[float] | None = None, *, panel_width: int | None = None
) -> ComparisonSheet:
    """The comparison sheet of an analysed image (its v1 thresholds come from ``analysis.config``).

    ``panel_width`` scales each panel down to that width (for small sheets; text shrinks with it).
    """
    from PIL import Image, ImageDraw

    from ._draw import BACKGROUND, TEXT, font
    from .overlay import patch_overlay

    rows, skipped = panel_settings(alphas)
    drawn: list[list[tuple[ImageAnalysis, Image.Image] | None]] = []
    for row in rows:
        drawn_row: list[tuple[ImageAnalysis, Image.Image] | None] = []
        for setting in row:
            if setting is None:
                drawn_row.append(None)
                continue
            run = analysis.reselect(**setting)
            picture = patch_overlay(run.resized, run.masks, caption=panel_caption(run))
            if panel_width is not None and picture.width > panel_width:
                height = round(picture.height * panel_width / picture.width)
                picture = picture.resize((panel_width, height), Image.Resampling.LANCZOS)
            drawn_row.append((run, picture))
        drawn.append(drawn_row)

    pictures = [cell[1] for row in drawn for cell in row if cell is not None]
    cell_width = max(p.width for p in pictures)
    row_heights = [max(cell[1].height for cell in row if cell is not None) for row in drawn]
    width = GAP + len(COLUMNS) * (cell_width + GAP)
    height = SHEET_TITLE_HEIGHT + GAP + sum(h + GAP for h in row_heights)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    resized_height, resized_width = analysis.resized_hw
    name = analysis.source or "image"
    draw.text(
        (GAP, 7),
        f"{name}: {resized_width}x{resized_height}, N = {analysis.stats.base_tokens} base patches, "
        f"scorer {analysis.config.scorer}",
        fill=TEXT,
        font=font(15),
    )
    panels = []
    top = SHEET_TITLE_HEIGHT + GAP
    for drawn_row, row_height in zip(drawn, row_heights):
        for column, cell in enumerate(drawn_row):
            if cell is None:
                continue
            run, picture = cell
            left = GAP + column * (cell_width + GAP)
            sheet.paste(picture, (left, top))
            panels.append(Panel(run, (left, top, left + picture.width, top + picture.height)))
        top += row_height + GAP
    return ComparisonSheet(sheet, panels, skipped)
