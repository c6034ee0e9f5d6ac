"""Rich tables of a run and of a sweep (built from records; the caller prints them)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._text import format_percent
from .records import StatsRecord
from .summary import scale_sizes_of, selection_setting

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

    from ..sweep import SweepRow

MAX_TABLE_ROWS = 50  # larger runs: the first rows, then a pointer to summary.csv


def results_table(stats_list: Sequence[StatsRecord], max_rows: int = MAX_TABLE_ROWS) -> Table:
    """The rich table of a run: per image method, setting, target vs. actual retention, tokens."""
    from rich.table import Table

    sizes = scale_sizes_of(stats_list)
    table = Table(title="APT patch selection", title_justify="left", header_style="bold")
    table.add_column("image", overflow="fold")
    table.add_column("method")
    table.add_column("alpha / thresholds")
    table.add_column("target retention", justify="right")
    table.add_column("actual retention", justify="right")
    table.add_column("tokens " + "/".join(str(size) for size in sizes) + " px", justify="right")
    table.add_column("tokens / N", justify="right")
    table.add_column("Qwen2-VL LLM tokens", justify="right")
    for stats in stats_list[:max_rows]:
        qwen = stats["qwen2vl"]
        table.add_row(
            str(stats.get("name") or stats["input"]),
            stats["method"],
            selection_setting(stats),
            format_percent(stats["target_retention"]),
            format_percent(stats["retention"]),
            " / ".join(str(stats["tokens_per_scale"].get(str(size), 0)) for size in sizes),
            f"{stats['tokens']} / {stats['base_tokens']}",
            f"{qwen['llm_tokens']} / {qwen['baseline_llm_tokens']} ({qwen['llm_ratio']:.1%})",
        )
    if len(stats_list) > max_rows:
        table.caption = f"first {max_rows} of {len(stats_list)} images; all of them are in summary.csv"
    return table


def sweep_table(rows: Sequence[SweepRow]) -> Table:
    """The rich table printed by ``apt-viz sweep`` (mean +/- std, and min-max with several images)."""
    from rich.table import Table

    from ..sweep import format_value

    several = rows[0].images > 1
    method = rows[0].method
    table = Table(
        title=f"{method} sweep over {rows[0].images} image{'s' if several else ''}", title_justify="left",
        header_style="bold",
    )
    table.add_column("thresholds" if method == "v1" else "alpha", justify="right")
    if method == "budget":
        table.add_column("target\nretention", justify="right")
    table.add_column("tokens" + (" (mean ± std)" if several else ""), justify="right")
    table.add_column("retention" + (" (mean, min-max)" if several else ""), justify="right")
    table.add_column("LLM tokens" + (" (mean ± std)" if several else ""), justify="right")
    table.add_column("LLM ratio", justify="right")
    for row in rows:
        tokens, retention, llm, ratio = (
            row.metrics[name] for name in ("tokens", "retention", "llm_tokens", "llm_retention")
        )
        cells = [format_value(row.value)]
        if method == "budget":
            cells.append("-" if row.target_retention is None else f"{row.target_retention:.1%}")
        cells += [
            f"{tokens.mean:.1f} ± {tokens.std:.1f}" if several else f"{tokens.mean:.0f}",
            f"{retention.mean:.1%} ({retention.min:.1%}-{retention.max:.1%})" if several else f"{retention.mean:.1%}",
            f"{llm.mean:.1f} ± {llm.std:.1f}" if several else f"{llm.mean:.0f}",
            f"{ratio.mean:.1%}",
        ]
        table.add_row(*cells)
    return table

