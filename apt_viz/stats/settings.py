"""What a ``stats`` run computes: the image settings (one :class:`APTConfig`) and the selection settings.

The importance maps depend on the image settings only, so they are computed once per image and
every :class:`Setting` is selected from them. A setting's :attr:`Setting.label` is its identity in
the table (the ``setting`` column): ``--resume`` skips an (input, setting) pair already present.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core.config import APTConfig, BudgetUnit, Method

# Settings of the scorer and the resize: rows of different image settings cannot share a table.
IMAGE_FIELDS = (
    "patch_size", "num_scales", "merge_size", "temporal_patch_size", "min_pixels", "max_pixels", "resize",
    "backend", "scorer", "bins", "aggregate", "seed",
)


def format_value(value: float) -> str:
    """The shortest text that reads back as ``value`` (``0.3``, ``1``, ``2.5``): exact, so labels never collide."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Setting:
    """One selection setting: ``v1`` with its thresholds, or ``v2`` / ``budget`` with an alpha (and the
    budget's unit)."""

    method: Method
    alpha: float | None = None  # v2, budget
    thresholds: tuple[float, ...] | None = None  # v1 (explicit: the defaults are written out)
    budget_unit: BudgetUnit = BudgetUnit.VISION  # budget: what alpha is a fraction of

    @property
    def label(self) -> str:
        """``v1 thresholds=3,2``, ``v2 alpha=1``, ``budget alpha=0.3`` or ``budget alpha=0.5 budget_unit=llm``:
        the ``setting`` column (a budget in vision tokens, the default, keeps the label it always had)."""
        if self.method is Method.V1:
            return f"v1 thresholds={','.join(format_value(t) for t in self.thresholds or ())}"
        label = f"{self.method} alpha={format_value(self.alpha if self.alpha is not None else 1.0)}"
        return label if self.budget_unit is BudgetUnit.VISION else f"{label} budget_unit={self.budget_unit}"

    def config(self, image_config: APTConfig) -> APTConfig:
        """``image_config`` with this selection (validated: a bad setting raises ``ValueError``)."""
        if self.method is Method.V1:
            return image_config.replace(method=self.method, thresholds=self.thresholds)
        return image_config.replace(method=self.method, alpha=self.alpha, thresholds=None,
                                    budget_unit=self.budget_unit)


def settings_of(method: Method | str, alphas: Sequence[float] = (), thresholds: Sequence[Sequence[float]] = (),
                num_scales: int = 3, budget_unit: BudgetUnit | str | None = None) -> tuple[Setting, ...]:
    """The settings of one method: one per alpha (v2, budget) or per threshold tuple (v1).

    Args:
        method: ``v1``, ``v2`` or ``budget``.
        alphas: v2 / budget: the alphas (none: 1.0 for v2; budget needs at least one).
        thresholds: v1: threshold tuples, one value per scale above the base (none: the official 3, 2).
        num_scales: Number of patch scales (for v1's defaults).
        budget_unit: budget: ``vision`` (None: the default) or ``llm``; refused for v1 and v2.

    Returns:
        The settings in the order given, duplicates dropped.

    Raises:
        ValueError: a value that does not belong to ``method``, or budget without an alpha.
    """
    method = Method(method)
    unit = BudgetUnit(budget_unit) if budget_unit is not None else BudgetUnit.VISION
    if budget_unit is not None and method is not Method.BUDGET:
        raise ValueError(f"--budget-unit applies to budget, not {method}")
    if method is Method.V1:
        if alphas:
            raise ValueError("--alpha applies to v2 and budget; v1 uses --thresholds")
        pairs = [tuple(float(t) for t in pair) for pair in thresholds] or [APTConfig(num_scales=num_scales)
                                                                           .effective_thresholds()]
        found = [Setting(method, thresholds=pair) for pair in pairs]
    else:
        if thresholds:
            raise ValueError(f"--thresholds applies to v1; {method} uses --alpha")
        if not alphas and method is Method.BUDGET:
            raise ValueError("budget needs --alpha (the fraction of base patches to keep), e.g. --alpha 0.3,0.5")
        found = [Setting(method, alpha=float(alpha), budget_unit=unit) for alpha in (alphas or [1.0])]
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class StatsPlan:
    """Everything a ``stats`` engine needs to turn an image into rows (picklable: sent to workers and Ray)."""

    config: APTConfig  # image settings and device (its own selection fields are not used)
    settings: tuple[Setting, ...]
    save_masks: bool = False
    max_image_pixels: int | None = None
    debug: bool = False
    fidelity: bool = False  # the fidelity columns (docs/fidelity.md); null without

    def __post_init__(self) -> None:
        if not self.settings:
            raise ValueError("a stats run needs at least one selection setting")
        _ = self.configs  # validate every setting now, not at the first image

    @functools.cached_property
    def configs(self) -> tuple[APTConfig, ...]:
        """The validated :class:`APTConfig` of every setting, in order."""
        return tuple(setting.config(self.config) for setting in self.settings)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(setting.label for setting in self.settings)

    @property
    def patch_sizes(self) -> list[int]:
        return self.config.patch_sizes

    def image_settings(self) -> dict[str, Any]:
        """The image settings as JSON (what must match for ``--resume`` to add to a table)."""
        everything = self.config.to_dict()
        return {name: everything[name] for name in IMAGE_FIELDS}
