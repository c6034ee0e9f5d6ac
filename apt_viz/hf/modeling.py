"""Qwen2-VL that runs on the APT selection: fewer vision patches, fewer LLM tokens, stock weights.

:class:`APTQwen2VLForConditionalGeneration` is ``Qwen2VLForConditionalGeneration`` with the same
parameters (``from_pretrained`` of a stock checkpoint and ``load_state_dict`` of a stock state dict
work unchanged). Given the ``apt_*`` keys of :class:`~apt_viz.hf.APTQwen2VLImageProcessor`:

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

Without ``apt_*`` keys the model is the stock model, bit for bit. docs/apt_inference.md states the
choices. The stock vision tower, rotary embedding, attention dispatch, ``get_rope_index`` and
generation loop are transformers' own: they are fed precomputed ``position_ids`` / ``cu_seqlens``
through the hooks they offer, and the few methods overridden here say why.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLModel
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils.generic import can_return_tuple

APT_MODEL_INPUTS = (
    "apt_pixel_values",
    "apt_patch_sizes",
    "apt_patch_positions",
    "apt_num_tokens",
    "apt_num_llm_tokens",
)


@dataclass(frozen=True)
class APTLayout:
    """Where the APT rows of a batch of images go in the vision tower and in the LLM.

    Shapes: n = sum(apt_num_tokens) rows, L = sum(apt_num_llm_tokens) LLM tokens, m = merge size.
    """

    vision_positions: torch.Tensor  # (n, 2) float32 (row, col) of each cell's centre, base-patch units
    cu_seqlens: torch.Tensor  # (images + 1,) int32 row boundaries of the images
    merge_index: torch.Tensor  # (L * m * m,) the rows the merger reads, m * m per LLM token, in LLM order
    llm_cells: tuple[torch.Tensor, ...]  # per image (L_i,): merged-grid cell (raster index) of each LLM token
    llm_tokens: tuple[int, ...]  # L_i per image


def apt_layout(
    patch_sizes: torch.Tensor,
    patch_positions: torch.Tensor,
    num_tokens: torch.Tensor,
    image_grid_thw: torch.Tensor,
    patch_size: int,
    merge_size: int,
    num_llm_tokens: torch.Tensor | None = None,
) -> APTLayout:
    """The :class:`APTLayout` of the processor's ``apt_*`` keys.

    Args:
        patch_sizes: (n,) cell size of every row in pixels (``apt_patch_sizes``).
        patch_positions: (n, 2) (row, col) of every cell's top-left base cell (``apt_patch_positions``).
        num_tokens: (images,) rows per image (``apt_num_tokens``).
        image_grid_thw: (images, 3) stock grids (t, h, w) in base patches.
        patch_size: Base patch size p (14).
        merge_size: Spatial merge size m (2).
        num_llm_tokens: (images,) ``apt_num_llm_tokens``, checked against the layout when given.

    Returns:
        The layout. Rows may come in any order: a base row's merge group is found by position.

    Raises:
        ValueError: sizes that are neither p nor a multiple of p * m, base cells that do not fill
            whole m x m groups, or counts that do not match (one line each).
    """
    device = patch_positions.device
    num_tokens = num_tokens.to(device=device, dtype=torch.long)
    grids = image_grid_thw.to(device=device, dtype=torch.long)
    cells = _cell_sides(patch_sizes.to(device), num_tokens, grids, patch_size, merge_size)
    image = torch.repeat_interleave(torch.arange(len(grids), device=device), num_tokens)  # (n,) image of each row
    rows, cols = patch_positions.to(device).long().unbind(-1)
    if bool(((rows < 0) | (cols < 0) | (rows + cells > grids[image, 1]) | (cols + cells > grids[image, 2])).any()):
        raise ValueError("APT patch positions fall outside their image's grid")
    if bool(((rows % cells != 0) | (cols % cells != 0)).any()):
        raise ValueError("APT cells must start on their own grid (a 28 px cell at even base rows and columns, ...)")

    centre = (cells.to(torch.float32) - 1) / 2  # 0 for a base patch: its stock integer position
    starts, llm_cell, merge_rows = _merge_groups(rows, cols, cells, image, grids, merge_size)
    llm_tokens = torch.bincount(image[starts], minlength=len(grids))
    if num_llm_tokens is not None and not torch.equal(llm_tokens, num_llm_tokens.to(device).long()):
        raise ValueError(
            f"apt_num_llm_tokens {num_llm_tokens.tolist()} do not match the patches, which give {llm_tokens.tolist()}"
        )
    counts = tuple(llm_tokens.tolist())
    return APTLayout(
        vision_positions=torch.stack([rows + centre, cols + centre], dim=-1),
        cu_seqlens=F.pad(num_tokens.cumsum(0, dtype=torch.int32), (1, 0)),
        merge_index=merge_rows.flatten(),
        llm_cells=tuple(llm_cell.split(counts)),
        llm_tokens=counts,
    )


def _cell_sides(
    patch_sizes: torch.Tensor, num_tokens: torch.Tensor, grids: torch.Tensor, patch_size: int, merge_size: int
) -> torch.Tensor:
    """(n,) side of every row's cell in base patches, once the counts, grids and sizes fit together."""
    if len(num_tokens) != len(grids):
        raise ValueError(f"apt_num_tokens has {len(num_tokens)} images but image_grid_thw has {len(grids)}")
    if int(num_tokens.sum()) != len(patch_sizes):
        raise ValueError(f"apt_num_tokens sums to {int(num_tokens.sum())} but there are {len(patch_sizes)} APT rows")
    if bool((grids[:, 0] != 1).any()) or bool((grids[:, 1:] % merge_size != 0).any()):
        raise ValueError(f"APT images need image grids (1, h, w) with h and w multiples of {merge_size}")
    cells = (patch_sizes // patch_size).long()
    if bool(((patch_sizes % patch_size != 0) | ((cells != 1) & (cells % merge_size != 0))).any()):
        raise ValueError(f"APT patch sizes must be {patch_size} or multiples of {patch_size * merge_size} px")
    return cells


def _merge_groups(
    rows: torch.Tensor, cols: torch.Tensor, cells: torch.Tensor, image: torch.Tensor, grids: torch.Tensor, m: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The LLM tokens of a batch and the m * m rows the merger reads for each.

    A token starts at a base row at the top-left of its merge group, or at any larger cell. Tokens
    are ordered by image, then by the raster index of the merged-grid cell they start at.

    Returns:
        ``starts`` (L,) the row each token starts at, ``llm_cell`` (L,) its merged-grid cell,
        ``merge_rows`` (L, m * m) the rows the merger reads: a group's base rows in stock order
        (raster inside the group), or a larger cell's row m * m times.
    """
    device = rows.device
    grid_w = grids[image, 2]
    cell_offset = F.pad((grids[:, 1] * grids[:, 2]).cumsum(0), (1, 0))  # first base cell of each image
    base_cell = cell_offset[image] + rows * grid_w + cols  # batch-wide index of each row's top-left base cell
    is_base = cells == 1
    row_of_cell = torch.full((int(cell_offset[-1]),), -1, dtype=torch.long, device=device)  # -1: in a larger cell
    row_of_cell[base_cell[is_base]] = torch.arange(len(cells), device=device)[is_base]

    starts = (~is_base | ((rows % m == 0) & (cols % m == 0))).nonzero().squeeze(-1)
    llm_cell = (rows[starts] // m) * (grid_w[starts] // m) + cols[starts] // m
    merged_offset = F.pad((grids[:, 1] * grids[:, 2] // (m * m)).cumsum(0), (1, 0))
    order = torch.argsort(merged_offset[image[starts]] + llm_cell)
    starts, llm_cell = starts[order], llm_cell[order]

    dy, dx = torch.meshgrid(torch.arange(m, device=device), torch.arange(m, device=device), indexing="ij")
    group_cells = base_cell[starts, None] + dy.flatten() * grid_w[starts, None] + dx.flatten()  # (L, m*m)
    group_rows = row_of_cell[group_cells.clamp(max=len(row_of_cell) - 1)]  # (larger cells: unused)
    merge_rows = torch.where(~is_base[starts, None], starts[:, None].expand(-1, m * m), group_rows)
    base_groups = int(is_base[starts].sum())
    if bool((merge_rows < 0).any()) or base_groups * m * m != int(is_base.sum()):
        raise ValueError(f"APT base patches must fill whole {m}x{m} merge groups")
    return starts, llm_cell, merge_rows


def _take_apt_inputs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the ``apt_*`` keys from ``kwargs`` and return them (None for those not given)."""
    return {key: kwargs.pop(key, None) for key in APT_MODEL_INPUTS}


class APTQwen2VLModel(Qwen2VLModel):
    """``Qwen2VLModel`` that also accepts the ``apt_*`` inputs (same parameters as the stock model)."""

    _apt_cells: Iterator[torch.Tensor] | None = None  # set only while get_rope_index runs on APT inputs

    def apt_layout(self, image_grid_thw: torch.Tensor | None, **apt: Any) -> APTLayout:
        """:func:`apt_layout` with this model's patch and merge sizes.

        Args:
            image_grid_thw: (images, 3) stock grids.
            **apt: ``apt_patch_sizes``, ``apt_patch_positions``, ``apt_num_tokens``, ``apt_num_llm_tokens``.

        Returns:
            The layout.

        Raises:
            ValueError: a key is missing or the keys do not fit together (one line).
        """
        vision: Any = self.config.vision_config
        missing = [key for key in APT_MODEL_INPUTS if key != "apt_pixel_values" and apt.get(key) is None]
        if missing:
            raise ValueError(f"APT inputs are incomplete: {', '.join(missing)} missing")
        if image_grid_thw is None:
            raise ValueError("APT inputs need image_grid_thw (returned by the processor)")
        return apt_layout(
            apt["apt_patch_sizes"],
            apt["apt_patch_positions"],
            apt["apt_num_tokens"],
            image_grid_thw,
            vision.patch_size,
            vision.spatial_merge_size,
            apt["apt_num_llm_tokens"],
        )

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        apt_pixel_values: torch.Tensor | None = None,
        apt_patch_sizes: torch.Tensor | None = None,
        apt_patch_positions: torch.Tensor | None = None,
        apt_num_tokens: torch.Tensor | None = None,
        apt_num_llm_tokens: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling:
        """Image features: the stock ones, or, given ``apt_pixel_values``, those of the APT rows.

        The ``apt_*`` parameters are named so that ``generate`` hands them to this method when it
        encodes the images before prefill (and then drops them from the decoding steps).

        Args:
            pixel_values: Stock rows (used only without APT inputs).
            image_grid_thw: (images, 3) stock grids.
            apt_pixel_values: (n, C*T*p*p) one row per selected cell.
            apt_patch_sizes: (n,) cell sizes in pixels.
            apt_patch_positions: (n, 2) top-left base cell of every row.
            apt_num_tokens: (images,) rows per image.
            apt_num_llm_tokens: (images,) LLM tokens per image.
            **kwargs: Passed on to the vision tower (``output_hidden_states``, ...).

        Returns:
            The vision tower's output: ``last_hidden_state`` (n, embed_dim) per row, ``pooler_output``
            a tuple of (L_i, hidden_size) LLM features per image.
        """
        if apt_pixel_values is None:
            return super().get_image_features(pixel_values, image_grid_thw, **kwargs)
        layout = self.apt_layout(
            image_grid_thw,
            apt_patch_sizes=apt_patch_sizes,
            apt_patch_positions=apt_patch_positions,
            apt_num_tokens=apt_num_tokens,
            apt_num_llm_tokens=apt_num_llm_tokens,
        )

        # The stock merger reads m*m consecutive rows per token; the stock tower calls it on its
        # block output with no hook for another order, so a forward pre-hook gathers the rows.
        def gather_rows(module: torch.nn.Module, args: tuple) -> tuple:
            return (args[0][layout.merge_index], *args[1:])

        handle = self.visual.merger.register_forward_pre_hook(gather_rows)
        try:
            outputs = self.visual(
                apt_pixel_values.type(self.visual.dtype),
                grid_thw=image_grid_thw,
                position_ids=layout.vision_positions,  # float positions: rotary angles from the centres
                cu_seqlens=layout.cu_seqlens,
                **kwargs,
            )
        finally:
            handle.remove()
        outputs.pooler_output = torch.split(outputs.pooler_output, list(layout.llm_tokens))
        return outputs

    def get_rope_index(
        self,
        input_ids: torch.LongTensor,
        mm_token_type_ids: torch.IntTensor,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stock M-RoPE positions; with APT inputs each image token takes its merged-grid cell's position.

        The stock method walks the prompt and asks :meth:`get_vision_position_ids` for each image's
        positions; with APT inputs that method returns, image by image, the positions of the cells
        the LLM tokens start at. Text after an image continues from ``max(h, w) / m`` as in stock.

        Args:
            input_ids: (batch, length) prompts holding ``apt_num_llm_tokens`` placeholders per image.
            mm_token_type_ids: (batch, length) 1 on image tokens.
            image_grid_thw: (images, 3) stock grids.
            video_grid_thw: Video grids (stock inputs only; APT inputs take no videos).
            attention_mask: (batch, length) 0 on padding.
            **kwargs: The ``apt_*`` keys but ``apt_pixel_values`` (none: stock positions); the rest is
                ignored, as by the stock method (``generate`` passes all its inputs).

        Returns:
            ``(position_ids (3, batch, length), rope_deltas (batch, 1))`` as the stock method.

        Raises:
            ValueError: the placeholders do not match the APT tokens, or videos come with APT inputs.
        """
        apt = _take_apt_inputs(kwargs)
        if apt.get("apt_patch_sizes") is None:
            return super().get_rope_index(
                input_ids, mm_token_type_ids, image_grid_thw, video_grid_thw, attention_mask, **kwargs
            )
        if video_grid_thw is not None:
            raise ValueError("APT inputs cannot be mixed with videos in one call")
        layout = self.apt_layout(image_grid_thw, **apt)
        placeholders = int((input_ids == self.config.image_token_id).sum())
        if placeholders != sum(layout.llm_tokens):
            raise ValueError(
                f"the prompt holds {placeholders} image placeholders but the APT inputs give "
                f"{sum(layout.llm_tokens)} LLM tokens: build the inputs with APTQwen2VLProcessor"
            )
        self._apt_cells = iter(layout.llm_cells)
        try:
            return super().get_rope_index(
                input_ids, mm_token_type_ids, image_grid_thw, None, attention_mask, **kwargs
            )
        finally:
            self._apt_cells = None

    def get_vision_position_ids(self, start_position: int, grid_thw: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Stock (3, t*h*w/m^2) positions of an image; during an APT ``get_rope_index``, those of its LLM tokens.

        Args:
            start_position: Offset of the image in the prompt's positions.
            grid_thw: The image's (t, h, w).
            *args: As the stock method (merge sizes, time interval).
            **kwargs: As the stock method (``device``).

        Returns:
            (3, tokens) temporal, height and width positions.
        """
        positions = super().get_vision_position_ids(start_position, grid_thw, *args, **kwargs)
        if self._apt_cells is None:
            return positions
        return positions[:, next(self._apt_cells).to(positions.device)]

    def forward(self, input_ids: torch.LongTensor | None = None, **kwargs: Any) -> Any:
        """The stock forward; APT inputs are encoded first and placed with APT M-RoPE positions.

        Overridden because the stock forward hands its extra keyword arguments to both the vision
        tower and the language model, and computes M-RoPE positions without them. Here the APT
        image features go in as ``mm_encoder_outputs`` and the positions as ``position_ids``, the
        two inputs the stock forward takes precomputed.

        Args:
            input_ids: (batch, length) prompts.
            **kwargs: The ``apt_*`` keys of the processor (without ``apt_pixel_values``: the stock
                forward, unchanged) and the stock forward's inputs (``pixel_values`` is dropped with
                APT inputs).

        Returns:
            The stock forward's output.
        """
        apt = _take_apt_inputs(kwargs)
        apt_pixel_values = apt.pop("apt_pixel_values")
        if apt_pixel_values is None:
            given = [key for key, value in apt.items() if value is not None]
            if given:
                raise ValueError(f"{', '.join(given)} given without apt_pixel_values")
            return super().forward(input_ids=input_ids, **kwargs)

        encoded = dict(kwargs.pop("mm_encoder_outputs", None) or {})
        if encoded.get("image") is not None:
            raise ValueError("give either apt_pixel_values or precomputed image features, not both")
        kwargs.pop("pixel_values", None)  # the stock rows are replaced by the APT rows
        image_grid_thw = kwargs.get("image_grid_thw")
        encoded["image"] = self.get_image_features(
            image_grid_thw=image_grid_thw, apt_pixel_values=apt_pixel_values, return_dict=True, **apt
        )
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        first_pass = cache is None or cache.get_seq_length() == 0
        if kwargs.get("position_ids") is None and input_ids is not None and first_pass:
            if kwargs.get("mm_token_type_ids") is None:
                raise ValueError("APT inputs need mm_token_type_ids (returned by the processor)")
            kwargs["position_ids"], self.rope_deltas = self.get_rope_index(  # type: ignore[assignment]
                input_ids,
                kwargs["mm_token_type_ids"],
                image_grid_thw,
                kwargs.get("video_grid_thw"),
                kwargs.get("attention_mask"),
                **apt,
            )
        return super().forward(input_ids=input_ids, mm_encoder_outputs=encoded, **kwargs)


class APTQwen2VLForConditionalGeneration(Qwen2VLForConditionalGeneration):
    """``Qwen2VLForConditionalGeneration`` that runs on the APT selection when given the ``apt_*`` keys.

    Same parameters and state-dict keys as the stock class: ``from_pretrained("Qwen/Qwen2-VL-2B-Instruct")``
    and ``load_state_dict(stock.state_dict())`` work unchanged. Without ``apt_*`` keys it is the
    stock model.
    """

    def __init__(self, config: Qwen2VLConfig) -> None:
        # The stock __init__ builds a stock Qwen2VLModel; building it and then replacing it would
        # double the construction cost, so this builds the APT one in its place (same submodules).
        super(Qwen2VLForConditionalGeneration, self).__init__(config)
        text: Any = config.text_config
        self.model = APTQwen2VLModel(config)
        self.lm_head = torch.nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        self.post_init()

    def prepare_inputs_for_generation(
        self,
        *args: Any,
        apt_pixel_values: torch.Tensor | None = None,
        apt_patch_sizes: torch.Tensor | None = None,
        apt_patch_positions: torch.Tensor | None = None,
        apt_num_tokens: torch.Tensor | None = None,
        apt_num_llm_tokens: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs: Any,
    ) -> dict:
        """The stock step inputs, plus the ``apt_*`` keys in the prefill step only (like the stock pixels).

        Overridden to declare the ``apt_*`` inputs to ``generate``, which refuses keyword arguments
        that neither this method nor ``forward`` names. ``generate`` encodes the images before
        prefill when ``pixel_values`` is among its inputs (pass the processor's output whole) and
        then drops the ``apt_*`` keys, which are named parameters of ``get_image_features``; they
        reach this method only where a generation loop skips that step.
        """
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration or not kwargs.get("use_cache", True):
            apt = {
                "apt_pixel_values": apt_pixel_values,
                "apt_patch_sizes": apt_patch_sizes,
                "apt_patch_positions": apt_patch_positions,
                "apt_num_tokens": apt_num_tokens,
                "apt_num_llm_tokens": apt_num_llm_tokens,
            }
            inputs.update({key: value for key, value in apt.items() if value is not None})
        return inputs


# transformers renames the keys of published Qwen2-VL checkpoints ("model.layers.*", "visual.*") by
# class name; the APT classes load and save the same checkpoints, so they get the same renaming.
for _apt_class, _stock_class in (
    (APTQwen2VLModel, Qwen2VLModel),
    (APTQwen2VLForConditionalGeneration, Qwen2VLForConditionalGeneration),
):
    if get_checkpoint_conversion_mapping(_apt_class.__name__) is None:
        register_checkpoint_conversion_mapping(
            _apt_class.__name__, get_checkpoint_conversion_mapping(_stock_class.__name__) or []
        )
