"""``APTConfig``: every setting of one APT analysis, validated in one place (CLI, pipeline, hf)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

from .imaging import MAX_PIXELS, MERGE_SIZE, MIN_PIXELS, PATCH_SIZE, TEMPORAL_PATCH_SIZE, ResizeSpec

SCORERS = ("entropy", "laplacian", "upsample_mse")
METHODS = ("v1", "v2", "budget")
AGGREGATES = ("mean", "max", "std")
DEFAULT_THRESHOLDS = (3.0, 2.0)


def default_thresholds(num_scales: int) -> list[float]:
    """The APT defaults, one per scale above the base (3.0 for 28 px, 2.0 for 56 px)."""
    if num_scales - 1 > len(DEFAULT_THRESHOLDS):
        raise ValueError(f"no default thresholds for {num_scales} scales; pass {num_scales - 1} thresholds")
    return list(DEFAULT_THRESHOLDS[: num_scales - 1])


def check_selection_args(
    method: str, alpha: float | None, thresholds: Sequence[float] | None, num_scales: int
) -> None:
    """Raise ``ValueError`` with a one-line reason when the settings cannot be used together."""
    if method not in METHODS:
        raise ValueError(f"unknown patch_selection_method {method!r}; choose one of {', '.join(METHODS)}")
    if method in ("v2", "budget"):
        if alpha is None or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be > 0 for {method}, got {alpha}")
        if method == "budget" and alpha > 1:
            raise ValueError(f"alpha must be in (0, 1] for budget (a fraction of the base patches), got {alpha}")
    if method == "v1" and thresholds is not None and len(thresholds) != num_scales - 1:
        raise ValueError(
            f"v1 needs {num_scales - 1} thresholds (one per scale above the base), got {len(thresholds)}"
        )


@dataclass(frozen=True)
class APTConfig:
    """Settings of an APT analysis. Defaults are Qwen2-VL's and the official APT ones."""

    patch_size: int = PATCH_SIZE
    num_scales: int = 3
    merge_size: int = MERGE_SIZE
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    resize: bool = True
    scorer: str = "entropy"
    bins: int = 512
    aggregate: str = "mean"  # laplacian / upsample_mse cell aggregate
    method: str = "v1"
    alpha: float = 1.0
    thresholds: tuple[float, ...] | None = None  # v1; None -> (3.0, 2.0)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.thresholds is not None:
            object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        self.validate()

    @property
    def resize_spec(self) -> ResizeSpec:
        return ResizeSpec(self.patch_size, self.merge_size, self.min_pixels, self.max_pixels, self.resize)

    @property
    def patch_sizes(self) -> list[int]:
        return [self.patch_size * 2**i for i in range(self.num_scales)]

    def effective_thresholds(self) -> tuple[float, ...]:
        """The v1 thresholds in use (the defaults when none were given)."""
        if self.thresholds is not None:
            return self.thresholds
        return tuple(default_thresholds(self.num_scales))

    def validate(self) -> None:
        """Raise ``ValueError`` (one line) for settings that cannot work together."""
        positive = {
            "patch_size": self.patch_size,
            "num_scales": self.num_scales,
            "merge_size": self.merge_size,
            "temporal_patch_size": self.temporal_patch_size,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "bins": self.bins,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_scales > 6:
            raise ValueError(f"num_scales must be at most 6 (patches up to {self.patch_size * 32} px), got {self.num_scales}")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")
        factor = self.patch_size * self.merge_size
        if self.resize and self.max_pixels < factor * factor:
            raise ValueError(
                f"max_pixels ({self.max_pixels}) is below one merged patch ({factor}x{factor} = {factor * factor})"
            )
        if self.scorer not in SCORERS:
            raise ValueError(f"unknown scorer {self.scorer!r}; choose one of {', '.join(SCORERS)}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {self.aggregate!r}; choose one of {', '.join(AGGREGATES)}")
        if self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:"):
            raise ValueError(f"unknown device {self.device!r}; choose auto, cpu or cuda")
        if self.method == "v1" and self.thresholds is None and self.num_scales - 1 > 2:
            raise ValueError(f"v1 with {self.num_scales} scales needs {self.num_scales - 1} thresholds")
        check_selection_args(self.method, self.alpha, self.thresholds, self.num_scales)

    def replace(self, **changes: Any) -> "APTConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["thresholds"] = list(self.thresholds) if self.thresholds is not None else None
        return out
