"""The APT image processors for Hugging Face ``transformers``, one pair for every Qwen family.

Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3.5 all use transformers' ``Qwen2VLImageProcessor``
(Qwen3-VL and Qwen3.5 with 16 px patches and mean/std 0.5, from their checkpoint's
``preprocessor_config.json``). ``APTQwen2VLImageProcessor`` (torchvision backend, the default) and
``APTQwen2VLImageProcessorPil`` return ``pixel_values`` and ``image_grid_thw`` exactly as their
stock classes do, with whatever patch size and normalization they are given, so stock models and
the stock ``<|image_pad|>`` expansion are unchanged, plus the mixed-scale patches an APT model
needs: the five ``apt_*`` keys of :class:`~apt_viz.core.apt_inputs.APTInputs`. The selection runs
on each image as the stock processor resized it, through the core library (scoring -> selection ->
accounting), so it is the same as :class:`apt_viz.PatchTokenizer` on that image.

Settings (``patch_selection_method``, ``alpha``, ``thresholds``, ``scorer``, ``budget_unit``,
``seed``) can be given at construction, set as attributes, or passed per call (also as
``images_kwargs`` of the processors); ``save_pretrained`` / ``from_pretrained`` keep them.

Importing this module imports transformers and torchvision; ``import apt_viz`` does not.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoImageProcessor, PretrainedConfig
from transformers.image_processing_utils import BatchFeature
from transformers.image_transforms import group_images_by_shape, reorder_images
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
    Qwen2VLImageProcessorKwargs,
    Qwen2VLImageProcessorPil,
)
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

from ..core.accounting import TokenStats
from ..core.apt_inputs import APTInputs
from ..core.config import APTConfig
from ..core.layout import merge_block_order, unpatchify
from ..core.patches import construct_patch_groups
from ..core.pipeline import run_apt
from ..core.selection import BudgetInfo, Selection

APT_SETTINGS = ("patch_selection_method", "alpha", "thresholds", "scorer", "budget_unit", "seed")
# Per-call results kept on the processor; never serialized by save_pretrained.
_LAST_CALL_ATTRIBUTES = ("last_budget_info", "last_thresholds", "last_token_stats")


class APTQwen2VLImageProcessorKwargs(Qwen2VLImageProcessorKwargs, total=False):
    r"""
    patch_selection_method (`str`, *optional*, defaults to `"v1"`):
        APT selection: `"v1"` fixed thresholds, `"v2"` thresholds `alpha * mean(score)`, `"budget"`
        `round(alpha * N)` tokens.
    alpha (`float`, *optional*, defaults to 1.0):
        v2 threshold scale (> 0) or budget fraction of the base patches (in (0, 1]); unused by v1.
    thresholds (`list[float]`, *optional*):
        v1 thresholds, one per scale above the base (defaults to `[3.0, 2.0]` for 28 and 56 px).
    scorer (`str`, *optional*, defaults to `"entropy"`):
        Importance scorer: `"entropy"`, `"laplacian"`, `"upsample_mse"` or `"random"`.
    budget_unit (`str`, *optional*, defaults to `"vision"`):
        What the budget's alpha is a fraction of: `"vision"` (the base patches) or `"llm"` (the
        stock LLM tokens).
    seed (`int`, *optional*, defaults to 0):
        Seed of the `"random"` scorer.
    """

    # transformers validates call kwargs strictly against these types: accept ints and tuples too.
    patch_selection_method: str
    alpha: float | int
    thresholds: list[float | int] | tuple[float | int, ...] | None
    scorer: str
    budget_unit: str
    seed: int


def apt_config(
    patch_selection_method: Any,
    alpha: Any,
    thresholds: Any,
    scorer: Any,
    patch_size: int,
    merge_size: int,
    *,
    budget_unit: Any = "vision",
    seed: Any = 0,
) -> APTConfig:
    """The processor's settings as a validated :class:`APTConfig`; ``ValueError`` (one line) when unusable."""
    return APTConfig(
        patch_size=patch_size,
        merge_size=merge_size,
        scorer=scorer,
        seed=seed,
        method=patch_selection_method,
        alpha=alpha,
        thresholds=None if thresholds is None else tuple(thresholds),
        budget_unit=budget_unit,
    )


@dataclass
class ImageAPTView:
    """The APT view of one image (rows in the order documented on :func:`apt_view`)."""

    pixel_values: torch.Tensor  # (n, C * T * p * p)
    patch_sizes: torch.Tensor  # (n,) cell size in pixels
    patch_positions: torch.Tensor  # (n, 2) (row, col) of the top-left base cell
    selection: Selection
    stats: TokenStats

    @property
    def inputs(self) -> APTInputs:
        """This image's rows as a one-image :class:`APTInputs`."""
        return APTInputs(
            pixel_values=self.pixel_values,
            patch_sizes=self.patch_sizes,
            patch_positions=self.patch_positions,
            num_tokens=torch.tensor([len(self.patch_sizes)]),
            num_llm_tokens=torch.tensor([self.stats.llm_tokens]),
        )


