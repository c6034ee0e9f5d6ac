"""One image's fidelity: APT and the baselines at equal cost, scored against the full resized image.

:func:`measure_fidelity` is the entry point: it returns the :class:`Fidelity` record, the
``fidelity`` block of ``stats.json`` (schema 3). :func:`fidelity_views` gives the images it scores
(to draw the reconstruction, the error map, the uniform baseline beside it); :func:`score_views`
scores them. docs/fidelity.md defines every number.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from PIL import Image

from ..analysis import ImageAnalysis, resolve_device
from ..core.accounting import TokenStats
from ..core.config import APTConfig, BudgetUnit, Method, Scorer
from ..core.pipeline import run_apt
from ..core.scoring import compute_patch_entropy_batched, single_threaded
from .metrics import detail_mask, pixel_error, psnr_of_error, ssim
from .reconstruction import reconstruct
from .uniform import UniformView, uniform_view


@dataclass(frozen=True)
class FidelityScore:
    """How close one view is to the full resized image, and what it costs."""

    psnr: float | None  # dB; None: exact
    ssim: float | None  # None: the image is smaller than the SSIM window
    psnr_detail: float | None  # dB over the 25% most detailed base cells; None: exact there
    vision_tokens: int
    llm_tokens: int
    resized_height: int | None = None  # uniform baselines: the size the stock processor resized to
    resized_width: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``psnr``, ``ssim``, ``psnr_detail``, ``vision_tokens``, ``llm_tokens`` (and, for a
        uniform baseline, ``resized_height``, ``resized_width``); None is ``null``."""
        out = asdict(self)
        if self.resized_height is None:
            del out["resized_height"], out["resized_width"]
        return out


