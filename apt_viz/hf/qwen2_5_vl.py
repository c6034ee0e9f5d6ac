"""Qwen2.5-VL on the APT selection: windowed attention over cells of mixed sizes, stock weights.

:class:`APTQwen2_5_VLForConditionalGeneration` is ``Qwen2_5_VLForConditionalGeneration`` with the
same parameters; :class:`APTQwen2_5_VLProcessor` is ``Qwen2_5_VLProcessor`` whose prompts hold each
image's ``apt_num_llm_tokens`` placeholders (its image processor is
:class:`~apt_viz.hf.APTQwen2VLImageProcessor`: 14 px patches, merge 2, as the stock one).

Everything Qwen2-VL does on the APT rows holds here (rotary position at the cell centre, the merger
reading four rows per LLM token, M-RoPE of the merged-grid cell, checks on every entry point: the
shared base, :mod:`apt_viz.hf._modeling`). What Qwen2.5-VL adds is attention windows: most vision
blocks attend within 112 px windows anchored at the image origin, the blocks of
``fullatt_block_indexes`` over the whole image. The stock tower moves whole groups of m*m rows into
window order and back, which APT's rows are not (a 28 or 56 px cell is one row). Here, in
:meth:`APTQwen2_5_VLModel.apt_encode`:

1. each row falls in the window of its top-left base cell (a 28 or 56 px cell, aligned to its own
   size, lies inside one window); rows are put window by window, in the stock order inside each
   window (:func:`~apt_viz.core.windows.window_order`);
2. ``cu_window_seqlens`` comes from each window's row count
   (:func:`~apt_viz.core.windows.window_rows`), the full-attention blocks take ``cu_seqlens`` (one
   segment per image: the images stay contiguous in window order);
3. the merger reads each LLM token's rows (the APT groups of :attr:`~apt_viz.core.layout.APTLayout.merge_index`)
   where they sit in window order, so its output is already in LLM order; the last hidden state is
   put back in the order of ``apt_pixel_values``.

With every base patch kept, the rows, the windows and every product are the stock ones: the logits
equal the stock model's bit for bit. docs/apt_inference.md states the choices.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLModel, Qwen2_5_VLProcessor
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils.generic import get_max_seqlen
from transformers.utils.output_capturing import capture_outputs

from ..core.layout import APTLayout
from ..core.windows import window_order, window_rows
from ._modeling import APTForConditionalGenerationMixin, APTModelMixin, gathered_rows, register_checkpoint_keys
from ._processing import APTProcessorMixin, register_processor


class APTQwen2_5_VLProcessor(APTProcessorMixin, Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor for APT models: ``<|image_pad|>`` expands to ``apt_num_llm_tokens[i]`` tokens."""


@capture_outputs
def _windowed_tower(
    visual: Any, rows: torch.Tensor, order: torch.Tensor, position_ids: torch.Tensor, cu_seqlens: torch.Tensor,
    cu_window_seqlens: torch.Tensor, **kwargs: Any,
) -> BaseModelOutputWithPooling:
    """``Qwen2_5_VisionTransformerPretrainedModel.forward`` on rows that need not come in groups of m*m.

    Differs from stock in two places: the window permutation ``order`` moves single rows (stock:
    whole m*m groups, ``permute_input_for_window_attn``; the rotary positions are permuted before
    the embedding instead of the cos / sin after it, the same values), and the merger's output is
    not permuted back (the caller's hook hands the merger its rows in LLM order). Like stock, the
    hidden states stay in window order. The modules, the rotary embedding and the blocks are transformers' own,
    fed the precomputed ``cu_seqlens`` / ``cu_window_seqlens`` and position embeddings;
    ``capture_outputs`` (the stock forward's decorator) records ``output_hidden_states``.
    """
    max_seqlen = get_max_seqlen(cu_seqlens, visual.config, kwargs=kwargs)
    max_window_seqlen = get_max_seqlen(cu_window_seqlens, visual.config, kwargs=kwargs, kwarg_name="max_window_seqlen")
    hidden_states = visual.patch_embed(rows)[order]
    position_embeddings = visual.rotary_pos_emb(hidden_states, position_ids[order])
    for number, block in enumerate(visual.blocks):
        full = number in visual.fullatt_block_indexes
        hidden_states = block(
            hidden_states,
            cu_seqlens=cu_seqlens if full else cu_window_seqlens,
            max_seqlen=max_seqlen if full else max_window_seqlen,
            position_embeddings=position_embeddings,
            **kwargs,
        )
    return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=visual.merger(hidden_states))


