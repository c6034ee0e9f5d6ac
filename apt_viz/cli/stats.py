"""``apt-viz stats``: APT token statistics of a whole dataset into one Parquet table."""
from __future__ import annotations

import enum
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..core.config import BudgetUnit, Method
from .app import EXIT_CODES_TEXT, EXIT_INTERRUPTED, EXIT_USAGE, app, exit_code
from .options import DebugOption, ImageOptions, JsonOption, MethodOption, QuietOption, RecursiveOption, command

if TYPE_CHECKING:  # pragma: no cover
    from ..stats.local import RunReport
    from ..stats.settings import StatsPlan
    from ..stats.summary import TableSummary

STATS_EXAMPLES = f"""\
Examples:

  apt-viz stats photos/ -r -o stats.parquet -m budget --alpha 0.2,0.3,0.5

  apt-viz stats @train_list.txt -o stats.parquet -m v2 --alpha 0.8:1.2:0.1 --save-masks

  apt-viz stats photos/ -o stats.parquet -m v1 --thresholds 3,2 --thresholds 4,3

  apt-viz stats photos/ -o stats.parquet -m budget --alpha 0.3 --resume      # after an interruption

  apt-viz stats s3://bucket/images/ -o s3://bucket/apt_stats.parquet -m budget --alpha 0.3 \\
      --engine ray --ray-address head:6379 --device cuda     # see docs/ray.md

{EXIT_CODES_TEXT}
"""


class Engine(str, enum.Enum):
    """Where a ``stats`` run executes."""

    LOCAL = "local"  # this machine: decode workers + one scoring process
    RAY = "ray"  # Ray Data: local Ray by default, a cluster with --ray-address

    def __str__(self) -> str:
        return self.value


InputsArgument = Annotated[
    list[str],
    typer.Argument(help="Image files, folders, @list.txt files (one path per line); with --engine ray also "
                   "remote URIs such as s3://bucket/images/.", show_default=False),
]
TableOption = Annotated[
    str,
    typer.Option("--output", "-o", help="The Parquet file to write; with --engine ray also a remote URI "
                 "(s3://bucket/stats.parquet).", show_default=False),
]


# The help of stats' own options (one line each in the signature below).
HELP = {
    "alpha": "v2 / budget: one or more alphas, comma-separated and/or start:stop:step (inclusive), "
    "e.g. 0.2,0.3 or 0.1:0.9:0.1. [default: v2 1.0; budget: required]",
    "thresholds": "v1: a threshold pair per scale above the base (2p first); repeat it or separate "
    'pairs by ";" for several: --thresholds 3,2 --thresholds 4,3. [default: 3,2]',
    "workers": "Decode processes (0: one per CPU core); --engine ray: the CPUs of a local Ray (0: all).",
    "batch_size": "Same-size images scored per call on a GPU, or by the Ray engine's actors "
    "(0: 32 on a GPU, 8 on the CPU). On the CPU the local engine's workers take one image each.",
    "resume": "Keep the rows already in the table (or left by an interrupted run) and add the missing "
    "(input, setting) rows.",
    "save_masks": "Also store each selection (about 200 bytes per 1 MP image); read it back with "
    "apt_viz.read_masks / decode_masks.",
    "row_group_size": "Rows per Parquet row group; with the local engine also how often rows are committed (a "
    "kill loses at most the uncommitted ones).",
    "plot": "Write a histogram of the LLM tokens saved per setting beside the table (TABLE.savings.png).",
    "fidelity": "Add the fidelity columns (psnr, ssim, psnr_detail, uniform_*, random_*: docs/fidelity.md), the "
    "values of apt-viz run's stats.json. Costs more than the rest of the row; the local engine then runs every "
    "image in its workers.",
    "budget_unit": "budget: what alpha is a fraction of: vision (the base patches) or llm (the stock LLM tokens). "
    "[default: vision]",
    "engine": "local: this machine; ray: Ray Data (pip install apt-viz[ray]).",
    "ray_address": "--engine ray: the cluster to join (HOST:PORT of `ray start --head`, auto, ray://head:10001); "
    "default: a local Ray. A cluster with token authentication needs RAY_AUTH_MODE=token and its token "
    "(docs/ray.md).",
}


