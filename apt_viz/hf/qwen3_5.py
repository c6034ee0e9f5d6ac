"""Qwen3.5 on the APT selection: the Qwen3-VL vision tower without deepstack, a hybrid LLM.

:class:`APTQwen3_5ForConditionalGeneration` is ``Qwen3_5ForConditionalGeneration`` with the same
parameters; its processor is :class:`~apt_viz.hf.APTQwen3VLProcessor` (transformers maps Qwen3.5 to
``Qwen3VLProcessor``). The vision side is Qwen3-VL's: the learned position table sampled per APT
row (:class:`~apt_viz.hf.qwen3_vl.APTLearnedPositionMixin`), the final merger reading the APT merge
groups; there are no deepstack mergers. The LLM (Gated DeltaNet linear attention, with full
attention every 4th layer) and its hybrid cache are the stock ones; ``get_rope_index`` is
Qwen3-VL's, so the base's rope hook serves it.
"""
from __future__ import annotations

from transformers import Qwen3_5ForConditionalGeneration, Qwen3_5Model

from ._modeling import APTForConditionalGenerationMixin, register_checkpoint_keys
from .qwen3_vl import APTLearnedPositionMixin, APTQwen3VLProcessor


class APTQwen3_5Model(APTLearnedPositionMixin, Qwen3_5Model):
    """``Qwen3_5Model`` that also accepts the ``apt_*`` inputs (same parameters as the stock model)."""

    apt_processor_name = APTQwen3VLProcessor.__name__


class APTQwen3_5ForConditionalGeneration(APTForConditionalGenerationMixin, Qwen3_5ForConditionalGeneration):
    """``Qwen3_5ForConditionalGeneration`` that runs on the APT selection when given the ``apt_*`` inputs.

    ``load_state_dict(stock.state_dict())`` and ``from_pretrained`` of a stock checkpoint work
    unchanged. Without ``apt_*`` inputs it is the stock model.
    """

    apt_model_class = APTQwen3_5Model


register_checkpoint_keys(APTQwen3_5Model, Qwen3_5Model)
register_checkpoint_keys(APTQwen3_5ForConditionalGeneration, Qwen3_5ForConditionalGeneration)
