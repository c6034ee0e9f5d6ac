"""Run one selection method over a range of settings (alpha, or v1 threshold tuples).

The importance maps of an image do not depend on the selection settings, so they are computed
once per image (by :func:`apt_viz.analysis.analyze_image`) and only the selection and token count
are re-run per value (:meth:`ImageAnalysis.reselect`). Folder results are aggregated per value
(mean, population std, min, max).
Pure: no printing, no files.
"""
from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from .core.config import APTConfig, check_selection

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from .analysis import ImageAnalysis
    from .core.accounting import TokenStats
    from .core.selection import BudgetInfo
    from .fidelity.rate_distortion import ImageRD

# An alpha (v2, budget) or a tuple of thresholds, one per scale above the base (v1).
SweepValue = Union[float, tuple[float, ...]]

DEFAULT_ALPHA_RANGES = {"budget": (0.1, 1.0, 0.1), "v2": (0.5, 1.5, 0.1)}
DEFAULT_V1_RANGE = (2.0, 6.0, 0.5)  # first threshold t; the next ones are t - 1, t - 2, ...
METRICS = ("vision_tokens", "retention", "llm_tokens", "llm_retention")


# --- values --------------------------------------------------------------------------------------

def float_range(start: float, stop: float, step: float) -> list[float]:
    """``start, start + step, ..., stop`` (inclusive), without floating-point drift (0.1 * 3 -> 0.3)."""
    if not all(math.isfinite(x) for x in (start, stop, step)) or step <= 0 or stop < start:
        raise ValueError(f"range {start:g}:{stop:g}:{step:g} needs start <= stop and step > 0")
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > 10_000:
        raise ValueError(f"range {start:g}:{stop:g}:{step:g} has {count} values; use a larger step")
    return [round(start + i * step, 10) for i in range(count)]


def default_values(method: str, num_scales: int = 3) -> list[SweepValue]:
    """The values swept when none are given.

    budget: alpha 0.1..1.0 step 0.1; v2: alpha 0.5..1.5 step 0.1; v1: (t, t-1) for t in
    2.0..6.0 step 0.5, i.e. the official default (3, 2) moved up and down together.
    """
    if method in DEFAULT_ALPHA_RANGES:
        return list(float_range(*DEFAULT_ALPHA_RANGES[method]))
    if method == "v1":
        if num_scales - 1 > 2:
            raise ValueError(f"no default v1 threshold grid for {num_scales} scales; pass --thresholds-grid")
        return [tuple(round(t - i, 10) for i in range(num_scales - 1)) for t in float_range(*DEFAULT_V1_RANGE)]
    raise ValueError(f"unknown patch_selection_method {method!r}")


def parse_alpha_values(text: str) -> list[float]:
    """``"0.1,0.2,0.5"`` or a range ``"0.1:1.0:0.1"`` (start:stop:step, inclusive), or both mixed."""
    values: list[float] = []
    for item in _items(text, ","):
        if ":" in item:
            parts = item.split(":")
            if len(parts) != 3:
                raise ValueError(f"range {item!r} must be start:stop:step")
            values.extend(float_range(*(_number(part, item) for part in parts)))
        else:
            values.append(_number(item, item))
    return values


def parse_threshold_grid(text: str, num_scales: int = 3) -> list[tuple[float, ...]]:
    """``"3,2;4,3;5,4"``: tuples separated by ``;``, thresholds within a tuple by ``,``."""
    grid = []
    for item in _items(text, ";"):
        pair = tuple(_number(part, item) for part in item.split(","))
        if len(pair) != num_scales - 1:
            raise ValueError(
                f"threshold tuple {item!r} needs {num_scales - 1} values (one per scale above the base)"
            )
        grid.append(pair)
    return grid


def _items(text: str, separator: str) -> list[str]:
    items = [item.strip() for item in text.split(separator) if item.strip()]
    if not items:
        raise ValueError(f"no values in {text!r}")
    return items


def _number(text: str, context: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text.strip()!r} in {context!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text.strip()!r} in {context!r} is not a finite number")
    return value


def check_values(method: str, values: Sequence[SweepValue], num_scales: int) -> None:
    """Raise a one-line ``ValueError`` unless every value is usable with ``method``."""
    if not values:
        raise ValueError("nothing to sweep: no values")
    for value in values:
        if method == "v1":
            if not isinstance(value, tuple):
                raise ValueError(f"v1 sweeps threshold tuples, got {value!r}")
            check_selection(method, None, value, num_scales)
        else:
            if isinstance(value, tuple):
                raise ValueError(f"{method} sweeps alpha values, got thresholds {value!r}")
            check_selection(method, value, None, num_scales)


def format_value(value: SweepValue | Sequence[float | None]) -> str:
    """``0.3`` -> ``"0.3"``; ``(3.0, 2.0)`` -> ``"3;2"`` (the ``--thresholds-grid`` syntax; None -> ``-``)."""
    if isinstance(value, (tuple, list)):
        return ";".join("-" if t is None else f"{t:g}" for t in value)
    return f"{value:g}"


