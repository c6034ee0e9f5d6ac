"""Pictures of an APT analysis: pure functions from arrays and analyses to PIL images (no file I/O).

``heatmap`` (importance maps, bare and on the image), ``overlay`` (selected patches),
``llm_tokens`` (the regions that become one LLM token each), ``compare`` (sheets of several
settings) and ``plots`` (matplotlib figures, imported only where used); ``_draw`` holds the shared
colours, fonts and drawing steps.
"""
from __future__ import annotations

from ._draw import (
    COLORBAR_WIDTH,
    IMAGE_WEIGHT,
    PARTIAL_HATCH,
    SCALE_COLOURS,
    SPLIT_OUTLINE,
    TITLE_HEIGHT,
    inferno_lut,
)
from .heatmap import (
    AnalysisHeatmaps,
    HeatmapPixels,
    analysis_heatmap_pictures,
    analysis_heatmaps,
    heatmap_image,
    heatmap_pixels,
    importance_overlay,
    show_heatmap_on_image,
    split_cells,
)
from .llm_tokens import LLMTokenPixels, analysis_llm_tokens, llm_token_map, llm_token_pixels, region_labels
from .overlay import analysis_overlay, patch_overlay, selection_caption

__all__ = [
    "COLORBAR_WIDTH", "IMAGE_WEIGHT", "PARTIAL_HATCH", "SCALE_COLOURS", "SPLIT_OUTLINE", "TITLE_HEIGHT",
    "AnalysisHeatmaps", "HeatmapPixels", "LLMTokenPixels", "analysis_heatmap_pictures", "analysis_heatmaps",
    "analysis_llm_tokens", "analysis_overlay", "heatmap_image", "heatmap_pixels", "importance_overlay",
    "inferno_lut", "llm_token_map", "llm_token_pixels", "patch_overlay", "region_labels", "selection_caption",
    "show_heatmap_on_image", "split_cells",
]