def apt_view(
    image_255: torch.Tensor,
    normalized: torch.Tensor,
    config: APTConfig,
    temporal_patch_size: int,
) -> ImageAPTView:
    """APT selection of one resized image and its patches in the stock row format.

    ``image_255`` (1, C, H, W) in [0, 255] is scored; ``normalized`` (1, C, H, W) (the pixels the
    stock processor emitted) gives the patches. Rows are ordered scale by scale, smallest first;
    base (p px) rows follow the stock ``pixel_values`` order (merge blocks), so every
    ``merge_size**2`` consecutive base rows are one LLM token as in stock Qwen2-VL; larger cells
    follow the raster order of their own grid. A cell of size ``p * 2**i`` is the zero-padded
    normalized image downsampled by ``2**i`` (:func:`apt_viz.core.patches.construct_patch_groups`), repeated
    ``temporal_patch_size`` times and flattened channel-major like a stock row.
    """
    result = run_apt(image_255, config)
    selection = result.selection
    groups = construct_patch_groups(normalized, selection.masks, config.patch_size)

    rows, sizes, positions = [], [], []
    base_cols = normalized.shape[-1] // config.patch_size
    for level, size in enumerate(config.patch_sizes):
        patches = groups[f"resized_patches_{size}"]  # (n, C, p, p), raster order of this grid
        cell_rows, cell_cols = selection.masks[size][0].nonzero(as_tuple=True)  # same raster order
        if level == 0:
            order = merge_block_order(cell_rows, cell_cols, base_cols, config.merge_size)
            patches, cell_rows, cell_cols = patches[order], cell_rows[order], cell_cols[order]
        count, channels, p, _ = patches.shape
        rows.append(
            patches.unsqueeze(2)
            .expand(count, channels, temporal_patch_size, p, p)
            .reshape(count, channels * temporal_patch_size * p * p)
        )
        sizes.append(torch.full((count,), size, dtype=torch.long))
        scale = 2**level  # a cell of grid i starts at base cell (r * 2^i, c * 2^i)
        positions.append(torch.stack([cell_rows, cell_cols], dim=1).long().cpu() * scale)
    return ImageAPTView(
        pixel_values=torch.cat(rows),
        patch_sizes=torch.cat(sizes),
        patch_positions=torch.cat(positions),
        selection=selection,
        stats=result.stats[0],
    )


