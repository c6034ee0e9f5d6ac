"""Hugging Face ``transformers`` integration for the Qwen VL families (importing it imports transformers).

One module per family over one shared APT base: :mod:`.qwen2_vl`, :mod:`.qwen2_5_vl` and :mod:`.qwen3_vl`
(processor and models) and :mod:`.qwen3_5` (models; Qwen3.5 uses Qwen3-VL's processor). The image processors
(:mod:`.image_processing`) serve every family. The bases (:mod:`._processing`, :mod:`._modeling`)
hold what the families share: the placeholder expansion, the checks of the ``apt_*`` inputs, the
merger and position hooks and the generation plumbing.

Importing registers the APT image processors with ``AutoImageProcessor`` and the APT processors with
``AutoProcessor``, each under its own key (the stock mappings are untouched).
"""
from __future__ import annotations

from ..core.apt_inputs import APTInputs
from ..core.layout import APTLayout, apt_layout, unpatchify
from ._processing import as_apt_image_processor
from .image_processing import (
    APTQwen2VLImageProcessor,
    APTQwen2VLImageProcessorKwargs,
    APTQwen2VLImageProcessorPil,
    apt_config,
    apt_view,
)
from .qwen2_5_vl import APTQwen2_5_VLForConditionalGeneration, APTQwen2_5_VLModel, APTQwen2_5_VLProcessor
from .qwen2_vl import APTQwen2VLForConditionalGeneration, APTQwen2VLModel, APTQwen2VLProcessor
from .qwen3_5 import APTQwen3_5ForConditionalGeneration, APTQwen3_5Model
from .qwen3_vl import APTQwen3VLForConditionalGeneration, APTQwen3VLModel, APTQwen3VLProcessor, CellPosition

__all__ = [
    "APTInputs",
    "APTLayout",
    "APTQwen2VLForConditionalGeneration",
    "APTQwen2VLImageProcessor",
    "APTQwen2VLImageProcessorKwargs",
    "APTQwen2VLImageProcessorPil",
    "APTQwen2VLModel",
    "APTQwen2VLProcessor",
    "APTQwen2_5_VLForConditionalGeneration",
    "APTQwen2_5_VLModel",
    "APTQwen2_5_VLProcessor",
    "APTQwen3VLForConditionalGeneration",
    "APTQwen3VLModel",
    "APTQwen3VLProcessor",
    "APTQwen3_5ForConditionalGeneration",
    "APTQwen3_5Model",
    "CellPosition",
    "apt_config",
    "apt_layout",
    "apt_view",
    "as_apt_image_processor",
    "unpatchify",
]
