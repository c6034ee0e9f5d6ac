"""``apt-viz sweep`` and ``apt-viz compare``: the tuning views, registered on the CLI's Typer ``app``.

The common options and :func:`apt_viz.cli.build_config` are the ``run`` command's own, so every
option behaves the same in each command. The numbers come from :mod:`apt_viz.sweep` and
:mod:`apt_viz.compare`; this module only reads inputs, writes files (atomically) and prints.
"""
from __future__ import annotations

import csv
import io
import os
from typing import TYPE_CHECKING, Annotated, Any, Optional, Sequence

import typer

from .cli import (
    DEFAULT_OUTPUT, EXIT_FAILURES, EXIT_OK, PILLOW_MAX_IMAGE_PIXELS, Aggregate, AggregateOption, BinsOption,
    DeviceOption, MaxImagePixelsOption, MaxPixelsOption, MergeSizeOption, Method, MethodOption, MinPixelsOption,
    NoResizeOption, NumScalesOption, OutputOption, PatchSizeOption, QuietOption, RecursiveOption, Scorer,
    ScorerOption, ThresholdsOption, app, build_config,
)
from .imaging import MAX_PIXELS, MERGE_SIZE, MIN_PIXELS, PATCH_SIZE

if TYPE_CHECKING:  # pragma: no cover
    from .config import APTConfig
    from .report import Failure
    from .sweep import SweepRow

SWEEP_EXAMPLES = """\
Examples:

  apt-viz sweep photos/ -m budget                       # alpha 0.1..1.0 step 0.1

  apt-viz sweep image.jpg -m v2 --values 0.6:1.4:0.2    # start:stop:step, inclusive

  apt-viz sweep image.jpg -m v1 --thresholds-grid "3,2;4,3;5,4"
"""
COMPARE_EXAMPLES = """\
Examples:

  apt-viz compare image.jpg                   # v1 (3,2), v2 alpha 1.0, budget alpha 0.5

  apt-viz compare image.jpg --alphas 0.3,0.6  # one row of v2 + budget per alpha
"""

ValuesOption = Annotated[
    Optional[str],
    typer.Option(
        "--values",
        help="v2 / budget: alphas, comma-separated and/or start:stop:step ranges (inclusive), e.g. 0.1:1:0.1. "
        "[default: budget 0.1:1:0.1, v2 0.5:1.5:0.1]",
        show_default=False,
    ),
]
ThresholdsGridOption = Annotated[
    Optional[str],
    typer.Option(
        "--thresholds-grid",
        help='v1: threshold tuples separated by ";", values by "," (28 px first), e.g. "3,2;4,3". '
        "[default: (t, t-1) for t = 2, 2.5, ..., 6]",
        show_default=False,
    ),
]


# --- sweep ---------------------------------------------------------------------------------------

