"""``apt-viz run``: analyse images, write their folders, summaries and index.html, print the table."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from .app import EXAMPLES, app, exit_code
from .options import (
    DebugOption,
    FolderOptions,
    ImageOptions,
    ImagesArgument,
    JsonOption,
    QuietOption,
    SelectionOptions,
    command,
)

T = TypeVar("T")

if TYPE_CHECKING:  # pragma: no cover
    from ..batch.inputs import InputItem
    from ..batch.jobs import BatchResult, ImageJob, Job, Outcome
    from ..report.records import StatsRecord
    from ..report.summary import Failure


@command(app, "run", epilog=EXAMPLES)
def run_command(
    images: ImagesArgument,
    *,
    selection: SelectionOptions,
    folders: FolderOptions,
    stats_only: Annotated[bool, typer.Option("--stats-only", help="Write stats.json and summaries only.")] = False,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Skip inputs whose stats.json already exists.")
    ] = False,
    fidelity: Annotated[
        bool,
        typer.Option("--fidelity/--no-fidelity",
                     help="Measure what APT costs in pixels against a uniform downscale and random patches at "
                     "equal cost (stats.json's fidelity, 04_fidelity/; docs/fidelity.md)."),
    ] = True,
    imaging: ImageOptions,
    quiet: QuietOption = False,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Analyse images: importance heatmaps, patch overlay, stats.json, and a table of the tokens.

    Each input gets OUTPUT/<name>/ with 01_heatmaps/, 02_patches_grid/, 03_original_resized/,
    04_fidelity/ (unless --no-fidelity) and stats.json; a folder run adds OUTPUT/summary.json,
    summary.csv and index.html.
    """
    from ..batch.jobs import ImageJob

    config = imaging.config(**selection.settings())
    job = ImageJob(config, folders.output, stats_only, imaging.image_pixel_limit, debug, fidelity)
    items, any_folder = folders.input_items(images)
    code = execute(items, job, several=any_folder or len(items) > 1, workers=folders.worker_count,
                   skip_existing=skip_existing, quiet=quiet, json_output=json_output)
    raise typer.Exit(code)


def print_failures(failures: Sequence[Failure]) -> None:
    """One line per failure on stderr, even with --quiet / --json: errors are never silent."""
    for failure in failures:
        typer.echo(f"failed: {failure.error}", err=True)


def run_tasks(
    items: Sequence[InputItem],
    job: Job[T],
    *,
    workers: int,
    quiet: bool,
    uses_cuda: bool,
    done: Sequence[Outcome[T]] = (),
) -> BatchResult[T]:
    """:func:`apt_viz.batch.jobs.run_batch` with a progress bar on stderr (several inputs, not quiet)
    and the first Ctrl-C / SIGTERM turned into a clean stop; every command runs its inputs this way."""
    from rich.console import Console

    from ..batch.jobs import run_batch
    from ..batch.progress import progress_bar
    from ..batch.workers import graceful_stop

    err = Console(stderr=True, highlight=False)
    with graceful_stop() as stop, progress_bar(err, len(items), enabled=not quiet and len(items) > 1) as advance:
        return run_batch(items, job, workers=workers, done=done, stop=stop, uses_cuda=uses_cuda,
                         on_done=lambda outcome: advance(1, outcome.item.name[:40]))


def execute(
    items: Sequence[InputItem],
    job: ImageJob,
    *,
    several: bool = False,
    workers: int = 1,
    skip_existing: bool = False,
    quiet: bool = False,
    json_output: bool = False,
) -> int:
    """Run ``items`` with ``job`` and report; returns the exit code.

    stdout carries the table (or, with ``--json``, only the JSON document); progress and
    failures go to stderr. ``several``: also write summary.json, summary.csv and index.html.
    """
    from rich.console import Console

    from ..report.summary import run_document

    out = Console(highlight=False)  # not a terminal: 80 columns (or $COLUMNS) and the compact table
    err = Console(stderr=True, highlight=False)
    done = [previous for item in items if (previous := job.previous(item))] if skip_existing else []
    result = run_tasks(items, job, workers=workers, quiet=quiet, uses_cuda=job.config.device.startswith("cuda"),
                       done=done)

    document = run_document(
        result.values, result.failures, job.config.to_dict(), skipped=result.skipped, interrupted=result.interrupted
    )
    if several:
        _write_summaries(job.output, document, result)
    if json_output:
        sys.stdout.write(json.dumps(document, indent=2, allow_nan=False) + "\n")
    elif not quiet:
        _print_summary(out, document, result.values, several)
        out.print(f"artifacts: {job.output}{os.sep}", markup=False, soft_wrap=True)
    print_failures(result.failures)
    if result.interrupted:
        err.print("interrupted: finished images are complete; rerun with --skip-existing to do the rest",
                  markup=False, soft_wrap=True)
    return exit_code(len(result.failures), result.internal_errors, result.interrupted)


def _write_summaries(output: str, document: dict[str, Any], result: BatchResult[StatsRecord]) -> None:
    from ..atomic import write_json, write_text
    from ..report.html import render_index
    from ..report.summary import summary_csv

    write_json(os.path.join(output, "summary.json"), document)
    write_text(os.path.join(output, "summary.csv"), summary_csv(result.values, result.failures))
    write_text(os.path.join(output, "index.html"), render_index(output, result.values, result.failures))


def _print_summary(out: Any, document: dict[str, Any], records: Sequence[StatsRecord], several: bool) -> None:
    from ..report.summary import summary_lines
    from ..report.tables import compact_results_table, fitted_table, results_table

    if records:
        out.print(fitted_table(out, results_table(records), lambda width: compact_results_table(records, width)))
    if several:
        for line in summary_lines(document):
            out.print(line, markup=False, soft_wrap=True)
