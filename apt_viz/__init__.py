"""apt-viz: see and measure Adaptive Patch Tokenization (APT) for Qwen2-VL.

Public names load lazily, so ``import apt_viz`` (and the CLI's ``--help``) stays instant; torch is
imported on first use of a tensor function, transformers only by :mod:`apt_viz.hf`.

Layers, each importing only the ones below it (docs/architecture.md):
``core`` (torch only) < ``imaging`` < ``analysis``, ``sweep`` < ``render``, ``report`` < ``batch`` <
``stats``, ``hf`` < ``cli``.
"""
from __future__ import annotations

from .core._lazy import lazy_exports

__version__ = "0.3.0"

_EXPORTS = {
    # Qwen VL geometry, model families and settings
    "smart_resize": "core.qwen2vl",
    "ResizeSpec": "core.qwen2vl",
    "UnsupportedImageError": "core.qwen2vl",
    "ModelFamily": "core.families",
    "FamilySpec": "core.families",
    "family_spec": "core.families",
    "APTConfig": "core.config",
    "Method": "core.config",
    "Scorer": "core.config",
    "Aggregate": "core.config",
    "Backend": "core.config",
    # scorers, selection, accounting, the seam
    "compute_patch_entropy_batched": "core.scoring",
    "compute_patch_laplacian_batched": "core.scoring",
    "compute_patch_upsample_mse_batched": "core.scoring",
    "compute_importance_maps": "core.scoring",
    "SCORERS": "core.scoring",
    "select_patches_by_threshold": "core.selection",
    "select_patches_by_threshold_v2": "core.selection",
    "select_patches_by_budget": "core.selection",
    "select_patches": "core.selection",
    "dynamic_thresholds": "core.selection",
    "Selection": "core.selection",
    "BudgetInfo": "core.selection",
    "token_stats": "core.accounting",
    "TokenStats": "core.accounting",
    "compute_maps": "core.pipeline",
    "select": "core.pipeline",
    "run_apt": "core.pipeline",
    "APTResult": "core.pipeline",
    "construct_patch_groups": "core.patches",
    "PatchTokenizer": "core.tokenizer",
    # images and files
    "load_image": "imaging",
    "convert_to_rgb": "imaging",
    "resize_for_qwen2vl": "imaging",
    "pil_to_tensor": "imaging",
    "ImageLoadError": "imaging",
    "read_checkpoint": "checkpoint",
    "CheckpointSettings": "checkpoint",
    "CheckpointError": "checkpoint",
    "analyze_image": "analysis",
    "ImageAnalysis": "analysis",
    "stats_record": "report.records",
    # dataset statistics (apt-viz stats): the saved selections of a --save-masks table
    "read_masks": "stats.masks",
    "decode_masks": "stats.masks",
}

__all__ = ["__version__", *_EXPORTS]  # noqa: PLE0604 - the names of _EXPORTS
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
