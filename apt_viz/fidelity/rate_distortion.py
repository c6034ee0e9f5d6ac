"""Rate-distortion of one image: PSNR and SSIM against vision and LLM tokens, APT against its baselines.

``sweep --fidelity`` (docs/fidelity.md, "Rate-distortion") measures, on one image:

- ``apt:<scorer>``: APT at every swept setting, for every scorer of :data:`RD_SCORERS`; each point
  also carries the PSNR of the uniform baselines at its own cost, matched as in ``run``
  (``uniform_vision_psnr``, ``uniform_llm_psnr``: the numbers of ``stats.json``'s ``fidelity``);
- ``uniform``: the stock processor over a ladder of ``max_pixels`` (:data:`UNIFORM_LADDER`);
- ``random``: the random baseline at the vision tokens of the sweep's own scorer;
- ``llm_budget:<scorer>``: the budget in LLM tokens (``budget_unit=llm``) of the sweep's own scorer,
  to show where it lands against uniform.

:func:`crossover` marks where APT stops beating uniform. Every number is that of
:mod:`.measure` for the same setting (a test pins it).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Union

import torch

from ..core.config import APTConfig, BudgetUnit, Method, Scorer
from ..core.pipeline import run_apt
from ..core.scoring import single_threaded
from ..imaging import pil_to_tensor
from .measure import random_baseline_config
from .metrics import pixel_error, psnr_of_error, ssim
from .reconstruction import reconstruct
from .uniform import UniformView, matched_max_pixels, uniform_view

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ..analysis import ImageAnalysis

RD_SCORERS = (Scorer.ENTROPY, Scorer.LAPLACIAN, Scorer.UPSAMPLE_MSE)
# Fractions of N the uniform ladder aims at (each matched to the closest count the processor gives).
UNIFORM_LADDER = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
LLM_BUDGET_ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # the LLM-token budget when the sweep is not a budget
AXES = ("vision_tokens", "llm_tokens")

Value = Union[float, tuple[float, ...], int, None]  # alpha, thresholds, or max_pixels (uniform)


@dataclass(frozen=True)
class RDPoint:
    """One setting of one curve on one image (a ladder point's psnr equals its uniform_* would, so those are unset)."""

    value: Value  # the swept alpha / thresholds; uniform: max_pixels
    vision_tokens: int
    llm_tokens: int
    psnr: float | None  # None: exact
    ssim: float | None
    uniform_vision_psnr: float | None = None  # apt: uniform at this point's vision tokens (run's uniform_equal_vision)
    uniform_llm_psnr: float | None = None  # apt: uniform at this point's LLM tokens (run's uniform_equal_llm)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if isinstance(self.value, tuple):
            out["value"] = list(self.value)
        return out


@dataclass(frozen=True)
class ImageRD:
    """The rate-distortion curves of one image: {curve name: points in sweep order}."""

    source: str | None
    base_tokens: int
    curves: dict[str, list[RDPoint]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``image``, ``base_tokens``, ``curves`` and each APT curve's ``crossover``."""
        return {
            "image": self.source or "",
            "base_tokens": self.base_tokens,
            "curves": {name: [point.to_dict() for point in points] for name, points in self.curves.items()},
            "crossover": crossovers(self.curves),
        }


def crossover(points: Sequence[RDPoint], axis: str) -> dict[str, Any]:
    """Where APT stops beating uniform along one axis: the threshold-debugging answer.

    APT beats uniform at a point when its PSNR is at least that of uniform at the point's own
    cost (``uniform_vision_psnr`` or ``uniform_llm_psnr``; an exact image counts as +inf, so two
    exact images tie, and a tie counts as a win). Going down from the most tokens, the crossover
    is the last point reached before the first loss: the smallest token count from which APT wins
    at every point with at least as many tokens.

    Args:
        points: An APT curve (any order).
        axis: ``vision_tokens`` or ``llm_tokens``.

    Returns:
        ``{"value", "tokens", "wins", "points"}``: the setting and token count of the crossover
        (both None when APT loses at the point with the most tokens), the number of points where
        APT wins, and the number of points.
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    field = "uniform_vision_psnr" if axis == "vision_tokens" else "uniform_llm_psnr"
    ordered = sorted(points, key=lambda point: -getattr(point, axis))  # most tokens first (stable on ties)
    wins = [_at_least(point.psnr, getattr(point, field)) for point in ordered]
    last = None
    for point, win in zip(ordered, wins):
        if not win:
            break
        last = point
    value = last.value if last is not None else None
    return {
        "value": list(value) if isinstance(value, tuple) else value,
        "tokens": None if last is None else getattr(last, axis),
        "wins": sum(wins),
        "points": len(ordered),
    }


def crossovers(curves: dict[str, list[RDPoint]]) -> dict[str, dict[str, dict[str, Any]]]:
    """:func:`crossover` of every APT curve (``apt:*`` and ``llm_budget:*``) on both axes."""
    return {name: {axis: crossover(points, axis) for axis in AXES}
            for name, points in curves.items() if name.startswith(("apt:", "llm_budget:"))}


def _at_least(apt: float | None, uniform: float | None) -> bool:
    return apt is None or (uniform is not None and apt >= uniform)


def image_rate_distortion(
    analysis: ImageAnalysis,
    original: Image.Image,
    method: Method | str,
    values: Sequence[Any],
    *,
    scorers: Sequence[Scorer] = RD_SCORERS,
    analyses: dict[Scorer, ImageAnalysis] | None = None,
) -> ImageRD:
    """Every curve of one image (see the module docstring).

    Args:
        analysis: The image analysed with the sweep's settings (its scorer is the sweep's own).
        original: The image as loaded (the uniform baselines resize it).
        method: The swept selection method.
        values: The swept alphas (v2, budget) or threshold tuples (v1).
        scorers: The scorers of the APT curves.
        analyses: Analyses of the same image under other scorers, if already made (else made here).

    Returns:
        The :class:`ImageRD`.
    """
    from ..analysis import analyze_image

    method = Method(method)
    config = analysis.config
    reference = pil_to_tensor(analysis.resized) / 255.0  # on the CPU, as stats.json's fidelity is measured
    full_hw = analysis.resized_hw
    uniform = _UniformCache(original, config, full_hw, reference)
    known = dict(analyses or {})
    known.setdefault(config.scorer, analysis)

    # one torch thread, as measure_fidelity: bilinear interpolation on the CPU differs in the last bits
    # between thread counts, and these points must equal run's stats.json at the same setting
    with single_threaded("cpu"):
        curves: dict[str, list[RDPoint]] = {}
        for scorer in scorers:
            scored = known.get(scorer) or analyze_image(original, config.replace(scorer=scorer), source=analysis.source)
            points = []
            for value in values:
                setting = {"thresholds": value} if method is Method.V1 else {"alpha": value}
                chosen = scored.reselect(method=method, **setting)
                points.append(_apt_point(chosen, value, reference, uniform))
            curves[f"apt:{scorer}"] = points

        own = curves.get(f"apt:{config.scorer}")
        if own is None:  # the sweep's scorer is not among the RD scorers: its curve too
            own = [_apt_point(analysis.reselect(method=method, **({"thresholds": v} if method is Method.V1 else
                                                                 {"alpha": v})), v, reference, uniform)
                   for v in values]
            curves[f"apt:{config.scorer}"] = own
        curves["random"] = [_random_point(analysis, point, reference) for point in own]
        alphas = values if method is Method.BUDGET else LLM_BUDGET_ALPHAS
        curves[f"llm_budget:{config.scorer}"] = [
            _apt_point(analysis.reselect(method=Method.BUDGET, alpha=alpha, budget_unit=BudgetUnit.LLM), alpha,
                       reference, uniform)
            for alpha in alphas
        ]
        base = analysis.stats.base_tokens
        # one point per rung (two rungs may match the same max_pixels): the rungs line up across images
        curves["uniform"] = [uniform.point(uniform.view(max(1, round(f * base)))) for f in UNIFORM_LADDER]
        return ImageRD(analysis.source, base, curves)


def mean_curves(images: Sequence[ImageRD]) -> dict[str, Any]:
    """The folder's curves: per curve and point, the mean and population std over the images.

    Points line up by position (the same swept value, or the same rung of the uniform ladder).
    A PSNR is averaged over the images where it is finite (an exact image has none; ``images``
    counts the others). The crossovers are those of the mean curves.

    Args:
        images: Every image's :class:`ImageRD` (the same curves and values).

    Returns:
        ``{"images": n, "curves": {name: [point]}, "crossover": ...}``; a point has ``value``
        (uniform: null), the means ``vision_tokens``, ``llm_tokens``, ``psnr``, ``ssim``,
        ``uniform_vision_psnr``, ``uniform_llm_psnr``, the spreads ``psnr_std``, ``ssim_std`` and
        ``images``.
    """
    import statistics

    def spread(values: Sequence[float | None]) -> tuple[float | None, float | None]:
        finite = [value for value in values if value is not None]
        return (statistics.fmean(finite), statistics.pstdev(finite)) if finite else (None, None)

    curves: dict[str, list[dict[str, Any]]] = {}
    means: dict[str, list[RDPoint]] = {}
    for name, first in images[0].curves.items():
        points, mean_points = [], []
        for index, point in enumerate(first):
            group = [image.curves[name][index] for image in images]
            psnr, psnr_std = spread([p.psnr for p in group])
            similarity, ssim_std = spread([p.ssim for p in group])
            vision, llm = (statistics.fmean(getattr(p, axis) for p in group) for axis in AXES)
            uniform_vision, _ = spread([p.uniform_vision_psnr for p in group])
            uniform_llm, _ = spread([p.uniform_llm_psnr for p in group])
            value = None if name == "uniform" else point.value
            points.append({
                "value": list(value) if isinstance(value, tuple) else value, "vision_tokens": vision,
                "llm_tokens": llm, "psnr": psnr, "psnr_std": psnr_std, "ssim": similarity, "ssim_std": ssim_std,
                "uniform_vision_psnr": uniform_vision, "uniform_llm_psnr": uniform_llm,
                "images": sum(p.psnr is not None for p in group),
            })
            mean_points.append(RDPoint(value, vision, llm, psnr, similarity,  # type: ignore[arg-type]
                                       uniform_vision, uniform_llm))
        curves[name], means[name] = points, mean_points
    return {"images": len(images), "curves": curves, "crossover": crossovers(means)}


def _scores(reference: torch.Tensor, image: torch.Tensor, psnr: bool = True) -> tuple[float | None, float | None]:
    (value,) = ssim(reference, [image])
    return (psnr_of_error(pixel_error(reference, image)) if psnr else None), value


def _apt_point(chosen: ImageAnalysis, value: Value, reference: torch.Tensor, uniform: _UniformCache) -> RDPoint:
    masks = {size: mask.unsqueeze(0) for size, mask in chosen.masks.items()}
    psnr, similarity = _scores(reference, reconstruct(reference, masks, chosen.config.patch_size))
    stats = chosen.stats
    return RDPoint(
        value=value, vision_tokens=stats.vision_tokens, llm_tokens=stats.llm_tokens, psnr=psnr, ssim=similarity,
        uniform_vision_psnr=uniform.psnr(stats.vision_tokens),
        uniform_llm_psnr=uniform.psnr(stats.llm_tokens * chosen.config.merge_size**2),
    )


def _random_point(analysis: ImageAnalysis, apt: RDPoint, reference: torch.Tensor) -> RDPoint:
    # as any setting but a budget in vision tokens: budget alpha = vision tokens / N, whose T is APT's vision tokens
    setting = analysis.config.replace(method=Method.V2, alpha=1.0, thresholds=None, device="cpu")
    config = random_baseline_config(setting, apt.vision_tokens, analysis.stats.base_tokens)
    randomized = run_apt(reference, config)  # random maps depend on the size and the seed only
    psnr, similarity = _scores(reference, reconstruct(reference, randomized.selection.masks, config.patch_size))
    stats = randomized.stats[0]
    return RDPoint(value=apt.value, vision_tokens=stats.vision_tokens, llm_tokens=stats.llm_tokens, psnr=psnr,
                   ssim=similarity)


class _UniformCache:
    """Uniform views by matched ``max_pixels``: each resized once, its PSNR and SSIM computed once."""

    def __init__(self, original: Image.Image, config: APTConfig, full_hw: tuple[int, int], reference: torch.Tensor):
        self.original, self.config, self.full_hw, self.reference = original, config, full_hw, reference
        self._views: dict[int, UniformView] = {}
        self._psnr: dict[int, float | None] = {}
        self._points: dict[int, RDPoint] = {}

    def view(self, target_patches: int) -> UniformView:
        """The stock processor's view at the ``max_pixels`` matched on ``target_patches`` (as ``run``'s)."""
        max_pixels = matched_max_pixels((self.original.height, self.original.width), target_patches, self.config)
        if max_pixels not in self._views:
            self._views[max_pixels] = uniform_view(self.original, target_patches, self.config, self.full_hw)
        return self._views[max_pixels]

    def psnr(self, target_patches: int) -> float | None:
        view = self.view(target_patches)
        if view.max_pixels not in self._psnr:
            self._psnr[view.max_pixels] = psnr_of_error(pixel_error(self.reference, view.image))
        return self._psnr[view.max_pixels]

    def point(self, view: UniformView) -> RDPoint:
        """A point of the ladder."""
        if view.max_pixels not in self._points:
            _, similarity = _scores(self.reference, view.image, psnr=False)
            self._points[view.max_pixels] = RDPoint(
                value=view.max_pixels, vision_tokens=view.vision_tokens, llm_tokens=view.llm_tokens,
                psnr=self.psnr(view.vision_tokens), ssim=similarity)
        return self._points[view.max_pixels]
