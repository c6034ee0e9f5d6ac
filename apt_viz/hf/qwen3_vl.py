"""Qwen3-VL on the APT selection, and the learned-position taps it shares with Qwen3.5.

:class:`APTQwen3VLProcessor` is ``Qwen3VLProcessor`` (the processor of Qwen3-VL and of Qwen3.5)
whose prompts hold each image's ``apt_num_llm_tokens`` placeholders. Its image processor is
:class:`~apt_viz.hf.APTQwen2VLImageProcessor` with the checkpoint's settings: 16 px patches (cells
of 16, 32 and 64 px), merge 2, mean and std 0.5.

:class:`APTQwen3VLForConditionalGeneration` is ``Qwen3VLForConditionalGeneration`` with the same
parameters. On the shared base (:mod:`apt_viz.hf._modeling`) it differs from Qwen2-VL in two places:

1. **Learned positions.** The stock tower adds to every patch a 48 x 48 learned position table
   sampled bilinearly (``align_corners=True``) at the patch's place in its image's grid, through
   precomputed ``interp_indices`` / ``interp_weights``. :class:`APTLearnedPositionMixin` hands the
   tower those taps for the APT rows: a base patch gets exactly its stock taps; a 32 or 64 px cell
   is sampled at its centre (:attr:`CellPosition.CENTRE`, the point its rotary position uses) or,
   on request, gets the average of the samples of the base patches it covers
   (:attr:`CellPosition.AVERAGE`: more taps, same API). docs/apt_inference.md gives the choice and
   how far apart the two are.
2. **Deepstack.** The features after vision blocks 8, 16 and 24 go through their own mergers and are
   added to the image tokens after LLM layers 0, 1 and 2. Those mergers are among the base's
   :meth:`~apt_viz.hf._modeling.APTModelMixin.apt_mergers`, so they read the same rows (the APT merge
   groups) as the final merger; the base splits their features by ``apt_num_llm_tokens`` and the
   stock forward adds them at the image-token positions. Nothing here is specific to them.
"""
from __future__ import annotations

import enum
from typing import Any, ClassVar

import torch
from transformers import Qwen3VLForConditionalGeneration, Qwen3VLModel, Qwen3VLProcessor
from transformers.vision_utils import _interpolation_axis_taps_weights

from ..core._choices import as_choice
from ..core.layout import APTLayout
from ._modeling import APTForConditionalGenerationMixin, APTModelMixin, register_checkpoint_keys
from ._processing import APTProcessorMixin, register_processor


class APTQwen3VLProcessor(APTProcessorMixin, Qwen3VLProcessor):
    """Qwen3-VL / Qwen3.5 processor for APT models: ``<|image_pad|>`` expands to ``apt_num_llm_tokens[i]`` tokens."""


class CellPosition(str, enum.Enum):
    """The learned position of a cell larger than a base patch (``apt_cell_position``)."""

    CENTRE = "centre"  # the table sampled at the cell's centre, as its rotary position (4 taps)
    AVERAGE = "average"  # the mean of the samples of the base patches it covers (4 * side**2 taps)

    def __str__(self) -> str:
        return self.value


