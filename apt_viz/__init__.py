"""apt-viz: see and measure Adaptive Patch Tokenization (APT) for Qwen2-VL.

Public names load lazily, so ``import apt_viz`` (and the CLI's ``--help``) stays instant; torch is
imported on first use of a tensor function, transformers only by :mod:`apt_viz.hf`.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "smart_resize": "imaging",
    "load_image": "imaging",
    "convert_to_rgb": "imaging",
    "resize_for_qwen2vl": "imaging",
    "pil_to_tensor": "imaging",
    "ResizeSpec": "imaging",
    "ImageLoadError": "imaging",
    "compute_patch_entropy_batched": "scoring",
    "compute_patch_laplacian_batched": "scoring",
    "compute_patch_upsample_mse_batched": "scoring",
    "compute_importance_maps": "scoring",
    "SCORERS": "config",
    "select_patches_by_threshold": "selection",
    "select_patches_by_threshold_v2": "selection",
    "select_patches_by_budget": "selection",
    "select_patches": "selection",
    "dynamic_thresholds": "selection",
    "Selection": "selection",
    "METHODS": "config",
    "PatchTokenizer": "tokenizer",
    "token_stats": "accounting",
    "TokenStats": "accounting",
    "APTConfig": "config",
    "analyze_image": "pipeline",
    "ImageAnalysis": "pipeline",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'apt_viz' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
