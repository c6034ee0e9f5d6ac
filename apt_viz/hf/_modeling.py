"""The shared APT model base: every Qwen family runs on the APT selection through these two mixins.

A family module writes::

    class APTXModel(APTModelMixin, XModel): ...                      # the inner model
    class APTXForConditionalGeneration(APTForConditionalGenerationMixin, XForConditionalGeneration):
        apt_model_class = APTXModel
    register_checkpoint_keys(APTXModel, XModel)                      # and the outer pair

and gets, written once here: the checks of the ``apt_*`` inputs on every entry point
(``forward``, ``get_image_features``, ``generate``, ``get_rope_index``), the merger hook, the
vision-position hook, the M-RoPE positions of the APT LLM tokens and the generation plumbing.
Without ``apt_*`` inputs every method is the stock one.

Extension points of :class:`APTModelMixin` (override in the family's inner model):

- :meth:`~APTModelMixin.apt_vision_inputs`: the precomputed inputs of the vision tower for the
  APT rows. The base gives the rotary ``position_ids`` (cell centres) and ``cu_seqlens`` (one
  segment per image). Qwen3-VL / Qwen3.5 add ``interp_indices`` / ``interp_weights`` of the
  learned position table sampled per APT row (``super()`` plus two keys).
- :meth:`~APTModelMixin.apt_mergers`: the modules whose input rows are gathered per LLM token (m*m
  rows each). The base gives the final merger and, when the tower has them, the deepstack mergers
  (Qwen3-VL), so those read the same rows as the final merger.
- :meth:`~APTModelMixin.apt_encode`: runs the tower on the APT rows under the merger hook. Override
  only where the stock tower cannot take the rows as they are (Qwen2.5-VL, whose stock forward
  reorders whole groups of m*m rows into windows: its override groups the rows by window, takes
  ``cu_window_seqlens`` from each window's row count, keeps ``cu_seqlens`` for the full-attention
  blocks, and runs the merger inside :func:`gathered_rows`). The merger must see the rows in APT
  order, i.e. the order of ``apt_pixel_values``, which ``layout.merge_index`` refers to.

The layout handed to these hooks (:class:`~apt_viz.core.layout.APTLayout`) gives, per row, the
image, the cell side and top-left base cell and the rotary centre, so a family can compute windows
or learned-position taps from it without reading the inputs again.
"""
from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.utils.generic import can_return_tuple

from ..core.apt_inputs import APTInputs, check_image_tokens
from ..core.layout import NUM_SCALES, APTLayout, apt_layout

Method = TypeVar("Method", bound=Callable[..., Any])
_APT_PARAMETERS = [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=None) for key in APTInputs.KEYS]


