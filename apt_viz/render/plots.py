"""Matplotlib figures (Agg backend, imported lazily so the CLI starts fast)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

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



# --- rate-distortion (sweep --fidelity) ---------------------------------------------------------------

_RD_STYLES = {  # curve name prefix -> (colour, line style, marker)
    "apt:entropy": ("tab:blue", "-", "o"),
    "apt:laplacian": ("tab:green", "-", "s"),
    "apt:upsample_mse": ("tab:purple", "-", "^"),
    "uniform": ("black", "-", "D"),
    "random": ("tab:grey", "--", "x"),
    "llm_budget": ("tab:orange", ":", "v"),
}
_RD_AXES = (("vision_tokens", "vision tokens"), ("llm_tokens", "LLM tokens"))


def _rd_label(name: str) -> str:
    kind, _, scorer = name.partition(":")
    return {"apt": f"APT {scorer}", "llm_budget": f"APT {scorer}, budget in LLM tokens",
            "uniform": "uniform (max_pixels ladder)", "random": "random patches"}.get(kind, name)


def rate_distortion_figure(rd: Mapping[str, Any], title: str = "") -> Figure:
    """PSNR (top) and SSIM (bottom) against vision tokens (left) and LLM tokens (right).

    Args:
        rd: One image's ``ImageRD.to_dict()`` or the folder's ``mean_curves`` (then a band shows the
            mean +/- std over the images).
        title: The figure title.

    Returns:
        The figure. Each APT curve's crossover (where it stops beating uniform at equal tokens,
        going down from the most tokens) is ringed on its PSNR plot of that axis.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10.0, 7.6), dpi=100, layout="constrained")
    axes = figure.subplots(2, 2)
    for column, (axis_key, axis_label) in enumerate(_RD_AXES):
        for row, metric in enumerate(("psnr", "ssim")):
            plot = axes[row][column]
            for name, points in rd["curves"].items():
                colour, style, marker = _RD_STYLES.get(name, _RD_STYLES.get(name.partition(":")[0], ("red", "-", ".")))
                shown = sorted((p for p in points if p[metric] is not None), key=lambda p: p[axis_key])
                if not shown:
                    continue
                xs = [p[axis_key] for p in shown]
                ys = [p[metric] for p in shown]
                plot.plot(xs, ys, linestyle=style, marker=marker, markersize=4, color=colour, label=_rd_label(name))
                spread = [p.get(f"{metric}_std") for p in shown]
                if all(s is not None for s in spread) and any(spread):
                    plot.fill_between(xs, [y - s for y, s in zip(ys, spread)], [y + s for y, s in zip(ys, spread)],
                                      color=colour, alpha=0.12)
                mark = rd.get("crossover", {}).get(name, {}).get(axis_key)
                if metric == "psnr" and mark and mark["tokens"] is not None:
                    at = [p for p in shown if p[axis_key] == mark["tokens"]]
                    if at:
                        plot.plot([at[0][axis_key]], [at[0]["psnr"]], "o", markersize=12, markerfacecolor="none",
                                  markeredgecolor=colour, markeredgewidth=1.5)
            plot.set_xlabel(axis_label)
            plot.set_ylabel("PSNR (dB)" if metric == "psnr" else "SSIM")
            plot.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=3, fontsize="small")
    figure.suptitle(title or "rate-distortion (ringed: the last point, going down, where APT beats uniform)")
    return figure