@app.command("sweep", epilog=SWEEP_EXAMPLES)
def sweep_command(
    images: Annotated[list[str], typer.Argument(help="Image files and/or folders of images.", show_default=False)],
    output: OutputOption = DEFAULT_OUTPUT,
    patch_selection_method: MethodOption = Method.v1,
    values: ValuesOption = None,
    thresholds_grid: ThresholdsGridOption = None,
    scorer: ScorerOption = Scorer.entropy,
    aggregate: AggregateOption = Aggregate.mean,
    patch_size: PatchSizeOption = PATCH_SIZE,
    num_scales: NumScalesOption = 3,
    merge_size: MergeSizeOption = MERGE_SIZE,
    min_pixels: MinPixelsOption = MIN_PIXELS,
    max_pixels: MaxPixelsOption = MAX_PIXELS,
    no_resize: NoResizeOption = False,
    bins: BinsOption = 512,
    device: DeviceOption = "auto",
    recursive: RecursiveOption = False,
    max_image_pixels: MaxImagePixelsOption = PILLOW_MAX_IMAGE_PIXELS,
    quiet: QuietOption = False,
) -> None:
    """Run one selection method over a range of alphas (v2, budget) or v1 threshold tuples.

    Each image is scored once; only the selection is re-run per value. Writes
    OUTPUT/sweep_<method>.csv (per value: mean, std, min, max over the images of tokens, retention,
    LLM tokens and LLM ratio), OUTPUT/sweep_<method>_per_image.csv and OUTPUT/sweep_<method>.png
    (retention and LLM tokens against the value), and prints the table.
    """
    from .sweep import aggregate as aggregate_rows
    from .sweep import check_values, per_image_rows, sweep_analysis

    method = patch_selection_method.value
    config = build_config(
        method=method, scorer=scorer.value, aggregate=aggregate.value, patch_size=patch_size, num_scales=num_scales,
        merge_size=merge_size, min_pixels=min_pixels, max_pixels=max_pixels, no_resize=no_resize, bins=bins,
        device=device,
    )
    swept = _sweep_values(method, values, thresholds_grid, num_scales)
    try:
        check_values(method, swept, num_scales)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    sweeps, failures = [], []
    for item in _input_items(images, recursive, output):
        analysis = _analyze(item.path, config, max_image_pixels, failures)
        if analysis is not None:
            sweeps.append(sweep_analysis(analysis, method, swept))
    _print_failures(failures)
    if not sweeps:
        return _exit(EXIT_FAILURES)

    rows = aggregate_rows(sweeps, method)
    stem = os.path.join(output, f"sweep_{method}")
    _write_sweep(stem, rows, per_image_rows(sweeps, method))
    if not quiet:
        from rich.console import Console

        console = Console(highlight=False, soft_wrap=False)
        console.print(sweep_table(rows))
        console.print(f"written: {stem}.csv, {stem}_per_image.csv, {stem}.png", markup=False, soft_wrap=True)
    _exit(EXIT_FAILURES if failures else EXIT_OK)


