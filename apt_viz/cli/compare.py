"""``apt-viz compare``: the v1, v2 and budget overlays of one image side by side."""
from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from .app import EXIT_CODES_TEXT, EXIT_OK, app
from .options import (
    DEFAULT_OUTPUT,
    ImageOptions,
    OutputOption,
    QuietOption,
    ThresholdsOption,
    command,
    parse_thresholds,
)
from .run import exit_code, print_failures

COMPARE_EXAMPLES = f"""\
Examples:

  apt-viz compare image.jpg                   # v1 (3,2), v2 alpha 1.0, budget alpha 0.5

  apt-viz compare image.jpg --alphas 0.3,0.6  # one row of v2 + budget per alpha

{EXIT_CODES_TEXT}
"""


@command(app, "compare", epilog=COMPARE_EXAMPLES)
def compare_command(
    image: Annotated[str, typer.Argument(help="One image file.", show_default=False)],
    *,
    output: OutputOption = DEFAULT_OUTPUT,
    alphas: Annotated[
        Optional[str],
        typer.Option(help="Alphas for the v2 and budget panels, one row each (same syntax as sweep --values). "
                     "[default: v2 1.0, budget 0.5]", show_default=False),
    ] = None,
    thresholds: ThresholdsOption = None,
    panel_width: Annotated[
        Optional[int], typer.Option(min=64, help="Scale each panel down to this width (px).", show_default=False)
    ] = None,
    imaging: ImageOptions,
    quiet: QuietOption = False,
) -> None:
    """One sheet with the v1, v2 and budget patch overlays of IMAGE side by side.

    Each panel is captioned with its setting, tokens / N, retention and Qwen2-VL LLM tokens.
    Writes OUTPUT/<image name>/compare.jpg and prints the panels' numbers.
    """
    from ..atomic import save_image
    from ..batch.pool import analyze_input
    from ..core.config import check_selection
    from ..render.compare import compare_sheet
    from ..report.records import stats_record
    from ..report.summary import Failure
    from ..sweep import parse_alpha_values

    config = imaging.config(thresholds=parse_thresholds(thresholds))
    try:
        alpha_values = None if alphas is None else parse_alpha_values(alphas)
        for alpha in alpha_values or []:
            check_selection("v2", alpha, None, config.num_scales)  # a one-line usage error before any work
    except ValueError as exc:
        raise typer.BadParameter(f"--alphas: {exc}") from None
    if not os.path.isfile(image):
        raise typer.BadParameter(f"{image}: no such file")

    analysed = analyze_input(image, config, imaging.image_pixel_limit)
    if isinstance(analysed, Failure):
        print_failures([analysed])
        raise typer.Exit(exit_code([analysed]))
    sheet = compare_sheet(analysed[1], alpha_values, panel_width=panel_width)
    written = os.path.join(output, os.path.basename(image), "compare.jpg")
    save_image(sheet.image, written, quality=90)
    if not quiet:
        from rich.console import Console

        from ..report.tables import results_table

        console = Console(highlight=False, soft_wrap=False)
        records = [stats_record(panel.analysis) for panel in sheet.panels]
        for record in records:
            record["name"] = os.path.basename(image)
        table = results_table(records)
        table.title = f"compare: {image}"
        console.print(table)
        for line in sheet.skipped:
            console.print(line, markup=False)
        console.print(f"written: {written}", markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_OK)