@command(app, "stats", epilog=STATS_EXAMPLES)
def stats_command(
    inputs: InputsArgument,
    *,
    output: TableOption,
    patch_selection_method: MethodOption = Method.V1,
    alpha: Annotated[Optional[str], typer.Option(help=HELP["alpha"], show_default=False)] = None,
    thresholds: Annotated[Optional[list[str]], typer.Option(help=HELP["thresholds"], show_default=False)] = None,
    recursive: RecursiveOption = False,
    workers: Annotated[int, typer.Option("--workers", "-j", min=0, help=HELP["workers"])] = 0,
    batch_size: Annotated[int, typer.Option(min=0, help=HELP["batch_size"])] = 0,
    resume: Annotated[bool, typer.Option("--resume", help=HELP["resume"])] = False,
    save_masks: Annotated[bool, typer.Option("--save-masks", help=HELP["save_masks"])] = False,
    fidelity: Annotated[bool, typer.Option("--fidelity/--no-fidelity", help=HELP["fidelity"])] = False,
    budget_unit: Annotated[Optional[BudgetUnit], typer.Option(help=HELP["budget_unit"], show_default=False)] = None,
    row_group_size: Annotated[int, typer.Option(min=1, help=HELP["row_group_size"])] = 4096,
    plot: Annotated[bool, typer.Option("--plot/--no-plot", help=HELP["plot"])] = True,
    engine: Annotated[Engine, typer.Option(help=HELP["engine"])] = Engine.LOCAL,
    ray_address: Annotated[Optional[str], typer.Option(help=HELP["ray_address"], show_default=False)] = None,
    imaging: ImageOptions,
    quiet: QuietOption = False,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Token statistics of a dataset: one Parquet row per (input, setting).

    Each image is decoded and resized once, scored once, and every setting (each --alpha, or each
    --thresholds pair) is selected from the same maps. The numbers equal those of
    apt-viz run --stats-only for the same file and settings. A bad input gets rows with the reason
    in the error column; the run goes on and exits 1. Ends with per-setting retention and LLM-token
    percentiles and writes TABLE.savings.png.
    """
    started = time.perf_counter()
    plan = _plan(imaging, patch_selection_method, alpha, thresholds, save_masks, debug, engine, fidelity, budget_unit)
    paths = _inputs(inputs, recursive, output, engine)
    if engine is Engine.RAY:
        report = _run_ray(plan, paths, output, ray_address, workers, batch_size, resume, row_group_size, started)
    else:
        report = _run_local(plan, paths, output, workers, batch_size, resume, row_group_size, quiet or json_output,
                            started)
    _report(plan, report, output, engine, plot, quiet, json_output)


# --- settings and inputs ----------------------------------------------------------------------------

def _plan(imaging: ImageOptions, method: Method, alpha: str | None, thresholds: Sequence[str] | None,
          save_masks: bool, debug: bool, engine: Engine, fidelity: bool = False,
          budget_unit: BudgetUnit | None = None) -> StatsPlan:
    """The validated plan; anything that does not fit is a usage error (exit 2).

    With Ray the scoring runs on the cluster's actors, each seeing its one GPU as ``cuda``: the
    device is not looked for on this machine (``auto`` means the CPU there; ask for ``cuda``).
    """
    import dataclasses

    from ..stats.settings import StatsPlan, settings_of
    from ..sweep import parse_alpha_values, parse_threshold_grid

    if engine is Engine.RAY:
        device = "cuda" if imaging.device.startswith("cuda") else "cpu"
        config = dataclasses.replace(imaging, device="cpu").config().replace(device=device)
    else:
        config = imaging.config()
    try:
        alphas = parse_alpha_values(alpha) if alpha is not None else []
        pairs = [pair for text in thresholds or [] for pair in parse_threshold_grid(text, imaging.num_scales)]
        settings = settings_of(method, alphas, pairs, imaging.num_scales, budget_unit)
        return StatsPlan(config, settings, save_masks=save_masks, max_image_pixels=imaging.image_pixel_limit,
                         debug=debug, fidelity=fidelity)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _inputs(inputs: Sequence[str], recursive: bool, output: str, engine: Engine) -> list[str]:
    from ..stats.inputs import StatsInputError, expand_stats_inputs, is_remote

    try:
        paths = expand_stats_inputs(inputs, recursive, exclude=None if is_remote(output) else output)
    except StatsInputError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not paths:
        hint = "" if recursive else " (try --recursive)"
        raise typer.BadParameter(f"no images found in {', '.join(inputs)}{hint}")
    remote = [path for path in (*paths, output) if is_remote(path)]
    if remote and engine is not Engine.RAY:
        raise typer.BadParameter(f"{remote[0]}: remote storage is read and written by --engine ray only")
    return paths


# --- engines ----------------------------------------------------------------------------------------

def _run_local(plan: StatsPlan, paths: list[str], output: str, workers: int, batch_size: int, resume: bool,
               row_group_size: int, quiet: bool, started: float) -> RunReport:
    from rich.console import Console

    from ..batch.progress import progress_bar
    from ..batch.workers import graceful_stop
    from ..stats.local import run_local
    from ..stats.table import StatsTableError

    err = Console(stderr=True, highlight=False)
    workers = workers or os.cpu_count() or 1
    batch_size = batch_size or (32 if plan.config.device.startswith("cuda") else 8)
    try:
        with graceful_stop() as stop:
            return run_local(plan, paths, output, workers=workers, batch_size=batch_size, resume=resume,
                             row_group_size=row_group_size, stop=stop, started=started,
                             progress=lambda total: progress_bar(err, total, "apt-viz stats",
                                                                 enabled=not quiet and total > 1))
    except StatsTableError as exc:
        raise typer.BadParameter(str(exc)) from None
    except KeyboardInterrupt:
        err.print(f"interrupted: committed rows are kept in {output}.partial; rerun with --resume to complete "
                  "the table", markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _run_ray(plan: StatsPlan, paths: list[str], output: str, address: str | None, workers: int, batch_size: int,
             resume: bool, row_group_size: int, started: float) -> RunReport:
    """Run on Ray; Ray that cannot start or be joined is a usage error told in one line (exit 2)."""
    if resume:
        raise typer.BadParameter("--resume is for the local engine (it reads tables written by either engine); "
                                 "--engine ray writes the whole table")
    from ..stats.inputs import StatsInputError
    from ..stats.ray_engine import RayUnavailable, run_ray
    from ..stats.table import StatsTableError

    try:
        return run_ray(plan, paths, output, address=address, cpus=workers or None, row_group_size=row_group_size,
                       batch_size=batch_size or (32 if plan.config.device.startswith("cuda") else 8), started=started)
    except (StatsTableError, StatsInputError) as exc:
        raise typer.BadParameter(str(exc)) from None
    except RayUnavailable as exc:
        typer.echo(f"apt-viz stats: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


# --- the end ----------------------------------------------------------------------------------------

def _report(plan: StatsPlan, report: RunReport, output: str, engine: Engine, plot: bool, quiet: bool,
            json_output: bool) -> None:
    import json

    from rich.console import Console

    from ..stats.summary import summarise, summary_table

    summary = summarise(output, plan.labels)
    figure_path = _write_plot(summary, output) if plot else None
    err = Console(stderr=True, highlight=False)
    if json_output:
        document = _document(report, summary, output, engine, figure_path)
        sys.stdout.write(json.dumps(document, indent=2, allow_nan=False) + "\n")
    elif not quiet:
        wide = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
        out = Console(highlight=False, width=wide)
        out.print(summary_table(summary))
        for line in _closing_lines(report, summary, output, figure_path):
            out.print(line, markup=False, soft_wrap=True)
    for path, error in summary.failures:
        err.print(f"failed: {error}" if error.startswith(path) else f"failed: {path}: {error}", markup=False,
                  soft_wrap=True)
    if summary.failed_inputs > len(summary.failures):
        err.print(f"... and {summary.failed_inputs - len(summary.failures)} more failed inputs (see the error "
                  f"column of {output})", markup=False, soft_wrap=True)
    if report.interrupted:
        err.print("interrupted: the table holds what was done; rerun with --resume to add the rest",
                  markup=False, soft_wrap=True)
    raise typer.Exit(exit_code(report.failed, report.internal_errors, report.interrupted))


def _write_plot(summary: TableSummary, output: str) -> str | None:
    from ..atomic import atomic_open
    from ..stats.inputs import is_remote
    from ..stats.summary import plot_path, savings_figure

    figure = savings_figure(summary)
    if figure is None or is_remote(output):
        return None
    path = plot_path(output)
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png")
    return path


def _closing_lines(report: RunReport, summary: TableSummary, output: str, figure_path: str | None) -> list[str]:
    done = (f"{report.inputs} input(s): {report.processed} processed in {report.seconds:.1f} s "
            f"({report.images_per_second:.1f} images/s), {report.failed} failed")
    if report.skipped:
        done += f", {report.skipped} already in the table (skipped)"
    lines = [done, f"table: {output} ({summary.rows} rows)"]
    if figure_path:
        lines.append(f"plot: {figure_path}")
    return lines


def _document(report: RunReport, summary: TableSummary, output: str, engine: Engine,
              figure_path: str | None) -> dict[str, Any]:
    return {
        "table": output, "engine": str(engine), "plot": figure_path,
        "inputs": report.inputs, "processed": report.processed, "failed": report.failed,
        "skipped_existing": report.skipped, "interrupted": report.interrupted,
        "seconds": report.seconds, "images_per_second": report.images_per_second,
        "summary": summary.to_dict(),
    }
