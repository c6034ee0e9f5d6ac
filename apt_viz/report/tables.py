"""Rich tables of a run and of a sweep (built from records; the caller prints them).

Each table comes in two layouts. The full one has a column per quantity (tokens per scale,
target and actual retention, ...). The compact one keeps the quantities a reader compares (one
line per image or per value, fewer and narrower columns) and never wraps a row: every column is
``no_wrap`` with a fixed width, and the text columns (image name, setting) give up width first,
ending in an ellipsis. :func:`fitted_table` takes the full layout only on a terminal wide enough
for it; piped output, a log file or a narrow terminal gets the compact one (``--json`` and the
CSV files stay the machine-readable forms).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .._text import format_number, format_percent
from .records import StatsRecord
from .summary import scale_sizes_of, selection_setting

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console
    from rich.table import Table

    from ..sweep import SweepRow

MAX_TABLE_ROWS = 50  # larger runs: the first rows, then a pointer to summary.csv
COMPACT_GAP = 3  # characters between two columns of a compact table (one pad each side + the blank rule)
UNLIMITED = 100_000  # a width no table reaches


# --- choosing a layout -------------------------------------------------------------------------------

def fitted_table(console: Console, full: Table, compact: Callable[[int], Table]) -> Table:
    """``full`` on a terminal wide enough for it, else ``compact(console.width)``.

    Args:
        console: Where the table will be printed.
        full: The full layout.
        compact: Builds the compact layout for a width (in characters).

    Returns:
        The table to print. Not a terminal (a pipe, a file) always gets the compact layout, so
        logs read the same whatever the width of the terminal that started the job.
    """
    from rich.measure import Measurement

    if console.is_terminal:
        # Measured without a width limit: the table's natural width (rich clamps to the console's).
        natural = Measurement.get(console, console.options.update_width(UNLIMITED), full).maximum
        if natural <= console.width:
            return full
    return compact(console.width)


def _compact_table(
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int,
    *,
    shrinkable: Sequence[tuple[int, int]],
    right: Sequence[int] = (),
    caption: str | None = None,
) -> Table:
    """A one-line-per-row table at most ``width`` characters wide.

    Args:
        title: The title line.
        headers: Column headers (short: a header is never wrapped either).
        rows: Cell texts.
        width: The width to fit.
        shrinkable: (column, minimum width) of the columns that may be cut (with an ellipsis), in
            the order they give up width.
        right: Columns aligned to the right (numbers).
        caption: A line below the table.

    Returns:
        The rich table; every column has a fixed width and ``no_wrap``.
    """
    from rich import box
    from rich.table import Table

    widths = [max([len(header), *(len(row[i]) for row in rows)]) for i, header in enumerate(headers)]
    excess = sum(widths) + COMPACT_GAP * (len(widths) - 1) - width
    for column, minimum in shrinkable:
        if excess <= 0:
            break
        cut = min(excess, max(0, widths[column] - minimum))
        widths[column] -= cut
        excess -= cut
    table = Table(
        title=title, title_justify="left", caption=caption, caption_justify="left", header_style="bold",
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
    )
    for index, (header, column_width) in enumerate(zip(headers, widths)):
        table.add_column(
            header, width=column_width, no_wrap=True, overflow="ellipsis",
            justify="right" if index in right else "left",
        )
    for row in rows:
        table.add_row(*row)
    return table


# --- a run -------------------------------------------------------------------------------------------

ALL_ROWS_IN = "all are in summary.csv"


def results_table(
    stats_list: Sequence[StatsRecord], max_rows: int = MAX_TABLE_ROWS, *, more: str = ALL_ROWS_IN
) -> Table:
    """The rich table of a run: per image method, setting, target vs. actual retention, tokens.

    Args:
        stats_list: The records, one row each.
        max_rows: At most this many rows; a caption then says how many there are and ``more``
            (where to find them all).
        more: See ``max_rows``.

    Returns:
        The full layout (see :func:`compact_results_table` for the one-line-per-row layout).
    """
    from rich.table import Table

    sizes = scale_sizes_of(stats_list)
    table = Table(title="APT patch selection", title_justify="left", header_style="bold")
    table.add_column("image", overflow="fold")
    table.add_column("method")
    table.add_column("alpha / thresholds")
    table.add_column("target retention", justify="right")
    table.add_column("actual retention", justify="right")
    table.add_column("tokens " + "/".join(str(size) for size in sizes) + " px", justify="right")
    table.add_column("vision tokens / N", justify="right")
    table.add_column("LLM tokens", justify="right")
    fidelity = any("fidelity" in stats for stats in stats_list)
    if fidelity:
        for header in PSNR_HEADERS:
            table.add_column(header, justify="right")
    for stats in stats_list[:max_rows]:
        table.add_row(
            str(stats.get("name") or stats["input"]),
            stats["method"],
            selection_setting(stats),
            format_percent(stats["target_retention"]),
            format_percent(stats["retention"]),
            " / ".join(str(stats["tokens_per_scale"].get(str(size), 0)) for size in sizes),
            f"{stats['vision_tokens']} / {stats['base_tokens']}",
            f"{stats['llm_tokens']} / {stats['baseline_llm_tokens']} ({stats['llm_retention']:.1%})",
            *(psnr_cells(stats) if fidelity else []),
        )
    table.caption = _more_rows(len(stats_list), max_rows, more)
    return table


def compact_results_table(
    stats_list: Sequence[StatsRecord], width: int, max_rows: int = MAX_TABLE_ROWS, *, more: str = ALL_ROWS_IN
) -> Table:
    """:func:`results_table` in one line per image: setting, retention, tokens / N and LLM tokens.

    The tokens per scale, the target retention and v2's effective thresholds are left out (they
    are in ``--json`` and summary.csv); the setting of a budget run is its alpha, i.e. its target.
    """
    fidelity = any("fidelity" in stats for stats in stats_list)
    rows = [
        [
            str(stats.get("name") or stats["input"]),
            _short_setting(stats),
            format_percent(stats["retention"]),
            f"{stats['vision_tokens']}/{stats['base_tokens']}",
            f"{stats['llm_tokens']}/{stats['baseline_llm_tokens']}",
            *(psnr_cells(stats) if fidelity else [format_percent(stats["llm_retention"])]),
        ]
        for stats in stats_list[:max_rows]
    ]
    headers = ["image", "setting", "kept", "tokens/N", "LLM tokens"]
    headers += COMPACT_PSNR_HEADERS if fidelity else ["LLM %"]  # the LLM % gives way to the PSNRs
    captions = [_more_rows(len(stats_list), max_rows, more), PSNR_CAPTION if fidelity else None]
    return _compact_table(
        "APT patch selection", headers, rows, width,
        shrinkable=[(1, 12), (0, 12), (1, 4), (0, 4)], right=range(2, len(headers)),
        caption="\n".join(caption for caption in captions if caption) or None,
    )


# The PSNR columns of a run with fidelity: APT, uniform at equal vision tokens, uniform at equal LLM tokens.
PSNR_HEADERS = ("PSNR APT dB", "uniform = vision", "uniform = LLM")
COMPACT_PSNR_HEADERS = ["PSNR", "U vis", "U LLM"]
PSNR_CAPTION = "PSNR in dB of APT and of uniform (U) at equal vision / LLM tokens"


def psnr_cells(stats: StatsRecord) -> list[str]:
    """PSNR of APT and of the two uniform baselines (``exact`` for an exact image, ``-`` without fidelity)."""
    block = stats.get("fidelity")
    if block is None:
        return ["-"] * 3
    values = [block[view]["psnr"] for view in ("apt", "uniform_equal_vision", "uniform_equal_llm")]
    return ["exact" if value is None else f"{value:.2f}" for value in values]


def _short_setting(stats: StatsRecord) -> str:
    """``v1 3,2``, ``v2 alpha 1.2`` or ``budget alpha 0.3``."""
    if stats["method"] == "v1":
        return "v1 " + ",".join(format_number(t) for t in stats.get("thresholds") or [])
    return f"{stats['method']} alpha {format_number(stats['alpha'])}"


def _more_rows(count: int, max_rows: int, more: str) -> str | None:
    return f"first {max_rows} of {count} rows; {more}" if count > max_rows else None


# --- a sweep -----------------------------------------------------------------------------------------

def sweep_table(rows: Sequence[SweepRow]) -> Table:
    """The rich table printed by ``apt-viz sweep`` (mean +/- std, and min-max with several images)."""
    from rich.table import Table

    several = rows[0].images > 1
    method = rows[0].method
    table = Table(title=_sweep_title(rows), title_justify="left", header_style="bold")
    table.add_column("thresholds" if method == "v1" else "alpha", justify="right")
    if method == "budget":
        table.add_column("target\nretention", justify="right")
    table.add_column("vision tokens" + (" (mean ± std)" if several else ""), justify="right")
    table.add_column("retention" + (" (mean, min-max)" if several else ""), justify="right")
    table.add_column("LLM tokens" + (" (mean ± std)" if several else ""), justify="right")
    table.add_column("LLM retention", justify="right")
    for row in rows:
        table.add_row(*_sweep_cells(row, several, spread=True))
    return table


def compact_sweep_table(rows: Sequence[SweepRow], width: int) -> Table:
    """:func:`sweep_table` in one line per value: means (± std over several images), no min-max."""
    several = rows[0].images > 1
    method = rows[0].method
    headers = ["thresholds" if method == "v1" else "alpha"]
    if method == "budget":
        headers.append("target")
    headers += ["tokens", "kept", "LLM tokens", "LLM %"]
    cells = [_sweep_cells(row, several, spread=False) for row in rows]
    return _compact_table(
        _sweep_title(rows), headers, cells, width, shrinkable=[(0, 6)], right=range(len(headers)),
    )


def _sweep_title(rows: Sequence[SweepRow]) -> str:
    return f"{rows[0].method} sweep over {rows[0].images} image{'s' if rows[0].images > 1 else ''}"


def _sweep_cells(row: SweepRow, several: bool, spread: bool) -> list[str]:
    """One value's cells; ``spread`` adds the min-max of the retention (full layout)."""
    from ..sweep import format_value

    tokens, retention, llm, ratio = (
        row.metrics[name] for name in ("vision_tokens", "retention", "llm_tokens", "llm_retention")
    )
    plus_minus = " ± " if spread else "±"
    cells = [format_value(row.value)]
    if row.method == "budget":
        cells.append("-" if row.target_retention is None else f"{row.target_retention:.1%}")
    cells += [
        f"{tokens.mean:.1f}{plus_minus}{tokens.std:.1f}" if several else f"{tokens.mean:.0f}",
        f"{retention.mean:.1%} ({retention.min:.1%}-{retention.max:.1%})" if several and spread
        else f"{retention.mean:.1%}",
        f"{llm.mean:.1f}{plus_minus}{llm.std:.1f}" if several else f"{llm.mean:.0f}",
        f"{ratio.mean:.1%}",
    ]
    return cells
