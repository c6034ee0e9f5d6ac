"""``apt-viz compare``: the v1, v2 and budget overlays of each image side by side, one sheet per image."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .app import EXIT_CODES_TEXT, app, exit_code
from .options import (
    DebugOption,
    FolderOptions,
    ImageOptions,
    ImagesArgument,
    QuietOption,
    ThresholdsOption,
    command,
    parse_thresholds,
)
from .run import print_failures, run_tasks

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from ..report.records import CompareRecord

COMPARE_EXAMPLES = f"""\
Examples:

  apt-viz compare image.jpg                   # v1 (3,2), v2 alpha 1.0, budget alpha 0.5

  apt-viz compare image.jpg --alphas 0.3,0.6  # one row of v2 + budget per alpha

  apt-viz compare photos/ -j 2 -o out/        # a sheet per image, out/compare_index.html

{EXIT_CODES_TEXT}
"""


@command(app, "compare", epilog=COMPARE_EXAMPLES)
def compare_command(
    images: ImagesArgument,
    *,
    alphas: Annotated[
        Optional[str],
        typer.Option(help="Alphas for the v2 and budget panels, one row each (same syntax as sweep --values). "
                     "[default: v2 1.0, budget 0.5]", show_default=False),
    ] = None,
    thresholds: ThresholdsOption = None,
    folders: FolderOptions,
    panel_width: Annotated[
        Optional[int], typer.Option(min=64, help="Scale each panel down to this width (px).", show_default=False)
    ] = None,
    imaging: ImageOptions,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """One sheet per image with its v1, v2 and budget patch overlays side by side.

    Each panel is captioned with its setting, tokens / N, retention and LLM tokens.
    Writes OUTPUT/<name>/compare.jpg per image (folders named as by run), and for a folder or
    several images OUTPUT/compare_index.html of the sheets; prints the panels' numbers.
    """
    from ..batch.analysis_jobs import CompareJob
    from ..core.config import check_selection
    from ..sweep import parse_alpha_values

    config = imaging.config(thresholds=parse_thresholds(thresholds))
    try:
        alpha_values = None if alphas is None else tuple(parse_alpha_values(alphas))
        for alpha in alpha_values or ():
            check_selection("v2", alpha, None, config.num_scales)  # a one-line usage error before any work
    except ValueError as exc:
        raise typer.BadParameter(f"--alphas: {exc}") from None
    items, any_folder = folders.input_items(images)

    job = CompareJob(config, folders.output, alpha_values, panel_width, imaging.image_pixel_limit, debug)
    result = run_tasks(items, job, workers=folders.worker_count, quiet=quiet,
                       uses_cuda=config.device.startswith("cuda"))
    index = None
    if any_folder or len(items) > 1:
        index = _write_index(folders.output, result.values, result.failures)
    if not quiet:
        _print_report(folders.output, result.values, index)
    print_failures(result.failures)
    if result.interrupted:
        typer.echo("interrupted: the sheets of the images that finished are written", err=True)
    raise typer.Exit(exit_code(len(result.failures), result.internal_errors, result.interrupted))


def _write_index(output: str, compared: Sequence[CompareRecord], failures: Sequence) -> str:
    from ..atomic import write_text
    from ..report.artifacts import COMPARE_INDEX
    from ..report.html import render_compare_index

    path = os.path.join(output, COMPARE_INDEX)
    write_text(path, render_compare_index(output, compared, failures))
    return path


def _print_report(output: str, compared: Sequence[CompareRecord], index: str | None) -> None:
    from rich.console import Console

    from ..report.tables import compact_results_table, fitted_table, results_table

    console: Console = Console(highlight=False)
    panels = [panel for record in compared for panel in record["panels"]]
    if panels:
        table = fitted_table(
            console, results_table(panels, more="all are on the sheets"),
            lambda width: compact_results_table(panels, width, more="all are on the sheets"),
        )
        table.title = "compare: v1, v2 and budget per image"
        console.print(table)
    for line in dict.fromkeys(line for record in compared for line in record["skipped"]):  # once, in order
        console.print(line, markup=False, soft_wrap=True)
    written = [os.path.join(output, record["sheet"]) for record in compared]
    if len(written) == 1:
        console.print(f"written: {written[0]}", markup=False, soft_wrap=True)
    elif written:
        console.print(f"written: {len(written)} sheets in {output}{os.sep}", markup=False, soft_wrap=True)
    if index is not None:
        console.print(f"index: {index}", markup=False, soft_wrap=True)
