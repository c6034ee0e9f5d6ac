"""Hugging Face ``transformers`` integration for Qwen2-VL (importing it imports transformers).

Importing registers the APT image processors with ``AutoImageProcessor``.
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

__all__ = [
    "APT_OUTPUT_KEYS",
    "APTQwen2VLImageProcessor",
    "APTQwen2VLImageProcessorKwargs",
    "APTQwen2VLImageProcessorPil",
    "apt_config",
    "apt_view",
    "unpatchify",
]