@dataclass(frozen=True)
class Fidelity:
    """The ``fidelity`` block of one image: APT and its three baselines."""

    apt: FidelityScore
    uniform_equal_vision: FidelityScore  # stock processor, max_pixels matched on APT's vision tokens
    uniform_equal_llm: FidelityScore  # stock processor, max_pixels matched on APT's LLM tokens
    random_equal_vision: FidelityScore  # budget on seeded random maps, APT's vision tokens

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-ready: {``apt``, ``uniform_equal_vision``, ``uniform_equal_llm``, ``random_equal_vision``: score}."""
        return {field.name: getattr(self, field.name).to_dict() for field in fields(self)}


FIDELITY_KEYS = tuple(field.name for field in fields(Fidelity))


@dataclass(frozen=True)
class FidelityViews:
    """The images fidelity compares, each (1, 3, H, W) RGB in [0, 1] at the full resized size."""

    reference: torch.Tensor  # the full resized image
    apt: torch.Tensor  # APT's reconstruction
    uniform_equal_vision: UniformView
    uniform_equal_llm: UniformView
    random_equal_vision: torch.Tensor  # the random baseline's reconstruction
    random_stats: TokenStats
    detail: torch.Tensor  # (H, W) bool: the pixels psnr_detail counts


def random_baseline_config(config: APTConfig, vision_tokens: int, base_tokens: int) -> APTConfig:
    """The settings of ``random_equal_vision``: budget on ``random`` maps (``config.seed``) at APT's vision tokens.

    A budget in vision tokens keeps its alpha (the same T: the same tokens); any other setting
    becomes the budget ``vision_tokens / N``, whose T is APT's vision tokens. Both land on exactly
    APT's vision tokens: every selection is the forced minimum plus whole splits of 3 tokens.
    """
    alpha = config.alpha
    if config.method is not Method.BUDGET or config.budget_unit is not BudgetUnit.VISION:
        alpha = vision_tokens / base_tokens
    return config.replace(scorer=Scorer.RANDOM, method=Method.BUDGET, alpha=alpha, thresholds=None,
                          budget_unit=BudgetUnit.VISION)


def fidelity_views(analysis: ImageAnalysis, original: Image.Image) -> FidelityViews:
    """APT's reconstruction and the three baselines of one analysed image.

    Args:
        analysis: The image's analysis (its resized image, masks, token counts and settings).
        original: The image as loaded, which the uniform baselines resize (RGB, EXIF applied).

    Returns:
        The :class:`FidelityViews`, on the analysis' device.
    """
    config = analysis.config
    device = resolve_device(config.device)
    pixels = analysis.pixels.unsqueeze(0).to(device).float()  # [0, 255], as scored (no round trip through PIL)
    reference = pixels / 255.0
    masks = {size: mask.unsqueeze(0).to(device) for size, mask in analysis.masks.items()}
    stats = analysis.stats

    # One torch thread: a dozen memory-bound passes over the image, which a second thread does not
    # speed up (see score_views), and bilinear interpolation on the CPU differs in the last bits
    # between thread counts: this way run, stats and sweep give the same numbers with any count.
    with single_threaded(device):
        randomized = run_apt(pixels, random_baseline_config(config, stats.vision_tokens, stats.base_tokens))
        full_hw = analysis.resized_hw
        vision = uniform_view(original, stats.vision_tokens, config, full_hw)
        llm = uniform_view(original, stats.llm_tokens * config.merge_size**2, config, full_hw)

        if config.scorer is Scorer.ENTROPY:
            base_entropy = analysis.maps[config.patch_size].to(device)
        else:
            maps = compute_patch_entropy_batched(pixels, config.patch_size, num_scales=1, bins=config.bins)
            base_entropy = maps[config.patch_size][0]
        return FidelityViews(
            reference=reference,
            apt=reconstruct(reference, masks, config.patch_size),
            uniform_equal_vision=_on(vision, device),
            uniform_equal_llm=_on(llm, device),
            random_equal_vision=reconstruct(reference, randomized.selection.masks, config.patch_size),
            random_stats=randomized.stats[0],
            detail=detail_mask(base_entropy, full_hw, config.patch_size),
        )


def score_views(views: FidelityViews, stats: TokenStats) -> Fidelity:
    """PSNR, SSIM and ``psnr_detail`` of every view (the four SSIMs in one call of :func:`ssim`, on threads).

    Args:
        views: From :func:`fidelity_views`.
        stats: APT's token counts (``analysis.stats``).

    Returns:
        The :class:`Fidelity` record.
    """
    images = [views.apt, views.uniform_equal_vision.image, views.uniform_equal_llm.image, views.random_equal_vision]
    similarity = ssim(views.reference, images)  # the candidates on the caller's torch thread count
    costs = [
        (stats.vision_tokens, stats.llm_tokens, None),
        (views.uniform_equal_vision.vision_tokens, views.uniform_equal_vision.llm_tokens,
         views.uniform_equal_vision.resized_hw),
        (views.uniform_equal_llm.vision_tokens, views.uniform_equal_llm.llm_tokens, views.uniform_equal_llm.resized_hw),
        (views.random_stats.vision_tokens, views.random_stats.llm_tokens, None),
    ]
    scores = []
    # One thread for the error maps and their sums, as for the views: small memory-bound ops that a
    # second thread does not speed up, and that wait at an OpenMP barrier whenever another process
    # holds a core (docs/performance.md, "One thread on the CPU").
    with single_threaded(views.reference.device):
        for image, value, (vision_tokens, llm_tokens, resized) in zip(images, similarity, costs):
            error = pixel_error(views.reference, image)
            scores.append(FidelityScore(
                psnr=psnr_of_error(error),
                ssim=value,
                psnr_detail=psnr_of_error(error, views.detail),
                vision_tokens=vision_tokens,
                llm_tokens=llm_tokens,
                resized_height=None if resized is None else resized[0],
                resized_width=None if resized is None else resized[1],
            ))
    return Fidelity(*scores)


def measure_fidelity(analysis: ImageAnalysis, original: Image.Image) -> Fidelity:
    """The ``fidelity`` block of one analysed image (docs/fidelity.md).

    Args:
        analysis: The image's analysis (:func:`apt_viz.analysis.analyze_image`).
        original: The image as loaded, before the resize (the uniform baselines start from it).

    Returns:
        The :class:`Fidelity` record; ``to_dict()`` is the ``stats.json`` block.
    """
    return score_views(fidelity_views(analysis, original), analysis.stats)


def _on(view: UniformView, device: torch.device) -> UniformView:
    return replace(view, image=view.image.to(device))
