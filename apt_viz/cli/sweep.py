"""``apt-viz sweep``: one selection method over a range of alphas or v1 threshold tuples."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..core.config import Method
from .app import EXIT_CODES_TEXT, app, exit_code
from .options import (
    DebugOption,
    FolderOptions,
    ImageOptions,
    ImagesArgument,
    JsonOption,
    MethodOption,
    QuietOption,
    command,
)
from .run import print_failures, run_tasks

if TYPE_CHECKING:  # pragma: no cover
    from ..sweep import ImageSweep, SweepRow

SWEEP_EXAMPLES = f"""\
Examples:

  apt-viz sweep photos/ -m budget                       # alpha 0.1..1.0 step 0.1

  apt-viz sweep image.jpg -m v2 --values 0.6:1.4:0.2    # start:stop:step, inclusive

  apt-viz sweep image.jpg -m v1 --thresholds-grid "3,2;4,3;5,4"

  apt-viz sweep photos/ -m v2 -j 2 --json > sweep.json   # the CSV rows as JSON

  apt-viz sweep photos/ -m budget --values 0.1:1:0.1 --fidelity   # rate-distortion: APT against uniform

{EXIT_CODES_TEXT}
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
        help='v1: threshold tuples separated by ";", values by "," (2p first), e.g. "3,2;4,3". '
        "[default: (t, t-1) for t = 2, 2.5, ..., 6]",
        show_default=False,
    ),
]


