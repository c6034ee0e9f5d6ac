"""Every setting of one APT analysis, typed and validated in one place.

:class:`APTConfig` is what the CLI, :class:`~apt_viz.core.tokenizer.PatchTokenizer` and the
Hugging Face processors all build; :func:`check_selection` is the one check of a selection
setting, used by ``APTConfig`` and by the by-name entry :func:`~apt_viz.core.selection.select_patches`.
The choices are ``str`` Enums, so plain strings are accepted everywhere and JSON stays plain.
The processor settings (patch size, merge size, min/max pixels, mean and std) default to those of
the model family (:mod:`apt_viz.core.families`).
"""
from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Union

from ._choices import as_choice
from .families import DEFAULT_FAMILY, FAMILIES, PROCESSOR_FIELDS, ModelFamily
from .qwen2vl import MERGE_SIZE, ResizeSpec


class Method(str, enum.Enum):
    """Patch selection method (``patch_selection_method``)."""

    V1 = "v1"  # fixed thresholds
    V2 = "v2"  # thresholds alpha * mean(score) per image and scale
    BUDGET = "budget"  # round(alpha * N) tokens

    def __str__(self) -> str:
        return self.value


class Scorer(str, enum.Enum):
    """Importance scorer: higher score = more detail = split."""

    ENTROPY = "entropy"
    LAPLACIAN = "laplacian"
    UPSAMPLE_MSE = "upsample_mse"
    RANDOM = "random"  # seeded uniform maps: the random baseline of docs/fidelity.md

    def __str__(self) -> str:
        return self.value


class BudgetUnit(str, enum.Enum):
    """What the budget method's target counts (docs/contract.md, section 10)."""

    VISION = "vision"  # T = round(alpha * N) vision tokens
    LLM = "llm"  # T = round(alpha * L) LLM tokens, L = the stock LLM tokens (N / merge_size^2)

    def __str__(self) -> str:
        return self.value


class Aggregate(str, enum.Enum):
    """Per-cell aggregate of the pixel maps of ``laplacian`` and ``upsample_mse``."""

    MEAN = "mean"
    MAX = "max"
    STD = "std"

    def __str__(self) -> str:
        return self.value


class Backend(str, enum.Enum):
    """Resize backend, as transformers names its image-processor backends."""

    TORCHVISION = "torchvision"  # what AutoImageProcessor loads for Qwen2-VL in transformers 5
    PIL = "pil"

    def __str__(self) -> str:
        return self.value


MethodT = Union[str, Method]
ScorerT = Union[str, Scorer]
BudgetUnitT = Union[str, BudgetUnit]
AggregateT = Union[str, Aggregate]
BackendT = Union[str, Backend]

METHODS = tuple(m.value for m in Method)
SCORERS = tuple(s.value for s in Scorer)
BUDGET_UNITS = tuple(u.value for u in BudgetUnit)
# Merge sizes for which a split's LLM-token cost is a property of the split alone (docs/contract.md,
# section 10): with 2, a merge group is exactly one cell of the second grid.
LLM_BUDGET_MERGE_SIZES = (1, 2)
AGGREGATES = tuple(a.value for a in Aggregate)
BACKENDS = tuple(b.value for b in Backend)
DEFAULT_THRESHOLDS = (3.0, 2.0)  # official APT: 28 px, 56 px
MAX_SCALES = 6


def default_thresholds(num_scales: int) -> tuple[float, ...]:
    """The official APT thresholds, one per scale above the base (3.0 for 28 px, 2.0 for 56 px)."""
    if num_scales - 1 > len(DEFAULT_THRESHOLDS):
        raise ValueError(
            f"v1 with {num_scales} scales needs {num_scales - 1} thresholds; the defaults (3, 2) cover 3 scales"
        )
    return DEFAULT_THRESHOLDS[: num_scales - 1]


