"""Qwen2.5-VL on the APT selection: the processor (the model class comes on the shared base).

:class:`APTQwen2_5_VLProcessor` is ``Qwen2_5_VLProcessor`` whose prompts hold each image's
``apt_num_llm_tokens`` placeholders; its image processor is :class:`~apt_viz.hf.APTQwen2VLImageProcessor`
(Qwen2.5-VL's is the stock ``Qwen2VLImageProcessor``: 14 px patches, merge 2).

The model, ``APTQwen2_5_VLModel(APTModelMixin, Qwen2_5_VLModel)``, overrides
:meth:`~apt_viz.hf._modeling.APTModelMixin.apt_encode`: the stock tower reorders whole groups of
four rows into 112 px windows and back, which APT's rows are not; the override groups the rows by
window (:attr:`~apt_viz.core.layout.APTLayout.cell_positions`), takes ``cu_window_seqlens`` from
each window's row count, keeps ``cu_seqlens`` (one segment per image) for the full-attention blocks
and hands the merger the rows in APT order, so the shared merger hook applies.
"""
from __future__ import annotations

from transformers import Qwen2_5_VLProcessor

from ._processing import APTProcessorMixin, register_processor


class APTQwen2_5_VLProcessor(APTProcessorMixin, Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor for APT models: ``<|image_pad|>`` expands to ``apt_num_llm_tokens[i]`` tokens."""


register_processor(APTQwen2_5_VLProcessor, "apt_qwen2_5_vl")