@command(app, "sweep", epilog=SWEEP_EXAMPLES)
def sweep_command(
    images: ImagesArgument,
    *,
    patch_selection_method: MethodOption = Method.V1,
    values: ValuesOption = None,
    thresholds_grid: ThresholdsGridOption = None,
    fidelity: Annotated[
        bool,
        typer.Option("--fidelity/--no-fidelity",
                     help="Rate-distortion: PSNR and SSIM against vision and LLM tokens for APT (every scorer), "
                     "uniform (a max_pixels ladder) and random patches, and where APT stops beating uniform: "
                     "sweep_<method>.html, sweep_<method>_rd.png, --json's rate_distortion (docs/fidelity.md). "
                     "Costs about 3 analyses and 40 SSIMs per image."),
    ] = False,
    folders: FolderOptions,
    imaging: ImageOptions,
    quiet: QuietOption = False,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Run one selection method over a range of alphas (v2, budget) or v1 threshold tuples.

    Each image is scored once; only the selection is re-run per value. Writes
    OUTPUT/sweep_<method>.csv (per value: mean, std, min, max over the images of tokens, retention,
    LLM tokens and LLM ratio), OUTPUT/sweep_<method>_per_image.csv and OUTPUT/sweep_<method>.png
    (retention and LLM tokens against the value), and prints the table (--json: the CSV rows).
    """
    from ..batch.analysis_jobs import SweepJob
    from ..report.summary import sweep_document
    from ..sweep import aggregate as aggregate_rows
    from ..sweep import check_values, per_image_rows

    method = patch_selection_method
    config = imaging.config()  # the selection is set per value
    swept = sweep_values(method, values, thresholds_grid, imaging.num_scales)
    try:
        check_values(method, swept, imaging.num_scales)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    items, _ = folders.input_items(images)

    job = SweepJob(config, method, tuple(swept), imaging.image_pixel_limit, debug, fidelity)
    result = run_tasks(items, job, workers=folders.worker_count, quiet=quiet or json_output,
                       uses_cuda=config.device.startswith("cuda"))
    sweeps = [] if result.interrupted else result.values  # an aggregate needs every image
    aggregated = aggregate_rows(sweeps, method) if sweeps else []
    rows = [row.to_csv_dict() for row in aggregated]  # the CSV's rows, and the JSON's
    image_rows = per_image_rows(sweeps, method)
    stem = os.path.join(folders.output, f"sweep_{method}")
    rd = _rate_distortion(sweeps) if fidelity and sweeps else None
    if sweeps:
        _write_sweep(stem, rows, image_rows, aggregated)
        if rd is not None:
            _write_rate_distortion(folders.output, str(method), rd, sweeps)
    if json_output:
        shared = {k: v for k, v in config.to_dict().items() if k not in ("method", "alpha", "thresholds")}
        document = sweep_document(method, rows, image_rows, result.failures, shared, interrupted=result.interrupted)
        if fidelity:
            document["rate_distortion"] = rd
        sys.stdout.write(json.dumps(document, indent=2, allow_nan=False) + "\n")
    elif not quiet and sweeps:
        _print_sweep(aggregated, stem)
        if rd is not None:
            _print_crossover(rd, stem)
    print_failures(result.failures)
    if result.interrupted:
        typer.echo("interrupted: nothing written (a sweep aggregates every image)", err=True)
    raise typer.Exit(exit_code(len(result.failures), result.internal_errors, result.interrupted))


def _print_sweep(rows: Sequence[SweepRow], stem: str) -> None:
    from rich.console import Console

    from ..report.tables import compact_sweep_table, fitted_table, sweep_table

    console = Console(highlight=False)
    console.print(fitted_table(console, sweep_table(rows), lambda width: compact_sweep_table(rows, width)))
    console.print(f"written: {stem}.csv, {stem}_per_image.csv, {stem}.png", markup=False, soft_wrap=True)


def _rate_distortion(sweeps: Sequence[ImageSweep]) -> dict[str, Any]:
    """``--json``'s ``rate_distortion``: every image's curves and crossovers, and the folder's mean curves."""
    from ..fidelity.rate_distortion import mean_curves

    images = [sweep.rate_distortion for sweep in sweeps if sweep.rate_distortion is not None]
    return {"images": [image.to_dict() for image in images], "mean": mean_curves(images)}


def rd_plot_paths(method: str, rd: dict[str, Any]) -> list[tuple[str, str]]:
    """(caption, path relative to the output folder) of the folder's plot and of each image's."""
    paths = [(f"mean over {rd['mean']['images']} image(s), band: +/- std", f"sweep_{method}_rd.png")]
    for index, image in enumerate(rd["images"]):
        name = os.path.basename(image["image"]) or f"image {index}"
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
        paths.append((name, f"sweep_{method}_rd/{index:03d}_{safe}.png"))
    return paths


def _write_rate_distortion(output: str, method: str, rd: dict[str, Any], sweeps: Sequence[ImageSweep]) -> None:
    from ..atomic import atomic_open, write_text
    from ..render.plots import rate_distortion_figure
    from ..report.html import render_rate_distortion_page

    paths = rd_plot_paths(method, rd)
    for (caption, relative), data in zip(paths, [rd["mean"], *rd["images"]]):
        with atomic_open(os.path.join(output, relative), "wb") as handle:
            rate_distortion_figure(data, f"{method} sweep: {caption}").savefig(handle, format="png")
    write_text(os.path.join(output, f"sweep_{method}.html"), render_rate_distortion_page(output, method, rd, paths))


def _print_crossover(rd: dict[str, Any], stem: str) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    console.print("where APT stops beating uniform (mean curves; going down from the most tokens):", markup=False)
    for name, marks in rd["mean"]["crossover"].items():
        parts = []
        for axis, label in (("vision_tokens", "equal vision tokens"), ("llm_tokens", "equal LLM tokens")):
            mark = marks[axis]
            where = "never" if mark["tokens"] is None else f"down to {_value(mark['value'])} ({mark['tokens']:.0f})"
            parts.append(f"{label} {where}, wins {mark['wins']}/{mark['points']}")
        console.print(f"  {name}: " + "; ".join(parts), markup=False, soft_wrap=True)
    console.print(f"written: {stem}.html, {stem}_rd.png", markup=False, soft_wrap=True)


def _value(value: Any) -> str:
    from ..sweep import format_value

    return format_value(tuple(value) if isinstance(value, list) else value)


def sweep_values(method: Method, values: str | None, thresholds_grid: str | None, num_scales: int) -> list[Any]:
    """The values to sweep: parsed from the option that fits ``method``, or the defaults."""
    from ..sweep import default_values, parse_alpha_values, parse_threshold_grid

    if method is Method.V1 and values is not None:
        raise typer.BadParameter("--values sweeps alpha (v2, budget); v1 sweeps --thresholds-grid")
    if method is not Method.V1 and thresholds_grid is not None:
        raise typer.BadParameter(f"--thresholds-grid sweeps v1 thresholds; {method} sweeps --values")
    try:
        if method is Method.V1:
            if thresholds_grid is None:
                return default_values(method, num_scales)
            return list(parse_threshold_grid(thresholds_grid, num_scales))
        return default_values(method, num_scales) if values is None else list(parse_alpha_values(values))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _write_sweep(
    stem: str, rows: Sequence[dict[str, Any]], image_rows: Sequence[dict[str, Any]], aggregated: Sequence[SweepRow]
) -> None:
    from ..atomic import atomic_open, write_text
    from ..render.plots import sweep_figure
    from ..report.csv_text import csv_text
    from ..sweep import CSV_COLUMNS, PER_IMAGE_CSV_COLUMNS

    write_text(f"{stem}.csv", csv_text(CSV_COLUMNS, rows))
    write_text(f"{stem}_per_image.csv", csv_text(PER_IMAGE_CSV_COLUMNS, image_rows))
    with atomic_open(f"{stem}.png", "wb") as handle:
        sweep_figure(aggregated).savefig(handle, format="png")