def _sweep_values(method: str, values: str | None, thresholds_grid: str | None, num_scales: int) -> list[Any]:
    """The values to sweep: parsed from the option that fits ``method``, or the defaults."""
    from .sweep import default_values, parse_alpha_values, parse_threshold_grid

    if method == "v1" and values is not None:
        raise typer.BadParameter("--values sweeps alpha (v2, budget); v1 sweeps --thresholds-grid")
    if method != "v1" and thresholds_grid is not None:
        raise typer.BadParameter(f"--thresholds-grid sweeps v1 thresholds; {method} sweeps --values")
    try:
        if method == "v1":
            return default_values(method, num_scales) if thresholds_grid is None else parse_threshold_grid(thresholds_grid, num_scales)
        return default_values(method, num_scales) if values is None else parse_alpha_values(values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def sweep_table(rows: Sequence["SweepRow"]) -> Any:
    """The rich table printed by ``apt-viz sweep`` (mean +/- std, and min-max with several images)."""
    from rich.table import Table

    from .sweep import format_value

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
        tokens, retention, llm, ratio = (row.metrics[name] for name in ("tokens", "retention", "llm_tokens", "llm_retention"))
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


def _write_sweep(stem: str, rows: Sequence["SweepRow"], image_rows: Sequence[dict[str, Any]]) -> None:
    from .atomic import atomic_open, write_text
    from .plots import sweep_figure
    from .sweep import CSV_COLUMNS, PER_IMAGE_CSV_COLUMNS

    write_text(f"{stem}.csv", _csv_text(CSV_COLUMNS, [row.to_csv_dict() for row in rows]))
    write_text(f"{stem}_per_image.csv", _csv_text(PER_IMAGE_CSV_COLUMNS, image_rows))
    with atomic_open(f"{stem}.png", "wb") as handle:
        sweep_figure(rows).savefig(handle, format="png")


def _csv_text(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# --- compare -------------------------------------------------------------------------------------

@app.command("compare", epilog=COMPARE_EXAMPLES)
def compare_command(
    image: Annotated[str, typer.Argument(help="One image file.", show_default=False)],
    output: OutputOption = DEFAULT_OUTPUT,
    alphas: Annotated[
        Optional[str],
        typer.Option(help="Alphas for the v2 and budget panels, one row each (same syntax as sweep --values). "
                     "[default: v2 1.0, budget 0.5]", show_default=False),
    ] = None,
    thresholds: ThresholdsOption = None,
    scorer: ScorerOption = Scorer.entropy,
    aggregate: AggregateOption = Aggregate.mean,
    patch_size: PatchSizeOption = PATCH_SIZE,
    num_scales: NumScalesOption = 3,
    merge_size: MergeSizeOption = MERGE_SIZE,
    min_pixels: MinPixelsOption = MIN_PIXELS,
    max_pixels: MaxPixelsOption = MAX_PIXELS,
    no_resize: NoResizeOption = False,
    bins: BinsOption = 512,
    device: DeviceOption = "auto",
    panel_width: Annotated[
        Optional[int], typer.Option(min=64, help="Scale each panel down to this width (px).", show_default=False)
    ] = None,
    max_image_pixels: MaxImagePixelsOption = PILLOW_MAX_IMAGE_PIXELS,
    quiet: QuietOption = False,
) -> None:
    """One sheet with the v1, v2 and budget patch overlays of IMAGE side by side.

    Each panel is captioned with its setting, tokens / N, retention and Qwen2-VL LLM tokens.
    Writes OUTPUT/<image name>/compare.jpg and prints the panels' numbers.
    """
    from .atomic import save_image
    from .compare import compare_sheet
    from .sweep import parse_alpha_values

    config = build_config(
        method="v1", thresholds=thresholds, scorer=scorer.value, aggregate=aggregate.value, patch_size=patch_size,
        num_scales=num_scales, merge_size=merge_size, min_pixels=min_pixels, max_pixels=max_pixels,
        no_resize=no_resize, bins=bins, device=device,
    )
    try:
        alpha_values = None if alphas is None else parse_alpha_values(alphas)
        for alpha in alpha_values or []:
            config.replace(method="v2", alpha=alpha)  # a one-line usage error before any work
    except ValueError as exc:
        raise typer.BadParameter(f"--alphas: {exc}") from None
    if not os.path.isfile(image):
        raise typer.BadParameter(f"{image}: no such file")

    failures: list["Failure"] = []
    analysis = _analyze(image, config, max_image_pixels, failures)
    if analysis is None:
        _print_failures(failures)
        return _exit(EXIT_FAILURES)
    sheet = compare_sheet(analysis, alpha_values, panel_width=panel_width)
    path = os.path.join(output, os.path.basename(image), "compare.jpg")
    save_image(sheet.image, path, quality=90)
    if not quiet:
        from rich.console import Console

        from .report import results_table

        console = Console(highlight=False, soft_wrap=False)
        table = results_table([{"name": os.path.basename(image), **panel.analysis.to_dict()} for panel in sheet.panels])
        table.title = f"compare: {image}"
        console.print(table)
        for line in sheet.skipped:
            console.print(line, markup=False)
        console.print(f"written: {path}", markup=False, soft_wrap=True)
    _exit(EXIT_OK)


# --- shared steps --------------------------------------------------------------------------------

def _input_items(images: Sequence[str], recursive: bool, output: str) -> list[Any]:
    from .batch import InputError, expand_inputs

    try:
        items, _ = expand_inputs(images, recursive, exclude=output)
    except InputError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not items:
        raise typer.BadParameter(f"no images found in {', '.join(images)}" + ("" if recursive else " (try --recursive)"))
    return items


def _analyze(path: str, config: "APTConfig", max_image_pixels: int, failures: list["Failure"]) -> Any:
    """The analysis of ``path``, or None with a one-line failure recorded (as a folder run reports it)."""
    from .imaging import ImageLoadError, load_image
    from .pipeline import analyze_image
    from .report import Failure

    try:
        return analyze_image(load_image(path, max_image_pixels or None), config, source=path)
    except ImageLoadError as exc:
        failures.append(Failure(path, str(exc)))
    except ValueError as exc:  # e.g. smart_resize refusing an extreme aspect ratio
        failures.append(Failure(path, f"{path}: {exc}"))
    return None


def _print_failures(failures: Sequence["Failure"]) -> None:
    for failure in failures:
        typer.echo(f"failed: {failure.error}", err=True)


def _exit(code: int) -> None:
    raise typer.Exit(code)
