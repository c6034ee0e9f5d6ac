"""What APT costs in pixels: the image as the vision tower sees it, against baselines at equal cost.

- :mod:`.reconstruction`: the image rebuilt from the APT rows the model embeds.
- :mod:`.uniform`: the stock processor at a matched ``max_pixels`` (:func:`matched_max_pixels`).
- :mod:`.metrics`: PSNR, SSIM, ``psnr_detail``.
- :mod:`.measure`: :func:`measure_fidelity`, the ``fidelity`` block of ``stats.json``.
- :mod:`.rate_distortion`: ``sweep --fidelity``'s curves (:func:`image_rate_distortion`) and where
  APT stops beating uniform (:func:`crossover`).

docs/fidelity.md defines every number. Names load lazily (the package imports torch and Pillow).
"""
from __future__ import annotations

from ..core._lazy import lazy_exports

_EXPORTS = {
    "reconstruct": "reconstruction",
    "upsample": "reconstruction",
    "matched_max_pixels": "uniform",
    "uniform_hw": "uniform",
    "uniform_view": "uniform",
    "UniformView": "uniform",
    "psnr": "metrics",
    "ssim": "metrics",
    "detail_mask": "metrics",
    "pixel_error": "metrics",
    "psnr_of_error": "metrics",
    "measure_fidelity": "measure",
    "fidelity_views": "measure",
    "score_views": "measure",
    "random_baseline_config": "measure",
    "Fidelity": "measure",
    "FidelityScore": "measure",
    "FidelityViews": "measure",
    "FIDELITY_KEYS": "measure",
    "image_rate_distortion": "rate_distortion",
    "mean_curves": "rate_distortion",
    "crossover": "rate_distortion",
    "ImageRD": "rate_distortion",
    "RDPoint": "rate_distortion",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
