"""``bench.png``: speedup and peak memory against alpha."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .settings import BenchResult

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def bench_figure(result: BenchResult) -> Figure:
    """Speedup (left) and peak memory (right) against alpha, one line per batch size and part.

    Args:
        result: A finished run (``--flops-only``: the analytic speedup, no memory).

    Returns:
        A matplotlib figure (Agg).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11.0, 4.4), dpi=110, layout="constrained")
    speed_axis, memory_axis = figure.subplots(1, 2)
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    for index, batch in enumerate(result.settings.batch_sizes):
        colour = colours[index % len(colours)]
        rows = [row for row in result.rows if row.batch_size == batch and row.alpha is not None]
        alphas = [row.alpha for row in rows]
        stock = result.stock_row(batch)
        for key, style, label in (("vision", "-o", "vision"), ("prefill", "--s", "prefill")):
            measured = [result.speedups(row)[key] for row in rows]
            if all(value is not None for value in measured):
                speed_axis.plot(alphas, measured, style, color=colour, label=f"{label}, batch {batch}")
            elif result.flops_only:
                flops = [result.speedups(row)[f"{key}_flops"] for row in rows]
                speed_axis.plot(alphas, flops, style, color=colour, label=f"{label} FLOPs, batch {batch}")
            peaks = [getattr(row, f"{key}_peak_mb") for row in rows]
            stock_peak = getattr(stock, f"{key}_peak_mb")
            if all(value is not None for value in peaks) and stock_peak is not None:
                memory_axis.plot(alphas, peaks, style, color=colour, label=f"{label}, batch {batch}")
                memory_axis.axhline(stock_peak, color=colour, linestyle=":", linewidth=1)
    speed_axis.axhline(1.0, color="grey", linewidth=1)
    speed_axis.set_xlabel(f"{result.settings.method} alpha")
    speed_axis.set_ylabel("speedup (stock / APT)" + (", analytic" if result.flops_only else ""))
    speed_axis.grid(True, alpha=0.3)
    speed_axis.legend(fontsize="small")
    memory_axis.set_xlabel(f"{result.settings.method} alpha")
    memory_axis.set_ylabel("peak extra memory (MB); dotted: stock")
    memory_axis.grid(True, alpha=0.3)
    if memory_axis.lines:
        memory_axis.legend(fontsize="small")
    else:
        memory_axis.text(0.5, 0.5, "not measured", ha="center", va="center", transform=memory_axis.transAxes)
    figure.suptitle(result.headline, fontsize="medium")
    return figure