class _APTMixin:
    """Shared by both backends: settings, validation, and the APT view added to the stock output."""

    valid_kwargs = APTQwen2VLImageProcessorKwargs
    patch_size: int  # set by the stock processor classes this mixin is combined with
    merge_size: int
    patch_selection_method = "v1"
    alpha = 1.0
    thresholds = None
    scorer = "entropy"
    budget_unit = "vision"
    seed = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.thresholds is not None:
            self.thresholds = [float(t) for t in self.thresholds]  # JSON-friendly
        self.last_budget_info: list[BudgetInfo] | None = None
        self.last_thresholds: list[list[float]] | None = None
        self.last_token_stats: list[TokenStats] | None = None
        # Fail at construction, not at the first call.
        apt_config(
            self.patch_selection_method, self.alpha, self.thresholds, self.scorer, self.patch_size, self.merge_size,
            budget_unit=self.budget_unit, seed=self.seed,
        )

    def _resize_like_stock(self, images: list, size: Any, resample: Any, factor: int, **kwargs: Any) -> list:
        raise NotImplementedError

    def _preprocess(
        self,
        images: list,
        do_resize: bool,
        size: Any,
        resample: Any,
        do_rescale: bool,
        rescale_factor: float,
        patch_size: int,
        temporal_patch_size: int,
        merge_size: int,
        return_tensors: Any = None,
        patch_selection_method: str = "v1",
        alpha: float = 1.0,
        thresholds: Sequence[float] | None = None,
        scorer: str = "entropy",
        budget_unit: str = "vision",
        seed: int = 0,
        **kwargs: Any,
    ) -> BatchFeature:
        # Call kwargs, else the attributes (filled in by the stock preprocess): validated on every call.
        config = apt_config(patch_selection_method, alpha, thresholds, scorer, patch_size, merge_size,
                            budget_unit=budget_unit, seed=seed)
        # Resize here with the stock code, then let the stock _preprocess do the rest on the same
        # images: its outputs stay bit-identical and APT scores exactly what it normalized.
        if do_resize:
            images = self._resize_like_stock(
                images, size=size, resample=resample, factor=patch_size * merge_size, **kwargs
            )
        stock = super()._preprocess(
            images,
            do_resize=False,
            size=size,
            resample=resample,
            do_rescale=do_rescale,
            rescale_factor=rescale_factor,
            patch_size=patch_size,
            temporal_patch_size=temporal_patch_size,
            merge_size=merge_size,
            return_tensors=return_tensors,
            **kwargs,
        )
        # Without do_rescale the inputs are taken as already rescaled; scoring wants [0, 255].
        to_255 = 1.0 if do_rescale else 1.0 / rescale_factor
        views = self._apt_views(images, stock, config, to_255, temporal_patch_size)
        self._remember(views, config)
        apt = _apt_outputs(views)
        if isinstance(stock["pixel_values"], np.ndarray):  # same array type as the stock outputs
            return BatchFeature(
                data={**stock, **{key: value.cpu().numpy() for key, value in apt.items()}}, tensor_type=return_tensors
            )
        return BatchFeature(data={**stock, **apt}, tensor_type=return_tensors)

    @staticmethod
    def _apt_views(
        images: list, stock: BatchFeature, config: APTConfig, to_255: float, temporal_patch_size: int
    ) -> list[ImageAPTView]:
        """The APT view of every resized image; its patches come from the stock normalized rows."""
        pixel_values = torch.as_tensor(stock["pixel_values"])
        grids = torch.as_tensor(stock["image_grid_thw"]).tolist()
        views, offset = [], 0
        for image, (_, grid_h, grid_w) in zip(images, grids):
            stock_rows = pixel_values[offset : offset + grid_h * grid_w]
            offset += grid_h * grid_w
            normalized = unpatchify(
                stock_rows, grid_h, grid_w, config.patch_size, config.merge_size, temporal_patch_size
            )
            image_255 = torch.as_tensor(image).to(normalized.device, torch.float32) * to_255
            views.append(apt_view(image_255.clamp(0, 255).unsqueeze(0), normalized, config, temporal_patch_size))
        return views

    def _remember(self, views: list[ImageAPTView], config: APTConfig) -> None:
        """Keep the per-image results of this call in the ``last_*`` attributes."""
        budget = config.method == "budget"
        infos = [info for v in views for info in v.selection.budget_info or []]
        self.last_budget_info = infos if budget else None
        self.last_thresholds = None if budget else [v.selection.thresholds[0].tolist() for v in views]  # type: ignore[index]
        self.last_token_stats = [v.stats for v in views]

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        for name in _LAST_CALL_ATTRIBUTES:
            output.pop(name, None)
        return output


def _apt_outputs(views: list[ImageAPTView]) -> dict[str, torch.Tensor]:
    """The ``apt_*`` keys: every image's rows concatenated in input order, plus per-image counts."""
    return APTInputs.concat([view.inputs for view in views]).as_dict()


class APTQwen2VLImageProcessor(_APTMixin, Qwen2VLImageProcessor):
    """Qwen2-VL image processor (torchvision backend) that also returns the APT view; serves every Qwen family."""

    def _resize_like_stock(self, images: list, size: Any, resample: Any, factor: int, **kwargs: Any) -> list:
        # The stock resize loop: same-shape images are resized together, then put back in order.
        grouped, index = group_images_by_shape(images, disable_grouping=kwargs.get("disable_grouping"))
        resized = {
            shape: self.resize(images=stacked, size=size, resample=resample, factor=factor)
            for shape, stacked in grouped.items()
        }
        return list(reorder_images(resized, index))


class APTQwen2VLImageProcessorPil(_APTMixin, Qwen2VLImageProcessorPil):
    """Qwen2-VL image processor (PIL backend) that also returns the APT view; serves every Qwen family."""

    def _resize_like_stock(self, images: list, size: Any, resample: Any, factor: int, **kwargs: Any) -> list:
        return [self.resize(image, size=size, resample=resample, factor=factor) for image in images]


class APTQwen2VLRegistryKey(PretrainedConfig):
    """Not a model config: the key under which the APT image processors are registered with
    ``AutoImageProcessor``, so a saved checkpoint (its ``image_processor_type``) loads back through
    ``AutoImageProcessor``, ``AutoProcessor`` and ``Qwen2VLProcessor.from_pretrained``."""

    model_type = "apt_qwen2_vl"


AutoImageProcessor.register(
    APTQwen2VLRegistryKey,
    image_processor_classes={"torchvision": APTQwen2VLImageProcessor, "pil": APTQwen2VLImageProcessorPil},
    exist_ok=True,
)
