"""Qwen3-VL and Qwen3.5 on the APT selection: the processor (the model classes come on the shared base).

:class:`APTQwen3VLProcessor` is ``Qwen3VLProcessor`` (the processor of Qwen3-VL and of Qwen3.5)
whose prompts hold each image's ``apt_num_llm_tokens`` placeholders. Its image processor is
:class:`~apt_viz.hf.APTQwen2VLImageProcessor` with the checkpoint's settings: 16 px patches (cells
of 16, 32 and 64 px), merge 2, mean and std 0.5.

The models, ``APTQwen3VLModel(APTModelMixin, Qwen3VLModel)`` and ``APTQwen3_5Model(APTModelMixin,
Qwen3_5Model)``, override :meth:`~apt_viz.hf._modeling.APTModelMixin.apt_vision_inputs` to add the
learned position table sampled per APT row (``interp_indices`` / ``interp_weights``, from
:attr:`~apt_viz.core.layout.APTLayout.vision_positions` and the image of every row). Qwen3-VL's
deepstack mergers are among the base's :meth:`~apt_viz.hf._modeling.APTModelMixin.apt_mergers`, so
they read the same rows as the final merger, and the base splits their features by APT LLM tokens.
"""
from __future__ import annotations

from transformers import Qwen3VLProcessor

from ._processing import APTProcessorMixin, register_processor


class APTQwen3VLProcessor(APTProcessorMixin, Qwen3VLProcessor):
    """Qwen3-VL / Qwen3.5 processor for APT models: ``<|image_pad|>`` expands to ``apt_num_llm_tokens[i]`` tokens."""


register_processor(APTQwen3VLProcessor, "apt_qwen3_vl")
