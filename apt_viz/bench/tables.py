"""The tables ``apt-viz bench`` prints: the full one, and one line per row for pipes and narrow terminals."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .settings import BenchResult, Timing

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table


def bench_table(result: BenchResult) -> Table:
    """The rich table printed by ``apt-viz bench``: medians, speedups against stock, peak memory, FLOPs.

    Args:
        result: A finished run.

    Returns:
        The table (the caller prints it).
    """
    from rich.table import Table

    def ms(timing: Timing | None) -> str:
        if timing is None:
            return "-"
        q1, q3 = timing.quartiles_ms
        return f"{timing.median_ms:.1f} ({q1:.1f}-{q3:.1f})"

    def times(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    def mb(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    caption = "FLOPs speedup: stock / APT, from apt_viz.core.flops" if result.flops_only else (
        "ms: median (quartiles); speedup: stock / APT, the image processor (APT: with its selection) included in vision"
    )
    table = Table(title=result.headline, title_justify="left", header_style="bold", caption=caption,
                  caption_justify="left")
    for name in ("batch size", "setting", "vision tokens", "LLM tokens"):
        table.add_column(name, justify="right" if name != "setting" else "left")
    if not result.flops_only:
        for name in ("processor ms", "encoder ms", "vision ms", "vision speedup", "prefill ms", "prefill speedup",
                     "vision peak MB", "prefill peak MB"):
            table.add_column(name, justify="right")
    table.add_column("FLOPs speedup vision / prefill", justify="right")
    for row in result.rows:
        speedup = result.speedups(row)
        cells = [str(row.batch_size), row.setting, str(row.vision_tokens), str(row.llm_tokens)]
        if not result.flops_only:
            cells += [ms(row.processor), ms(row.encoder), ms(row.vision), times(speedup["vision"]), ms(row.prefill),
                      times(speedup["prefill"]), mb(row.vision_peak_mb), mb(row.prefill_peak_mb)]
        cells.append(f"{speedup['vision_flops']:.2f}x / {speedup['prefill_flops']:.2f}x")
        table.add_row(*cells)
    return table


def compact_bench_table(result: BenchResult) -> Table:
    """The one-line-per-row layout of :func:`bench_table` (pipes, logs, narrow terminals).

    Args:
        result: A finished run.

    Returns:
        Batch size, setting, vision tokens, vision and prefill medians with their speedups (x: stock /
        APT), and the FLOPs speedups (vision / prefill). Fits 80 columns.
    """
    from rich import box
    from rich.table import Table

    table = Table(title=result.headline, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False)
    headers = ["batch", "setting", "vision\ntokens"]
    if not result.flops_only:
        headers += ["vision\nms", "x", "prefill\nms", "x"]
    headers += ["FLOPs x"]
    for header in headers:
        table.add_column(header, no_wrap=True, justify="left" if header == "setting" else "right")
    for row in result.rows:
        speedup = result.speedups(row)
        cells = [str(row.batch_size), row.setting, str(row.vision_tokens)]
        if not result.flops_only:
            cells += [
                "-" if row.vision is None else f"{row.vision.median_ms:.1f}",
                "-" if speedup["vision"] is None else f"{speedup['vision']:.2f}",
                "-" if row.prefill is None else f"{row.prefill.median_ms:.1f}",
                "-" if speedup["prefill"] is None else f"{speedup['prefill']:.2f}",
            ]
        cells.append(f"{speedup['vision_flops']:.2f}/{speedup['prefill_flops']:.2f}")
        table.add_row(*cells)
    return table
