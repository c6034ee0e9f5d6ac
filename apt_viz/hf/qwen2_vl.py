"""Qwen2-VL on the APT selection: fewer vision patches, fewer LLM tokens, stock weights.

:class:`APTQwen2VLForConditionalGeneration` is ``Qwen2VLForConditionalGeneration`` with the same
parameters; :class:`APTQwen2VLProcessor` is ``Qwen2VLProcessor`` with the APT placeholder count.
Given the ``apt_*`` inputs of :class:`~apt_viz.hf.APTQwen2VLImageProcessor`:

1. every selected cell is one row of the stock patch embedding (a 28 or 56 px cell arrives as the
   base-size patch of the image downsampled by 2 or 4, as in APT);
2. its 2D rotary position is the centre of its cell in base-patch units: a base patch keeps its
   stock integer (row, col), a 28 px cell at (r, c) gets (r + 0.5, c + 0.5), a 56 px cell
   (r + 1.5, c + 1.5); the vision tower computes its rotary frequencies from these positions;
3. attention stays within each image (``cu_seqlens`` from ``apt_num_tokens``), so the vision blocks
   see ``sum(apt_num_tokens)`` rows;
4. the stock ``PatchMerger`` gets four rows per LLM token: a 2x2 group of base rows gives its four
   rows, a 28 or 56 px row is used four times, so it becomes one LLM token (``apt_num_llm_tokens``);
5. LLM tokens of an image follow the raster order of the merged-grid cell each starts at, and take
   that cell's M-RoPE position (t, h, w); text after the image continues as in stock Qwen2-VL.

All of it is the shared base (:mod:`apt_viz.hf._modeling`, :mod:`apt_viz.hf._processing`): Qwen2-VL
needs none of its extension points. Without ``apt_*`` inputs the model is the stock model, bit for
bit. docs/apt_inference.md states the choices.
"""
from __future__ import annotations

from transformers import Qwen2VLForConditionalGeneration, Qwen2VLModel, Qwen2VLProcessor

from ._modeling import APTForConditionalGenerationMixin, APTModelMixin, register_checkpoint_keys
from ._processing import APTProcessorMixin, register_processor


class APTQwen2VLProcessor(APTProcessorMixin, Qwen2VLProcessor):
    """Qwen2-VL processor for APT models: ``<|image_pad|>`` expands to ``apt_num_llm_tokens[i]`` tokens."""


class APTQwen2VLModel(APTModelMixin, Qwen2VLModel):
    """``Qwen2VLModel`` that also accepts the ``apt_*`` inputs (same parameters as the stock model)."""

    apt_processor_name = APTQwen2VLProcessor.__name__


class APTQwen2VLForConditionalGeneration(APTForConditionalGenerationMixin, Qwen2VLForConditionalGeneration):
    """``Qwen2VLForConditionalGeneration`` that runs on the APT selection when given the ``apt_*`` inputs.

    ``from_pretrained("Qwen/Qwen2-VL-2B-Instruct")`` and ``load_state_dict(stock.state_dict())``
    work unchanged. Without ``apt_*`` inputs it is the stock model.
    """

    apt_model_class = APTQwen2VLModel


register_processor(APTQwen2VLProcessor, "apt_qwen2_vl")
register_checkpoint_keys(APTQwen2VLModel, Qwen2VLModel)
register_checkpoint_keys(APTQwen2VLForConditionalGeneration, Qwen2VLForConditionalGeneration)
