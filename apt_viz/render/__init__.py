"""Pictures of an APT analysis: pure functions from arrays and analyses to PIL images (no file I/O).

``heatmap`` (importance maps), ``overlay`` (selected patches), ``compare`` (sheets of several
settings) and ``plots`` (matplotlib figures, imported only where used); ``_draw`` holds the shared
colours, fonts and drawing steps.
"""
from __future__ import annotations

from ._draw import (
    COLORBAR_WIDTH,
    PARTIAL_HATCH,
    SCALE_COLOURS,
    SPLIT_OUTLINE,
    TITLE_HEIGHT,
    inferno_lut,
)
from .heatmap import HeatmapPixels, analysis_heatmaps, heatmap_image, heatmap_pixels, split_cells
from .overlay import analysis_overlay, patch_overlay, selection_caption

__all__ = [
    "COLORBAR_WIDTH", "PARTIAL_HATCH", "SCALE_COLOURS", "SPLIT_OUTLINE", "TITLE_HEIGHT", "HeatmapPixels",
    "analysis_heatmaps", "analysis_overlay", "heatmap_image", "heatmap_pixels", "inferno_lut", "patch_overlay",
    "selection_caption", "split_cells",
]