def takes_apt_inputs(method: Method) -> Method:
    """Name the ``apt_*`` keys in ``method``'s signature (they arrive in its ``**kwargs``).

    ``generate`` routes its inputs by signature: it refuses keyword arguments that neither
    ``prepare_inputs_for_generation`` nor ``forward`` names, and hands ``get_image_features`` the
    inputs it names when it encodes the images before prefill.
    """
    signature = inspect.signature(method)
    parameters = list(signature.parameters.values())
    keywords = [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    others = [p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD]
    method.__signature__ = signature.replace(parameters=[*others, *_APT_PARAMETERS, *keywords])  # type: ignore[attr-defined]
    return method


@contextlib.contextmanager
def gathered_rows(modules: Sequence[nn.Module], index: torch.Tensor) -> Iterator[None]:
    """While open, each of ``modules`` takes the rows ``index`` of its first input instead of that input.

    The stock towers call their mergers on the block output, m*m consecutive rows per token, with no
    hook for another order; a forward pre-hook hands them the gathered rows.
    """
    def gather(module: nn.Module, args: tuple) -> tuple:
        return (args[0][index], *args[1:])

    handles = [module.register_forward_pre_hook(gather) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class APTModelMixin:
    """Put in front of a family's stock inner model (``Qwen2VLModel``, ...): it also takes the ``apt_*`` inputs.

    The parameters are the stock model's. With ``apt_*`` inputs, the vision tower sees only the
    selected rows (attention within each image), the merger makes one LLM token per 2x2 base
    group or larger cell, and each LLM token takes the M-RoPE position of the merged-grid cell it
    starts at; text positions stay the stock ones. docs/apt_inference.md states the choices.
    """

    apt_num_scales: int = NUM_SCALES  # cell sizes accepted: p * 2**k for k < apt_num_scales
    apt_processor_name: str = "the family's APT processor"  # named when a prompt does not fit the inputs
    _apt_cells: Iterator[torch.Tensor] | None = None  # set only while get_rope_index runs on APT inputs

    config: Any  # from the stock model
    visual: Any
    rope_deltas: Any

    # --- extension points -------------------------------------------------------------------

    def apt_vision_inputs(self, layout: APTLayout, image_grid_thw: torch.Tensor) -> dict[str, Any]:
        """The vision tower's precomputed inputs for the APT rows (``transformers.vision_utils`` names).

        Args:
            layout: The checked layout of the batch.
            image_grid_thw: (images, 3) stock grids.

        Returns:
            ``position_ids`` (n, 2) float: each cell's centre in base-patch units, from which the
            tower's rotary embedding computes its angles; ``cu_seqlens``: one segment per image.
        """
        return {"position_ids": layout.vision_positions, "cu_seqlens": layout.cu_seqlens}

    def apt_mergers(self) -> list[nn.Module]:
        """The mergers that read m*m rows per LLM token: the final one and any deepstack ones."""
        return [self.visual.merger, *getattr(self.visual, "deepstack_merger_list", ())]

    def apt_encode(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor, layout: APTLayout,
                   **kwargs: Any) -> Any:
        """The vision tower's output on the APT rows, every merger reading ``layout.merge_index``.

        Args:
            pixel_values: (n, C*T*p*p) ``apt_pixel_values``.
            image_grid_thw: (images, 3) stock grids.
            layout: The checked layout.
            **kwargs: Passed on to the tower (``output_hidden_states``, ...).

        Returns:
            The tower's output: ``last_hidden_state`` (n, embed) per row, ``pooler_output`` (L, hidden)
            per LLM token in LLM order (and ``deepstack_features`` likewise, where the tower has them).
        """
        with gathered_rows(self.apt_mergers(), layout.merge_index):
            return self.visual(
                pixel_values.type(self.visual.dtype),
                grid_thw=image_grid_thw,
                **self.apt_vision_inputs(layout, image_grid_thw),
                **kwargs,
            )

    # --- the checks, in one place -------------------------------------------------------------

    def apt_layout(
        self, apt: APTInputs, image_grid_thw: torch.Tensor | None, input_ids: torch.Tensor | None = None
    ) -> APTLayout:
        """Check ``apt`` against this model and the prompt, and lay it out; nothing runs before this.

        Args:
            apt: The ``apt_*`` inputs.
            image_grid_thw: (images, 3) stock grids.
            input_ids: (batch, length) prompts, whose image tokens are checked when given.

        Returns:
            The layout.

        Raises:
            ValueError: the first inconsistency, in one line (:mod:`apt_viz.core.apt_inputs`).
        """
        if image_grid_thw is None:
            raise ValueError("APT inputs need image_grid_thw (returned by the processor)")
        vision = self.config.vision_config
        row_width = getattr(vision, "in_channels", 3) * vision.temporal_patch_size * vision.patch_size**2
        # Under accelerate's device map, hooks move each module's inputs to its device: no device to demand.
        hooked = any(hasattr(module, "_hf_hook") for module in (self, self.visual, self.visual.patch_embed))
        layout = apt_layout(
            apt, image_grid_thw, vision.patch_size, vision.spatial_merge_size, self.apt_num_scales, row_width,
            device=None if hooked else self.visual.device,
        )
        if input_ids is not None:
            check_image_tokens(input_ids, self.config.image_token_id, apt.num_llm_tokens, self.apt_processor_name)
        return layout

    # --- entry points ---------------------------------------------------------------------------

    @takes_apt_inputs
    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.Tensor | None = None, image_grid_thw: torch.Tensor | None = None, **kwargs: Any
    ) -> Any:
        """Image features: the stock ones, or, given the ``apt_*`` inputs, those of the APT rows.

        The ``apt_*`` keys are named in the signature so that ``generate`` hands them to this method
        when it encodes the images before prefill (and then drops them from the decoding steps).

        Args:
            pixel_values: Stock rows (used only without ``apt_*`` inputs).
            image_grid_thw: (images, 3) stock grids.
            **kwargs: The ``apt_*`` keys of :class:`~apt_viz.core.apt_inputs.APTInputs`; the rest
                goes to the vision tower (``output_hidden_states``, ...).

        Returns:
            The vision tower's output: ``last_hidden_state`` (n, embed) per row, ``pooler_output`` a
            tuple of (L_i, hidden) LLM features per image (``deepstack_features`` split likewise).
        """
        apt = APTInputs.pop_from(kwargs)
        if apt is None:
            return super().get_image_features(pixel_values, image_grid_thw, **kwargs)  # type: ignore[misc]
        layout = self.apt_layout(apt, image_grid_thw)
        return self._apt_image_features(apt, layout, image_grid_thw, **kwargs)

    def _apt_image_features(self, apt: APTInputs, layout: APTLayout, image_grid_thw: Any, **kwargs: Any) -> Any:
        outputs = self.apt_encode(apt.pixel_values, image_grid_thw, layout, **kwargs)  # type: ignore[arg-type]
        split = list(layout.llm_tokens)
        outputs.pooler_output = torch.split(outputs.pooler_output, split)
        if getattr(outputs, "deepstack_features", None) is not None:
            outputs.deepstack_features = [torch.split(features, split) for features in outputs.deepstack_features]
        return outputs

    def get_rope_index(self, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Stock M-RoPE positions; with ``apt_*`` inputs each image token takes its merged-grid cell's position.

        The stock method walks the prompt and asks :meth:`get_vision_position_ids` for each image's
        positions; with APT inputs that method returns, image by image, the positions of the cells
        the LLM tokens start at. Text after an image continues from ``max(h, w) / m`` as in stock.

        Args:
            input_ids: (batch, length) prompts holding ``apt_num_llm_tokens`` placeholders per image.
            *args: The stock method's arguments (``mm_token_type_ids``, ``image_grid_thw``, ...).
            **kwargs: The stock method's keyword arguments and the ``apt_*`` keys (``apt_pixel_values``
                optional; none: stock positions); the rest is ignored, as by the stock method
                (``generate`` passes all its inputs).

        Returns:
            ``(position_ids (3, batch, length), rope_deltas (batch, 1))`` as the stock method.

        Raises:
            ValueError: the inputs or the placeholders do not fit, or videos come with APT inputs.
        """
        apt = APTInputs.pop_from(kwargs, pixels=False)
        stock = super().get_rope_index  # type: ignore[misc]
        if apt is None:
            return stock(input_ids, *args, **kwargs)
        named = inspect.signature(stock).bind(input_ids, *args, **kwargs).arguments
        if named.get("video_grid_thw") is not None:
            raise ValueError("APT inputs cannot be mixed with videos in one call")
        layout = self.apt_layout(apt, named.get("image_grid_thw"), input_ids)
        return self._apt_rope_index(layout, input_ids, *args, **kwargs)

    def _apt_rope_index(self, layout: APTLayout, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self._apt_cells = iter(layout.llm_cells)
        try:
            return super().get_rope_index(*args, **kwargs)  # type: ignore[misc]
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
        positions = super().get_vision_position_ids(start_position, grid_thw, *args, **kwargs)  # type: ignore[misc]
        if self._apt_cells is None:
            return positions
        return positions[:, next(self._apt_cells).to(positions.device)]

    def forward(self, input_ids: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """The stock forward; ``apt_*`` inputs are checked first, encoded, and placed with APT M-RoPE positions.

        Overridden because the stock forward hands its extra keyword arguments to both the vision
        tower and the language model, and computes M-RoPE positions without them. Here the APT
        image features go in as ``mm_encoder_outputs`` and the positions as ``position_ids``, the
        two inputs the stock forward takes precomputed.

        Args:
            input_ids: (batch, length) prompts.
            **kwargs: The ``apt_*`` keys (none: the stock forward, unchanged) and the stock forward's
                inputs (``pixel_values`` is dropped with APT inputs).

        Returns:
            The stock forward's output.
        """
        apt = APTInputs.pop_from(kwargs)
        if apt is None:
            return super().forward(input_ids=input_ids, **kwargs)  # type: ignore[misc]
        encoded = dict(kwargs.pop("mm_encoder_outputs", None) or {})
        if encoded.get("image") is not None:
            raise ValueError(f"give either {APTInputs.key('pixel_values')} or precomputed image features, not both")
        if kwargs.get("pixel_values_videos") is not None or kwargs.get("video_grid_thw") is not None:
            raise ValueError("APT inputs cannot be mixed with videos in one call")
        kwargs.pop("pixel_values", None)  # the stock rows are replaced by the APT rows
        image_grid_thw = kwargs.get("image_grid_thw")
        layout = self.apt_layout(apt, image_grid_thw, input_ids)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        first_pass = cache is None or cache.get_seq_length() == 0
        positions = kwargs.get("position_ids") is None and input_ids is not None and first_pass
        if positions and kwargs.get("mm_token_type_ids") is None:
            raise ValueError("APT inputs need mm_token_type_ids (returned by the processor)")

        encoded["image"] = self._apt_image_features(apt, layout, image_grid_thw)
        if positions:
            kwargs["position_ids"], self.rope_deltas = self._apt_rope_index(
                layout,
                input_ids,
                mm_token_type_ids=kwargs["mm_token_type_ids"],
                image_grid_thw=image_grid_thw,
                attention_mask=kwargs.get("attention_mask"),
            )
        return super().forward(input_ids=input_ids, mm_encoder_outputs=encoded, **kwargs)  # type: ignore[misc]


class APTForConditionalGenerationMixin:
    """Put in front of a family's stock ``...ForConditionalGeneration``; set ``apt_model_class``.

    Same parameters and state-dict keys as the stock class (``from_pretrained`` of a stock
    checkpoint and ``load_state_dict(stock.state_dict())`` work unchanged); without ``apt_*``
    inputs it is the stock model.
    """

    apt_model_class: type  # the family's APT inner model
    _apt_stock_class: ClassVar[type]  # the stock class this mixin is combined with (found by __init_subclass__)
    model: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._apt_stock_class = next(
            base for base in cls.__mro__[1:]
            if issubclass(base, PreTrainedModel) and not issubclass(base, APTForConditionalGenerationMixin)
        )

    def __init__(self, config: Any) -> None:
        # The stock __init__ builds a stock inner model; building it and then replacing it would
        # double the construction cost, so this does what it does (the same in every family) with
        # the APT inner model in its place.
        super(self._apt_stock_class, self).__init__(config)  # type: ignore[arg-type]
        self.model = self.apt_model_class(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()  # type: ignore[attr-defined]

    @takes_apt_inputs
    def get_image_features(
        self, pixel_values: torch.Tensor | None = None, image_grid_thw: torch.Tensor | None = None, **kwargs: Any
    ) -> Any:
        """The inner model's :meth:`APTModelMixin.get_image_features` (``pixel_values`` optional with APT inputs)."""
        return self.model.get_image_features(pixel_values, image_grid_thw, **kwargs)

    @takes_apt_inputs
    def prepare_inputs_for_generation(self, *args: Any, is_first_iteration: bool | None = False, **kwargs: Any) -> dict:
        """The stock step inputs, plus the ``apt_*`` keys in the prefill step only (like the stock pixels).

        ``generate`` encodes the images before prefill when ``pixel_values`` is among its inputs
        (pass the processor's output whole) and then drops the ``apt_*`` keys; they reach this
        method only where a generation loop skips that step.
        """
        apt = {key: kwargs.pop(key) for key in APTInputs.KEYS if key in kwargs}
        inputs = super().prepare_inputs_for_generation(  # type: ignore[misc]
            *args, is_first_iteration=is_first_iteration, **kwargs
        )
        if is_first_iteration or not kwargs.get("use_cache", True):
            inputs.update({key: value for key, value in apt.items() if value is not None})
        return inputs


def register_checkpoint_keys(apt_class: type, stock_class: type) -> None:
    """Give ``apt_class`` the checkpoint key renaming of ``stock_class``.

    transformers renames the keys of published Qwen checkpoints ("model.layers.*", "visual.*") by
    class name; the APT classes load and save the same checkpoints, so they get the same renaming.
    """
    if get_checkpoint_conversion_mapping(apt_class.__name__) is None:
        register_checkpoint_conversion_mapping(
            apt_class.__name__, get_checkpoint_conversion_mapping(stock_class.__name__) or []
        )
