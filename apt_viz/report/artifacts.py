"""Names of the files in one image's output folder (docs/contract.md, section 7).

Relative paths with ``/`` (as recorded in ``stats.json``'s ``artifacts`` and linked from
``index.html``); :mod:`apt_viz.batch.layout` writes them.
"""
from __future__ import annotations

STATS_FILE = "stats.json"
HEATMAP_DIR = "01_heatmaps"
OVERLAY_PATH = "02_patches_grid/patches_visualization.jpg"
LLM_TOKENS_PATH = "02_patches_grid/llm_tokens_visualization.jpg"
ORIGINAL_PATH = "03_original_resized/original_image.jpg"
RESIZED_PATH = "03_original_resized/resized_image.jpg"
FIDELITY_DIR = "04_fidelity"
RECONSTRUCTION_PATH = f"{FIDELITY_DIR}/reconstruction.png"  # APT's reconstruction, lossless
ERROR_MAP_PATH = f"{FIDELITY_DIR}/error_map.png"  # its per-pixel error, drawn like the heatmaps
UNIFORM_VISION_PATH = f"{FIDELITY_DIR}/uniform_equal_vision.png"  # the uniform baseline at equal vision tokens
SUMMARIES = ("summary.json", "summary.csv")
COMPARE_SHEET = "compare.jpg"  # apt-viz compare: OUT/<name>/compare.jpg, beside a run's folder content
# Not index.html: compare and run share the default output folder, and a compare must not replace
# the index of a run.
COMPARE_INDEX = "compare_index.html"


def heatmap_path(size: int) -> str:
    """The bare importance map of one scale."""
    return f"{HEATMAP_DIR}/importance_map_scale_{size}.png"


def importance_overlay_path(size: int) -> str:
    """The importance map of one scale blended over the resized image."""
    return f"{HEATMAP_DIR}/importance_overlay_scale_{size}.jpg"
