"""Hugging Face ``transformers`` integration for Qwen2-VL (importing it imports transformers).

Importing registers the APT image processors with ``AutoImageProcessor`` and the APT processor
with ``AutoProcessor``, each under its own key (the stock Qwen2-VL mappings are untouched).
"""
from __future__ import annotations

from .image_processing import (
    APT_OUTPUT_KEYS,
    APTQwen2VLImageProcessor,
    APTQwen2VLImageProcessorKwargs,
    APTQwen2VLImageProcessorPil,
    apt_config,
    apt_view,
    unpatchify,
)
from .modeling import (
    APT_MODEL_INPUTS,
    APTLayout,
    APTQwen2VLForConditionalGeneration,
    APTQwen2VLModel,
    apt_layout,
)
from .processing import APTQwen2VLProcessor, as_apt_image_processor

__all__ = [
    "APT_MODEL_INPUTS",
    "APT_OUTPUT_KEYS",
    "APTLayout",
    "APTQwen2VLForConditionalGeneration",
    "APTQwen2VLImageProcessor",
    "APTQwen2VLImageProcessorKwargs",
    "APTQwen2VLImageProcessorPil",
    "APTQwen2VLModel",
    "APTQwen2VLProcessor",
    "apt_config",
    "apt_layout",
    "apt_view",
    "as_apt_image_processor",
    "unpatchify",
]
