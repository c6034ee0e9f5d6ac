"""Matplotlib figures (Agg backend, imported lazily so the CLI starts fast)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..sweep import SweepRow, format_value

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

_AXIS_LABELS = {"v1": "v1 thresholds (28 px; 56 px)", "v2": "v2 alpha", "budget": "budget alpha"}


def sweep_figure(rows: Sequence[SweepRow], title: str = "") -> Figure:
    """Retention (top) and Qwen2-VL LLM tokens (bottom) against the swept value.

    Lines are the mean over images; with several images a band shows mean +/- std and dotted
    lines the min and max. For budget, the target retention (alpha) is drawn dashed.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    method = rows[0].method
    categorical = method == "v1"  # threshold tuples: evenly spaced, labelled ticks
    xs = list(range(len(rows))) if categorical else [float(row.value) for row in rows]  # type: ignore[arg-type]
    several = max(row.images for row in rows) > 1

    figure = Figure(figsize=(7.0, 5.2), dpi=110, layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    for axis, metric, label, colour in (
        (top, "retention", "retention (vision tokens / N)", "tab:blue"),
        (bottom, "llm_tokens", "LLM tokens", "tab:orange"),
    ):
        mean = [row.metrics[metric].mean for row in rows]
        axis.plot(xs, mean, marker="o", color=colour, label="mean" if several else None)
        if several:
            std = [row.metrics[metric].std for row in rows]
            axis.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                              color=colour, alpha=0.2, label="mean ± std")
            axis.plot(xs, [row.metrics[metric].min for row in rows], ":", color=colour, label="min / max")
            axis.plot(xs, [row.metrics[metric].max for row in rows], ":", color=colour)
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    if method == "budget":
        top.plot(xs, xs, "--", color="grey", label="target (alpha)")
    top.set_ylim(bottom=0)
    bottom.set_ylim(bottom=0)
    if several or method == "budget":
        top.legend(loc="best", fontsize="small")
    bottom.set_xlabel(_AXIS_LABELS.get(method, "value"))
    if categorical:
        bottom.set_xticks(xs, [format_value(row.value) for row in rows], rotation=45 if len(rows) > 6 else 0)
    images = rows[0].images
    figure.suptitle(title or f"{method} sweep over {images} image{'s' if images != 1 else ''}")
    return figure