def check_selection(
    method: MethodT,
    alpha: float | None,
    thresholds: Sequence[float] | None,
    num_scales: int,
    *,
    budget_unit: BudgetUnitT = BudgetUnit.VISION,
    merge_size: int = MERGE_SIZE,
) -> Method:
    """Validate a selection setting; return the method as a :class:`Method`.

    Args:
        method: ``v1``, ``v2`` or ``budget``.
        alpha: v2: > 0; budget: in (0, 1]; not used by v1.
        thresholds: v1: ``num_scales - 1`` finite numbers (None: the official defaults).
        num_scales: Number of patch scales.
        budget_unit: budget: ``vision`` or ``llm`` (the latter needs a merge size of 1 or 2);
            not used by v1 and v2.
        merge_size: The spatial merge (m) that turns base patches into LLM tokens.

    Raises:
        ValueError: one line naming what is wrong.
    """
    method = Method(as_choice(Method, method, "patch_selection_method"))
    unit = as_choice(BudgetUnit, budget_unit, "budget_unit")
    if method is Method.BUDGET and unit is BudgetUnit.LLM and merge_size not in LLM_BUDGET_MERGE_SIZES:
        raise ValueError(
            f"budget_unit llm needs merge_size 1 or 2 (a split's LLM-token cost is then its own), got {merge_size}"
        )
    if method is not Method.V1:
        if alpha is None or isinstance(alpha, bool) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be > 0 for {method}, got {alpha}")
        if method is Method.BUDGET and alpha > 1:
            raise ValueError(f"alpha must be in (0, 1] for budget (a fraction of the base patches), got {alpha}")
    elif thresholds is None:
        default_thresholds(num_scales)
    else:
        if len(thresholds) != num_scales - 1:
            raise ValueError(
                f"v1 needs {num_scales - 1} thresholds (one per scale above the base), got {len(thresholds)}"
            )
        if not all(math.isfinite(t) for t in thresholds):
            raise ValueError(f"thresholds must be finite numbers, got {list(thresholds)}")
    return method