class APTQwen2_5_VLModel(APTModelMixin, Qwen2_5_VLModel):
    """``Qwen2_5_VLModel`` that also accepts the ``apt_*`` inputs (same parameters as the stock model)."""

    apt_processor_name = APTQwen2_5_VLProcessor.__name__

    def apt_windows(self, layout: APTLayout, image_grid_thw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The window order of the APT rows and the windows' boundaries in it.

        Args:
            layout: The checked layout.
            image_grid_thw: (images, 3) stock grids.

        Returns:
            ``order`` (n,) long: ``rows[order]`` is the batch window by window (images in turn, the
            stock order inside each window); ``cu_window_seqlens`` (windows + 1,) int32 boundaries
            of the non-empty windows in that order.
        """
        vision = self.config.vision_config
        m = vision.spatial_merge_size
        cells = vision.window_size // m // vision.patch_size * m  # base cells per window side, as stock counts them
        bounds = layout.cu_seqlens.tolist()
        orders, counts = [], []
        for image, (_, h, w) in enumerate(image_grid_thw.tolist()):
            start, end = bounds[image], bounds[image + 1]
            positions, sides = layout.cell_positions[start:end], layout.cell_sides[start:end]
            orders.append(window_order(positions, (h, w), cells, m) + start)
            counts += window_rows(positions, sides, (h, w), cells)
        seqlens = torch.tensor(counts, device=layout.cu_seqlens.device)
        return torch.cat(orders), F.pad(seqlens.cumsum(0, dtype=torch.int32), (1, 0))

    def apt_encode(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor, layout: APTLayout,
                   **kwargs: Any) -> Any:
        """The vision tower on the APT rows grouped by window; the merger reads ``layout.merge_index``.

        Args:
            pixel_values: (n, C*T*p*p) ``apt_pixel_values``.
            image_grid_thw: (images, 3) stock grids.
            layout: The checked layout.
            **kwargs: Passed on to the blocks (``output_hidden_states``, attention kwargs).

        Returns:
            ``last_hidden_state`` (n, embed) in the order of ``pixel_values`` (so are ``hidden_states``
            when asked for), ``pooler_output`` (L, hidden) per LLM token in LLM order.
        """
        order, cu_window_seqlens = self.apt_windows(layout, image_grid_thw)
        inverse = torch.argsort(order)  # row i of pixel_values sits at inverse[i] in window order
        with gathered_rows(self.apt_mergers(), inverse[layout.merge_index]):
            outputs = _windowed_tower(
                self.visual, pixel_values.type(self.visual.dtype), order,
                cu_window_seqlens=cu_window_seqlens, **self.apt_vision_inputs(layout, image_grid_thw), **kwargs,
            )
        outputs.last_hidden_state = outputs.last_hidden_state[inverse]
        if outputs.hidden_states is not None:
            outputs.hidden_states = tuple(hidden[inverse] for hidden in outputs.hidden_states)
        return outputs


class APTQwen2_5_VLForConditionalGeneration(APTForConditionalGenerationMixin, Qwen2_5_VLForConditionalGeneration):
    """``Qwen2_5_VLForConditionalGeneration`` that runs on the APT selection when given the ``apt_*`` inputs.

    ``from_pretrained("Qwen/Qwen2.5-VL-3B-Instruct")`` and ``load_state_dict(stock.state_dict())``
    work unchanged. Without ``apt_*`` inputs it is the stock model.
    """

    apt_model_class = APTQwen2_5_VLModel


register_processor(APTQwen2_5_VLProcessor, "apt_qwen2_5_vl")
register_checkpoint_keys(APTQwen2_5_VLModel, Qwen2_5_VLModel)
register_checkpoint_keys(APTQwen2_5_VLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration)