# --- one image -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SweepPoint:
    """The outcome of one value on one image."""

    value: SweepValue
    stats: TokenStats
    thresholds: list[float | None] | None  # applied per scale above the base (v2: the effective ones)
    budget_info: BudgetInfo | None  # budget only

    @property
    def target_retention(self) -> float | None:
        return None if self.budget_info is None else self.budget_info.target_retention

    def metric(self, name: str) -> float:
        return float(getattr(self.stats, name))


@dataclass(frozen=True)
class ImageSweep:
    """All values of a sweep on one image."""

    source: str | None
    resized_hw: tuple[int, int]
    points: list[SweepPoint]
    rate_distortion: ImageRD | None = None  # sweep --fidelity


def sweep_analysis(analysis: ImageAnalysis, method: str, values: Sequence[SweepValue],
                   original: Image.Image | None = None) -> ImageSweep:
    """Select with ``method`` at every value, reusing the importance maps of ``analysis``.

    With ``original`` (the image as loaded) also the rate-distortion curves
    (:func:`apt_viz.fidelity.image_rate_distortion`).
    """
    check_values(method, values, analysis.config.num_scales)
    points = []
    for value in values:
        setting = {"thresholds": value} if method == "v1" else {"alpha": value}
        run = analysis.reselect(method=method, **setting)
        points.append(SweepPoint(value, run.stats, run.thresholds, run.budget_info))
    rd = None
    if original is not None:
        from .fidelity.rate_distortion import image_rate_distortion

        rd = image_rate_distortion(analysis, original, method, values)
    return ImageSweep(analysis.source, analysis.resized_hw, points, rd)


def sweep_image(
    image: Image.Image | str | os.PathLike,
    config: APTConfig,
    method: str,
    values: Sequence[SweepValue],
) -> ImageSweep:
    """Prepare and score ``image`` once with ``config``, then select at every value."""
    from .analysis import analyze_image

    check_values(method, values, config.num_scales)
    return sweep_analysis(analyze_image(image, config), method, values)


# --- many images ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spread:
    """Mean, population standard deviation, min and max of one metric over images."""

    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def of(cls, samples: Iterable[float]) -> Spread:
        data = list(samples)
        return cls(statistics.fmean(data), statistics.pstdev(data), min(data), max(data))


@dataclass(frozen=True)
class SweepRow:
    """One value of a sweep, aggregated over images."""

    method: str
    value: SweepValue
    images: int
    metrics: dict[str, Spread]  # keys: METRICS
    target_retention: float | None  # budget: mean of round(alpha * N) / N over the images

    def to_csv_dict(self) -> dict[str, str | int | float | None]:
        """The row of ``sweep_<method>.csv`` and of ``sweep --json`` (keys: :data:`CSV_COLUMNS`).

        A missing target retention (v1, v2) is None: written empty in the CSV, null in the JSON.
        """
        row: dict[str, str | int | float | None] = {
            "method": self.method, "value": format_value(self.value), "images": self.images
        }
        for name in METRICS:
            spread = self.metrics[name]
            row.update({f"{name}_{stat}": getattr(spread, stat) for stat in ("mean", "std", "min", "max")})
        row["target_retention"] = self.target_retention
        return row


CSV_COLUMNS = (
    "method", "value", "images",
    *(f"{name}_{stat}" for name in METRICS for stat in ("mean", "std", "min", "max")),
    "target_retention",
)
PER_IMAGE_CSV_COLUMNS = (
    "image", "method", "value", "vision_tokens", "base_tokens", "retention", "llm_tokens", "llm_retention", "thresholds"
)


def aggregate(sweeps: Sequence[ImageSweep], method: str) -> list[SweepRow]:
    """One :class:`SweepRow` per value, over every image (all sweeps must share their values)."""
    if not sweeps:
        raise ValueError("no image was swept")
    values = [point.value for point in sweeps[0].points]
    if any([point.value for point in sweep.points] != values for sweep in sweeps):
        raise ValueError("sweeps over different values cannot be aggregated")
    rows = []
    for index, value in enumerate(values):
        points = [sweep.points[index] for sweep in sweeps]
        targets = [point.target_retention for point in points if point.target_retention is not None]
        rows.append(
            SweepRow(
                method=method,
                value=value,
                images=len(points),
                metrics={name: Spread.of(point.metric(name) for point in points) for name in METRICS},
                # budget: T / N = round(alpha * N) / N, which varies slightly with N: the mean over images.
                target_retention=statistics.fmean(targets) if targets else None,
            )
        )
    return rows


def per_image_rows(sweeps: Sequence[ImageSweep], method: str) -> list[dict[str, object]]:
    """Long-format rows (one per image and value) for ``sweep_<method>_per_image.csv`` and ``sweep --json``.

    ``thresholds`` is None for budget (written empty in the CSV, null in the JSON).
    """
    rows = []
    for sweep in sweeps:
        for point in sweep.points:
            rows.append(
                {
                    "image": sweep.source or "",
                    "method": method,
                    "value": format_value(point.value),
                    "vision_tokens": point.stats.vision_tokens,
                    "base_tokens": point.stats.base_tokens,
                    "retention": point.stats.retention,
                    "llm_tokens": point.stats.llm_tokens,
                    "llm_retention": point.stats.llm_retention,
                    "thresholds": None if point.thresholds is None else format_value(point.thresholds),
                }
            )
    return rows