def learned_position_taps(
    layout: APTLayout,
    image_grid_thw: torch.Tensor,
    num_grid_per_side: int,
    cell_position: CellPosition = CellPosition.CENTRE,
    mode: str = "bilinear",
    align_corners: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``interp_indices`` / ``interp_weights`` of the learned position table for every APT row.

    Each axis goes through transformers' own per-axis sampler (``vision_utils``, the one behind
    ``get_vision_interpolation_indices_and_weights``) at the row's sample points; the two axes are
    combined as an outer product, as the stock taps are. A base patch samples at its integer
    (row, col), so its taps are the stock ones bit for bit.

    Args:
        layout: The checked layout (``vision_positions``, ``cell_positions``, ``cell_sides``, ``image_index``).
        image_grid_thw: (images, 3) stock grids: each image's table is resampled to its (h, w).
        num_grid_per_side: Side of the square table (48 in the published checkpoints).
        cell_position: Where a larger cell samples the table.
        mode: The tower's ``interpolation_mode``.
        align_corners: The tower's ``interpolation_align_corners``.

    Returns:
        ``(indices, weights)``, each (n, taps): the taps of row i into the flattened table and their
        weights (the tower sums ``table[indices] * weights`` over the taps). CENTRE: taps per axis of
        ``mode`` squared (4 for bilinear); AVERAGE: that times the largest cell side squared, with
        zero weights past a row's own cell.
    """
    grids = image_grid_thw.to(layout.image_index.device)[layout.image_index]  # (n, 3): each row's image grid
    if cell_position is CellPosition.CENTRE:
        points = layout.vision_positions[:, None, :]  # (n, 1, 2): the centre, weight 1
        point_weights = torch.ones(points.shape[:2], device=points.device)
    else:
        side = int(layout.cell_sides.max())
        offsets = torch.arange(side, device=grids.device)
        # (n, side, 2): the base rows / columns a cell covers; those past its own side weigh 0
        points = (layout.cell_positions[:, None, :] + offsets[None, :, None]).to(torch.float32)
        inside = offsets[None, :] < layout.cell_sides[:, None]
        point_weights = inside / layout.cell_sides[:, None].to(torch.float32)

    def axis(coordinate: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows, points_per_row = coordinate.shape
        taps, weights = _interpolation_axis_taps_weights(
            coordinate.flatten(), size.repeat_interleave(points_per_row), num_grid_per_side, mode, align_corners
        )
        weights = weights * point_weights.flatten()[:, None]
        return taps.view(rows, -1), weights.view(rows, -1)

    row_taps, row_weights = axis(points[..., 0], grids[:, 1])
    col_taps, col_weights = axis(points[..., 1], grids[:, 2])
    indices = (row_taps[:, :, None] * num_grid_per_side + col_taps[:, None, :]).flatten(1)
    weights = (row_weights[:, :, None] * col_weights[:, None, :]).flatten(1)
    return indices, weights


class APTLearnedPositionMixin(APTModelMixin):
    """The APT base for towers with a learned position table (Qwen3-VL, Qwen3.5): adds its taps per APT row.

    ``apt_cell_position`` (class or instance attribute, a :class:`CellPosition` or its name) picks
    how a larger cell samples the table; the default is the centre.
    """

    apt_cell_position: ClassVar[CellPosition | str] = CellPosition.CENTRE

    def apt_vision_inputs(self, layout: APTLayout, image_grid_thw: torch.Tensor) -> dict[str, Any]:
        """The base's rotary ``position_ids`` and ``cu_seqlens``, plus ``interp_indices`` / ``interp_weights``.

        Args:
            layout: The checked layout of the batch.
            image_grid_thw: (images, 3) stock grids.

        Returns:
            The tower's precomputed inputs (:func:`learned_position_taps` for the two new keys).
        """
        indices, weights = learned_position_taps(
            layout,
            image_grid_thw,
            self.visual.num_grid_per_side,
            as_choice(CellPosition, self.apt_cell_position, "apt_cell_position"),
            self.visual.interpolation_mode,
            self.visual.interpolation_align_corners,
        )
        inputs = super().apt_vision_inputs(layout, image_grid_thw)
        return {**inputs, "interp_indices": indices, "interp_weights": weights}


class APTQwen3VLModel(APTLearnedPositionMixin, Qwen3VLModel):
    """``Qwen3VLModel`` that also accepts the ``apt_*`` inputs (same parameters as the stock model)."""

    apt_processor_name = APTQwen3VLProcessor.__name__


class APTQwen3VLForConditionalGeneration(APTForConditionalGenerationMixin, Qwen3VLForConditionalGeneration):
    """``Qwen3VLForConditionalGeneration`` that runs on the APT selection when given the ``apt_*`` inputs.

    ``from_pretrained("Qwen/Qwen3-VL-2B-Instruct")`` and ``load_state_dict(stock.state_dict())``
    work unchanged. Without ``apt_*`` inputs it is the stock model.
    """

    apt_model_class = APTQwen3VLModel


register_processor(APTQwen3VLProcessor, "apt_qwen3_vl")
register_checkpoint_keys(APTQwen3VLModel, Qwen3VLModel)
register_checkpoint_keys(APTQwen3VLForConditionalGeneration, Qwen3VLForConditionalGeneration)
