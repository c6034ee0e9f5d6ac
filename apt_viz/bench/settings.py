"""What ``apt-viz bench`` measures (:class:`BenchSettings`) and what it found (:class:`BenchResult`)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from ..core.architectures import Architecture
from ..core.config import APTConfig, Method, Scorer, as_choice

RANDOM_WEIGHTS_NOTE = "random weights: speed only"
DEFAULT_ALPHAS = (0.1, 0.3, 0.5, 0.7, 1.0)
PARTS = ("vision", "prefill")


@dataclass(frozen=True)
class BenchSettings:
    """What ``apt-viz bench`` measures and how."""

    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    method: Method = Method.BUDGET
    scorer: Scorer = Scorer.ENTROPY
    batch_sizes: tuple[int, ...] = (1,)
    device: str = "cpu"
    warmup: int = 2
    repeats: int = 5
    question_tokens: int = 16  # the short question after each image
    megapixels: float | None = None  # scale every input to about this area first (None: as given)
    parts: tuple[str, ...] = PARTS

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", as_choice(Method, self.method, "patch_selection_method"))
        object.__setattr__(self, "scorer", as_choice(Scorer, self.scorer, "scorer"))
        if self.method is Method.V1:
            raise ValueError("bench sweeps alpha: use --patch-selection-method budget or v2 (v1 has thresholds, "
                             "no alpha)")
        if not self.alphas:
            raise ValueError("give at least one alpha")
        for alpha in self.alphas:
            self.config(alpha)  # a one-line ValueError for an alpha out of range
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError("batch sizes must be >= 1")
        if self.warmup < 0 or self.repeats < 1:
            raise ValueError("warmup must be >= 0 and repeats >= 1")
        if self.megapixels is not None and self.megapixels <= 0:
            raise ValueError("megapixels must be > 0")
        unknown = set(self.parts) - set(PARTS)
        if unknown or not self.parts:
            raise ValueError(f"parts must be among {', '.join(PARTS)}")

    def config(self, alpha: float, patch_size: int = 14, merge_size: int = 2) -> APTConfig:
        """The APT settings of one alpha."""
        return APTConfig(method=self.method, alpha=alpha, scorer=self.scorer, patch_size=patch_size,
                         merge_size=merge_size)


@dataclass(frozen=True)
class Timing:
    """Wall-clock times of the repeated runs of one case (milliseconds)."""

    times_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def quartiles_ms(self) -> tuple[float, float]:
        if len(self.times_ms) == 1:
            return self.times_ms[0], self.times_ms[0]
        q1, _, q3 = statistics.quantiles(self.times_ms, n=4, method="inclusive")
        return q1, q3

    def to_dict(self) -> dict[str, Any]:
        q1, q3 = self.quartiles_ms
        return {"median_ms": self.median_ms, "q1_ms": q1, "q3_ms": q3, "min_ms": min(self.times_ms),
                "max_ms": max(self.times_ms), "times_ms": list(self.times_ms)}


@dataclass(frozen=True)
class BenchRow:
    """One batch size under one setting: stock (``alpha`` None) or APT at ``alpha``."""

    batch_size: int
    alpha: float | None
    vision_tokens: int  # rows the vision blocks see, whole batch
    llm_tokens: int  # image tokens the LLM sees, whole batch
    prompt_tokens: int  # tokens of the prompts, whole batch, without padding
    vision_flops: int
    prefill_flops: int
    processor: Timing | None = None  # the image processor's call (APT: its selection included)
    encoder: Timing | None = None
    vision: Timing | None = None  # processor + encoder, per run
    prefill: Timing | None = None
    vision_peak_mb: float | None = None
    prefill_peak_mb: float | None = None

    @property
    def setting(self) -> str:
        return "stock" if self.alpha is None else f"alpha {self.alpha:g}"


@dataclass
class BenchResult:
    """Everything one ``apt-viz bench`` run measured (``rows``: stock first, then the alphas, per batch size)."""

    settings: BenchSettings
    model: str  # preset name or checkpoint folder
    architecture: Architecture
    random_weights: bool
    device: str  # the machine, in words
    dtype: str
    attention: str
    images: list[dict[str, Any]]
    rows: list[BenchRow] = field(default_factory=list)
    flops_only: bool = False

    @property
    def headline(self) -> str:
        """One line naming the model, its weights, the machine and the precision (the table's and plot's title)."""
        if self.flops_only:
            return f"{self.model}: analytic FLOPs only (no model built, nothing timed)"
        weights = RANDOM_WEIGHTS_NOTE if self.random_weights else "checkpoint weights"
        return f"{self.model} ({weights}) on {self.device}, {self.dtype}, {self.attention} attention"

    def stock_row(self, batch_size: int) -> BenchRow:
        return next(row for row in self.rows if row.batch_size == batch_size and row.alpha is None)

    def speedups(self, row: BenchRow) -> dict[str, float | None]:
        """Stock time / APT time (and stock FLOPs / APT FLOPs) of ``row`` against its batch size's stock row."""
        stock = self.stock_row(row.batch_size)

        def ratio(a: Timing | None, b: Timing | None) -> float | None:
            return None if a is None or b is None else a.median_ms / b.median_ms

        return {
            "vision": ratio(stock.vision, row.vision),
            "encoder": ratio(stock.encoder, row.encoder),
            "prefill": ratio(stock.prefill, row.prefill),
            "vision_flops": stock.vision_flops / row.vision_flops,
            "prefill_flops": stock.prefill_flops / row.prefill_flops,
        }
