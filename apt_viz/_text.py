"""Short text forms of numbers and selection settings, shared by tables, captions, CSV and HTML."""
from __future__ import annotations

import math
from collections.abc import Sequence


def format_number(value: float | None) -> str:
    """Three significant digits; ``-`` for None or NaN. A flat cell's entropy by the formula is
    ``-log2(1 + 1e-10)`` = -1.4e-10: anything within 1e-6 of zero is shown as ``0``."""
    if value is None or math.isnan(value):
        return "-"
    return f"{0.0 if abs(value) < 1e-6 else value:.3g}"


def format_percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def format_setting(method: str, alpha: float | None, thresholds: Sequence[float | None] | None) -> str:
    """The selection setting in a few words.

    ``thresholds 3, 2`` (v1), ``alpha 1 (thresholds 6.74, 7.36)`` (v2, with its effective
    thresholds) or ``alpha 0.3`` (budget).
    """
    applied = ", ".join(format_number(t) for t in thresholds or [])
    if method == "v1":
        return f"thresholds {applied}"
    text = f"alpha {format_number(alpha)}"
    return f"{text} (thresholds {applied})" if method == "v2" and applied else text
