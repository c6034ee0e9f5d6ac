"""The torch-only core of apt-viz: grids, scorers, selection, token accounting, ``PatchTokenizer``.

It imports torch and the standard library only (no Pillow, numpy-free paths, no app
dependencies), so a training data loader or a model server can use it alone. Names load lazily.
"""
from __future__ import annotations

from ._lazy import lazy_exports

_EXPORTS = {
    # Qwen2-VL geometry (pure Python)
    "PATCH_SIZE": "qwen2vl",
    "MERGE_SIZE": "qwen2vl",
    "TEMPORAL_PATCH_SIZE": "qwen2vl",
    "MIN_PIXELS": "qwen2vl",
    "MAX_PIXELS": "qwen2vl",
    "smart_resize": "qwen2vl",
    "ResizeSpec": "qwen2vl",
    "UnsupportedImageError": "qwen2vl",
    # model families (pure Python)
    "ModelFamily": "families",
    "FamilySpec": "families",
    "FAMILIES": "families",
    "family_spec": "families",
    "family_of_model_type": "families",
    # settings
    "APTConfig": "config",
    "Method": "config",
    "Scorer": "config",
    "Aggregate": "config",
    "Backend": "config",
    "check_selection": "config",
    # scorers
    "compute_patch_entropy_batched": "scoring",
    "compute_patch_laplacian_batched": "scoring",
    "compute_patch_upsample_mse_batched": "scoring",
    "compute_importance_maps": "scoring",
    "SCORERS": "scoring",
    # selection
    "select_patches_by_threshold": "selection",
    "select_patches_by_threshold_v2": "selection",
    "select_patches_by_budget": "selection",
    "select_patches": "selection",
    "dynamic_thresholds": "selection",
    "Selection": "selection",
    "BudgetInfo": "selection",
    # accounting
    "token_stats": "accounting",
    "TokenStats": "accounting",
    # the seam
    "compute_maps": "pipeline",
    "select": "pipeline",
    "run_apt": "pipeline",
    "APTResult": "pipeline",
    # cost model (pure Python)
    "Architecture": "architectures",
    "ARCHITECTURES": "architectures",
    "architecture_from_config": "architectures",
    "vision_flops": "flops",
    "prefill_flops": "flops",
    "image_flops": "flops",
    "FlopsEstimate": "flops",
    # the apt_* inputs and their layout in a Qwen model
    "APTInputs": "apt_inputs",
    "check_apt_inputs": "apt_inputs",
    "check_image_tokens": "apt_inputs",
    "APTLayout": "layout",
    "apt_layout": "layout",
    "unpatchify": "layout",
    "merge_block_order": "layout",
    "window_rows": "windows",
    "window_order": "windows",
    "stock_window_rows": "windows",
    "mask_cells": "windows",
    # patches and the tokenizer
    "construct_patch_groups": "patches",
    "PatchTokenizer": "tokenizer",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
