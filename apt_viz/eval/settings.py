"""What an eval run compares: the stock model, APT settings, and each APT setting's baselines at equal cost.

Every example runs under every :class:`EvalSetting` of the :class:`EvalPlan`, in this order: ``stock``
(the reference), then each APT setting (one per ``--alpha``, or per ``--thresholds`` pair with v1)
followed by its baselines (docs/fidelity.md), each matched, example by example, to the cost of that
APT setting on that example:

- ``uniform_equal_vision``: the stock processor with the ``max_pixels`` whose base patches are the
  closest to APT's vision tokens (:func:`apt_viz.fidelity.uniform.matched_max_pixels`);
- ``uniform_equal_llm``: the same, matched on APT's LLM tokens (as ``m**2`` patches each);
- ``random_equal_vision``: the budget method on seeded random maps at APT's vision tokens
  (:func:`apt_viz.fidelity.measure.random_baseline_config`), through the APT model.

A setting's :attr:`EvalSetting.label` is its identity in the table (the ``setting`` column, the
``--resume`` key with the example): ``stock``, ``budget alpha=0.3``, ``uniform_equal_llm @ budget alpha=0.3``.
"""
from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.config import APTConfig, BudgetUnit, Method
from ..stats.settings import Setting

if TYPE_CHECKING:  # pragma: no cover
    import torch

STOCK = "stock"


class DType(str, enum.Enum):
    """``--dtype``: the model's weights and activations."""

    AUTO = "auto"  # bfloat16 on a GPU, float32 on the CPU
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"

    def __str__(self) -> str:
        return self.value

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        """The torch dtype on ``device`` (``auto`` resolved)."""
        import torch

        if self is DType.AUTO:
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return getattr(torch, self.value)


class Baseline(str, enum.Enum):
    """A baseline at an APT setting's cost (the ``baseline`` column)."""

    UNIFORM_EQUAL_LLM = "uniform_equal_llm"
    UNIFORM_EQUAL_VISION = "uniform_equal_vision"
    RANDOM_EQUAL_VISION = "random_equal_vision"

    def __str__(self) -> str:
        return self.value

    @property
    def uniform(self) -> bool:
        """Run through the stock processor at a matched ``max_pixels`` (else through APT, random maps)."""
        return self is not Baseline.RANDOM_EQUAL_VISION


BASELINE_NAMES = tuple(baseline.value for baseline in Baseline)


def parse_baselines(text: str) -> tuple[Baseline, ...]:
    """``--baselines``: names separated by commas, or ``none``.

    Raises:
        ValueError: an unknown name (one line, naming the choices).
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in BASELINE_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown baseline {', '.join(unknown) or repr(text)}; choose from "
                         f"{', '.join(BASELINE_NAMES)} (comma-separated) or none")
    return tuple(dict.fromkeys(Baseline(name) for name in names))


@dataclass(frozen=True)
class EvalSetting:
    """One setting of a run: stock, an APT selection, or a baseline matched to an APT selection."""

    selection: Setting | None = None  # None: stock
    config: APTConfig | None = None  # the APT selection's validated settings (None: stock)
    baseline: Baseline | None = None

    @property
    def label(self) -> str:
        """The ``setting`` column."""
        if self.selection is None or self.config is None:
            return STOCK
        label = self.selection.label
        if self.config.method is Method.BUDGET and self.config.budget_unit is BudgetUnit.LLM:
            label += " unit=llm"
        return label if self.baseline is None else f"{self.baseline} @ {label}"

    @property
    def method(self) -> str | None:
        """The ``method`` column: the APT setting's (also on its baselines); None for stock."""
        return None if self.config is None else str(self.config.method)

    @property
    def alpha(self) -> float | None:
        """The ``alpha`` column: the APT setting's (None for stock and v1)."""
        if self.config is None or self.config.method is Method.V1:
            return None
        return self.config.alpha

    @property
    def apt_config(self) -> APTConfig:
        """The APT selection's settings (of the APT setting a baseline is matched to); ``ValueError`` for stock."""
        if self.config is None:
            raise ValueError("the stock setting has no APT settings")
        return self.config

    def apt_kwargs(self, config: APTConfig | None = None) -> dict[str, Any]:
        """The APT image processor's per-call settings (``images_kwargs``) of ``config`` (default: this one's)."""
        config = config or self.apt_config
        return {
            "patch_selection_method": str(config.method),
            "alpha": config.alpha,
            "thresholds": None if config.method is not Method.V1 else list(config.effective_thresholds()),
            "scorer": str(config.scorer),
            "budget_unit": str(config.budget_unit),
            "seed": config.seed,
        }


@dataclass(frozen=True)
class EvalPlan:
    """Every setting of a run and how it generates."""

    config: APTConfig  # the checkpoint's processor settings, scorer and seed (its selection fields unused)
    selections: tuple[Setting, ...]
    baselines: tuple[Baseline, ...] = tuple(Baseline)
    budget_unit: BudgetUnit = BudgetUnit.VISION
    max_new_tokens: int = 16

    def __post_init__(self) -> None:
        if not self.selections:
            raise ValueError("an eval run needs at least one APT setting")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        _ = self.settings  # validate every setting now, not at the first example

    @functools.cached_property
    def settings(self) -> tuple[EvalSetting, ...]:
        """``stock``, then each APT setting followed by its baselines."""
        found = [EvalSetting()]
        for selection in self.selections:
            config = selection.config(self.config)
            if config.method is Method.BUDGET:
                config = config.replace(budget_unit=self.budget_unit)
            found.append(EvalSetting(selection, config))
            found.extend(EvalSetting(selection, config, baseline) for baseline in self.baselines)
        return tuple(found)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(setting.label for setting in self.settings)

    def apt_settings(self) -> Sequence[EvalSetting]:
        """The APT settings (no stock, no baseline), in order."""
        return [s for s in self.settings if s.config is not None and s.baseline is None]

    def baselines_of(self, apt: EvalSetting) -> Sequence[EvalSetting]:
        """The baselines matched to the APT setting ``apt``, in order."""
        return [s for s in self.settings if s.baseline is not None and s.selection == apt.selection]