@dataclass(frozen=True)
class APTConfig:
    """Settings of an APT analysis. Defaults are Qwen2-VL's and the official APT ones.

    ``model_family`` fills in every processor setting left at ``None`` (the default) with that
    family's value: ``APTConfig(model_family="qwen3-vl")`` has patch size 16 and Qwen3-VL's
    min/max pixels, mean and std; a setting given explicitly is kept. After construction every
    one of them is set. Choices may be given as strings; they are stored as their Enum (which
    compares equal to the string). Construction validates everything and raises a one-line
    ``ValueError``.
    """

    model_family: ModelFamily = DEFAULT_FAMILY
    # The processor settings (PROCESSOR_FIELDS): None takes the family's value in __post_init__.
    patch_size: int = None  # type: ignore[assignment]
    num_scales: int = 3
    merge_size: int = None  # type: ignore[assignment]
    temporal_patch_size: int = None  # type: ignore[assignment]
    min_pixels: int = None  # type: ignore[assignment]
    max_pixels: int = None  # type: ignore[assignment]
    image_mean: tuple[float, ...] = None  # type: ignore[assignment]  # recorded; scoring reads raw pixels
    image_std: tuple[float, ...] = None  # type: ignore[assignment]
    resize: bool = True
    backend: Backend = Backend.TORCHVISION
    scorer: Scorer = Scorer.ENTROPY
    bins: int = 512
    aggregate: Aggregate = Aggregate.MEAN  # laplacian / upsample_mse cell aggregate
    seed: int = 0  # random scorer
    method: Method = Method.V1
    alpha: float = 1.0
    thresholds: tuple[float, ...] | None = field(default=None)  # v1; None -> (3.0, 2.0)
    budget_unit: BudgetUnit = BudgetUnit.VISION  # budget: what alpha is a fraction of
    device: str = "cpu"

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # frozen: normalise once, here
        set_field(self, "model_family", as_choice(ModelFamily, self.model_family, "model_family"))
        family = FAMILIES[self.model_family]
        for name in PROCESSOR_FIELDS:
            if getattr(self, name) is None:
                set_field(self, name, getattr(family, name))
        for name in ("image_mean", "image_std"):
            set_field(self, name, _channel_values(name, getattr(self, name)))
        set_field(self, "backend", as_choice(Backend, self.backend, "backend"))
        set_field(self, "scorer", as_choice(Scorer, self.scorer, "scorer"))
        set_field(self, "aggregate", as_choice(Aggregate, self.aggregate, "aggregate"))
        set_field(self, "budget_unit", as_choice(BudgetUnit, self.budget_unit, "budget_unit"))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if self.thresholds is not None:
            if isinstance(self.thresholds, (str, bytes)) or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) for t in self.thresholds
            ):
                raise ValueError(f"thresholds must be a list of numbers, got {self.thresholds!r}")
            set_field(self, "thresholds", tuple(float(t) for t in self.thresholds))
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise ValueError(f"alpha must be a number, got {self.alpha!r}")
        set_field(self, "alpha", float(self.alpha))
        self._validate_sizes()
        if self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:"):
            raise ValueError(f"unknown device {self.device!r}; choose auto, cpu or cuda")
        set_field(self, "method", check_selection(
            self.method, self.alpha, self.thresholds, self.num_scales,
            budget_unit=self.budget_unit, merge_size=self.merge_size,
        ))

    def _validate_sizes(self) -> None:
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
        if self.num_scales > MAX_SCALES:
            largest = self.patch_size * 2 ** (MAX_SCALES - 1)
            raise ValueError(
                f"num_scales must be at most {MAX_SCALES} (patches up to {largest} px), got {self.num_scales}"
            )
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")
        factor = self.patch_size * self.merge_size
        if self.resize and self.max_pixels < factor * factor:
            raise ValueError(
                f"max_pixels ({self.max_pixels}) is below one merged patch ({factor}x{factor} = {factor * factor})"
            )

    @property
    def resize_spec(self) -> ResizeSpec:
        return ResizeSpec(self.patch_size, self.merge_size, self.min_pixels, self.max_pixels, self.resize)

    @property
    def patch_sizes(self) -> list[int]:
        """Cell size of every scale, smallest first: ``[p, 2p, 4p, ...]``."""
        return [self.patch_size * 2**i for i in range(self.num_scales)]

    def effective_thresholds(self) -> tuple[float, ...]:
        """The v1 thresholds in use (the defaults when none were given)."""
        return self.thresholds if self.thresholds is not None else default_thresholds(self.num_scales)

    def replace(self, **changes: Any) -> APTConfig:
        """A validated copy with ``changes`` applied.

        A new ``model_family`` brings its own processor settings, except those given in the same call.
        """
        if "model_family" in changes and changes["model_family"] != self.model_family:
            changes = {**dict.fromkeys(PROCESSOR_FIELDS), **changes}
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: Enums as their strings, thresholds, mean and std as lists."""
        out = asdict(self)
        for name in ("model_family", "backend", "scorer", "aggregate", "method", "budget_unit"):
            out[name] = str(out[name])
        for name in ("image_mean", "image_std"):
            out[name] = list(out[name])
        out["thresholds"] = list(self.thresholds) if self.thresholds is not None else None
        return out


def _channel_values(name: str, values: Any) -> tuple[float, ...]:
    """``image_mean`` / ``image_std`` as a tuple of 3 finite floats (std > 0); a one-line ``ValueError`` otherwise."""
    if (
        isinstance(values, (str, bytes))
        or not isinstance(values, Sequence)
        or len(values) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        or (name == "image_std" and not all(v > 0 for v in values))
    ):
        rule = "3 positive finite numbers" if name == "image_std" else "3 finite numbers"
        raise ValueError(f"{name} must be {rule} (one per RGB channel), got {values!r}")
    return tuple(float(v) for v in values)
