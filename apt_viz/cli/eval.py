"""``apt-viz eval DATA --model DIR``: what APT settings cost in answers, against the stock model and baselines."""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer

from ..core.config import BudgetUnit, Method, Scorer
from ..eval.settings import BASELINE_NAMES, DType
from .app import EXIT_CODES_TEXT, EXIT_INTERRUPTED, EXIT_USAGE, app, exit_code
from .options import (
    PILLOW_MAX_IMAGE_PIXELS,
    AlphaListOption,
    BatchSizeOption,
    BudgetUnitOption,
    DebugOption,
    DeviceOption,
    DTypeOption,
    JsonOption,
    MethodOption,
    QuietOption,
    SeedOption,
    ThresholdGridOption,
    command,
    resolve_device_name,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..eval.data import Example
    from ..eval.model import EvalModel
    from ..eval.run import EvalReport
    from ..eval.settings import EvalPlan
    from ..eval.summary import SettingSummary
    from ..eval.table import EvalTable

DEFAULT_EVAL_OUTPUT = "eval.parquet"
DEFAULT_ALPHA = "0.3"

EVAL_EXAMPLES = f"""\
Examples:

  apt-viz eval examples/eval_sample.jsonl --model ~/models/Qwen2-VL-2B-Instruct --device cuda

  apt-viz eval vqa.jsonl --model ~/models/Qwen2-VL-7B-Instruct -m budget --alpha 0.2,0.3,0.5 --batch-size 8 \\
      -o vqa_eval.parquet

  apt-viz eval photos/ --prompt "Describe this image." --model ckpt/ --baselines none

  apt-viz eval vqa.jsonl --model ckpt/ -o vqa_eval.parquet --resume      # after an interruption

Writes FILE.parquet (one row per example and setting), FILE.summary.json and FILE.html (docs/eval.md).

{EXIT_CODES_TEXT}
"""

HELP = {
    "data": "A JSONL file (one object per line: image, prompt, optional answer; image paths relative to the file) "
    "or a folder of images (with --prompt).",
    "model": "A local checkpoint folder (config.json, weights, tokenizer, processor); its family comes from "
    "config.json. Required.",
    "prompt": "The prompt of every image of a folder (and of JSONL lines without one).",
    "baselines": f"Baselines at each APT setting's cost, comma-separated: {', '.join(BASELINE_NAMES)}; or none.",
    "scorer": "Importance scorer of the APT settings.",
    "max_new_tokens": "Greedy answer length limit.",
    "output": "The Parquet table to write (its summary and HTML page go beside it).",
    "resume": "Keep the rows already in the table (or left by an interrupted run) and add the missing ones.",
    "html_examples": "Examples shown on the HTML page (0: no page).",
    "max_image_pixels": "Refuse larger images (decompression-bomb guard; 0: no limit). [default: Pillow's]",
}


@command(app, "eval", epilog=EVAL_EXAMPLES)
def eval_command(
    data: Annotated[str, typer.Argument(metavar="DATA", help=HELP["data"], show_default=False)],
    *,
    model: Annotated[Optional[str], typer.Option("--model", metavar="DIR", help=HELP["model"],
                                                 show_default=False)] = None,
    patch_selection_method: MethodOption = Method.BUDGET,
    alpha: AlphaListOption = None,
    thresholds: ThresholdGridOption = None,
    budget_unit: BudgetUnitOption = BudgetUnit.VISION,
    scorer: Annotated[Scorer, typer.Option(help=HELP["scorer"])] = Scorer.ENTROPY,
    baselines: Annotated[str, typer.Option(help=HELP["baselines"])] = ",".join(BASELINE_NAMES),
    prompt: Annotated[Optional[str], typer.Option(help=HELP["prompt"], show_default=False)] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help=HELP["max_new_tokens"])] = 16,
    batch_size: BatchSizeOption = 1,
    device: DeviceOption = "auto",
    dtype: DTypeOption = DType.AUTO,
    seed: SeedOption = 0,
    output: Annotated[str, typer.Option("--output", "-o", help=HELP["output"])] = DEFAULT_EVAL_OUTPUT,
    resume: Annotated[bool, typer.Option("--resume", help=HELP["resume"])] = False,
    html_examples: Annotated[int, typer.Option(min=0, help=HELP["html_examples"])] = 50,
    max_image_pixels: Annotated[int, typer.Option(min=0, help=HELP["max_image_pixels"],
                                                  show_default=False)] = PILLOW_MAX_IMAGE_PIXELS,
    quiet: QuietOption = False,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Answer DATA with the stock model and with each APT setting and baseline; compare the answers.

    The stock model is the reference: for every example, each APT setting (one per --alpha) and each
    baseline at that setting's cost runs on the same prompt, and its row holds the tokens, the
    prefill time, the KL divergence of its first-token distribution from stock's, whether the top-1
    token and the greedy answer agree with stock's, and whether the answer matches the gold answer.
    A bad example gets error rows; the run goes on and exits 1.
    """
    started = time.perf_counter()
    if model is None:
        _usage_error("--model DIR is required: a local checkpoint folder (nothing is downloaded)")
    if patch_selection_method is not Method.BUDGET and budget_unit is not BudgetUnit.VISION:
        raise typer.BadParameter(f"--budget-unit applies to budget, not {patch_selection_method}")
    device_name = resolve_device_name(device)
    plan = _plan(model, patch_selection_method, alpha, thresholds, budget_unit, scorer, baselines, max_new_tokens,
                 seed)
    examples = _examples(data, prompt)
    # The table first: a --resume of another run's table is refused before minutes of model loading.
    table = _open_table(output, _run_settings(plan, model, device_name, dtype, examples), resume)
    loaded = _load(model, device_name, dtype, table)
    report, rows = _run(plan, loaded, examples, table, batch_size, max_image_pixels or None, debug,
                        quiet or json_output, started)
    _finish(plan, loaded, examples, report, rows, output, data, html_examples, quiet, json_output)


# --- setting up: every problem here is one line, exit 2 ------------------------------------------------

def _usage_error(message: str) -> NoReturn:
    typer.echo(f"apt-viz eval: error: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _plan(model: str, method: Method, alpha: str | None, thresholds: Sequence[str] | None, budget_unit: BudgetUnit,
          scorer: Scorer, baselines: str, max_new_tokens: int, seed: int) -> EvalPlan:
    from ..checkpoint import read_checkpoint
    from ..core.config import APTConfig
    from ..eval.settings import EvalPlan, parse_baselines
    from ..stats.settings import settings_of
    from ..sweep import parse_alpha_values, parse_threshold_grid

    try:
        checkpoint = read_checkpoint(model)
    except ValueError as exc:
        _usage_error(str(exc))
    try:
        config = APTConfig(**checkpoint.config_fields(), scorer=scorer, seed=seed)
        if alpha is None and method is Method.BUDGET:
            alpha = DEFAULT_ALPHA
        alphas = parse_alpha_values(alpha) if alpha is not None else []
        pairs = [pair for text in thresholds or [] for pair in parse_threshold_grid(text, config.num_scales)]
        return EvalPlan(config, settings_of(method, alphas, pairs, config.num_scales), parse_baselines(baselines),
                        budget_unit, max_new_tokens)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _examples(data: str, prompt: str | None) -> list[Example]:
    from ..eval.data import read_examples

    try:
        return read_examples(data, prompt)
    except ValueError as exc:
        _usage_error(str(exc))


def _load(model: str, device: str, dtype: DType, table: EvalTable) -> EvalModel:
    import torch

    from ..eval.model import load_eval_model

    try:
        return load_eval_model(model, torch.device(device), dtype)
    except ValueError as exc:
        table.abandon()
        _usage_error(str(exc))
    except BaseException:  # Ctrl-C or a bug while loading: nothing was written, leave no OUT.partial
        table.abandon()
        raise


def _open_table(output: str, run_settings: dict[str, Any], resume: bool) -> EvalTable:
    from ..batch.parts import TableError
    from ..eval.table import EvalTable

    try:
        return EvalTable(output, run_settings, resume=resume)
    except TableError as exc:
        _usage_error(str(exc))


# --- running ----------------------------------------------------------------------------------------

def _run_settings(plan: EvalPlan, model: str, device: str, dtype: DType, examples: Sequence[Example]) -> dict[str, Any]:
    """What must match for ``--resume`` to add to a table."""
    import torch

    from ..checkpoint import read_checkpoint
    from ..eval.data import data_fingerprint

    image_settings = plan.config.to_dict()
    return {
        "model": os.path.abspath(model),
        "model_type": read_checkpoint(model).model_type,  # read by _plan already: it cannot fail here
        "dtype": str(dtype.torch_dtype(torch.device(device))).removeprefix("torch."),
        "max_new_tokens": plan.max_new_tokens,
        "scorer": str(plan.config.scorer),  # the APT settings' maps (the setting labels leave it out)
        "seed": plan.config.seed,  # the random scorer's and the random baseline's maps
        "data": data_fingerprint(examples),
        "processor": {name: image_settings[name] for name in ("patch_size", "merge_size", "min_pixels", "max_pixels",
                                                               "resize", "backend")},
    }


def _run(plan: EvalPlan, loaded: EvalModel, examples: Sequence[Example], table: EvalTable, batch_size: int,
         max_image_pixels: int | None, debug: bool, quiet: bool, started: float) -> tuple[EvalReport, list[dict]]:
    import pyarrow.parquet as pq
    from rich.console import Console

    from ..batch.progress import progress_bar
    from ..batch.workers import graceful_stop
    from ..eval.run import EvalReport, run_eval

    err = Console(stderr=True, highlight=False)
    report = EvalReport(examples=len(examples))
    try:
        with table, graceful_stop() as stop:
            run_eval(plan, loaded, examples, table, batch_size=batch_size, max_image_pixels=max_image_pixels,
                     stop=stop, debug=debug, report=report,
                     progress=lambda total: progress_bar(err, total, "apt-viz eval", enabled=not quiet and total > 1,
                                                         unit="examples"))
            report.rows = table.finish()
    except KeyboardInterrupt:
        err.print(f"interrupted: committed rows are kept in {table.partial}; rerun with --resume to complete the "
                  "table", markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    report.seconds = time.perf_counter() - started
    return report, pq.read_table(table.output).to_pylist()


# --- the end ----------------------------------------------------------------------------------------

def _finish(plan: EvalPlan, loaded: EvalModel, examples: Sequence[Example], report: EvalReport, rows: list[dict],
            output: str, data: str, html_examples: int, quiet: bool, json_output: bool) -> None:
    from rich.console import Console

    from ..atomic import write_json, write_text
    from ..eval.html import render_page
    from ..eval.summary import output_paths, summarise, summary_document, summary_table

    summaries = summarise(output, plan.labels)
    paths = output_paths(output)
    document = summary_document(
        summaries, table=output, model=loaded.checkpoint.path, model_family=str(loaded.family.family), data=data,
        examples=report.examples, processed=report.processed, failed=report.failed, skipped_existing=report.skipped,
        interrupted=report.interrupted, seconds=report.seconds, examples_per_second=report.examples_per_second,
        failures=[{"input": f.input, "error": f.error, "kind": f.kind} for f in report.failures],
    )
    write_json(paths["summary"], document)
    if html_examples:
        write_text(paths["html"], render_page(plan, examples, rows, f"apt-viz eval: {loaded.checkpoint.path}",
                                              html_examples))
    err = Console(stderr=True, highlight=False)
    if json_output:
        sys.stdout.write(json.dumps(document, indent=2, allow_nan=False) + "\n")
    elif not quiet:
        wide = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
        out = Console(highlight=False, width=wide)
        out.print(summary_table(summaries))
        for line in _closing_lines(report, summaries, output, paths, html_examples):
            out.print(line, markup=False, soft_wrap=True)
    for failure in report.failures:
        err.print(f"failed: {failure.error}", markup=False, soft_wrap=True)
    if report.interrupted:
        err.print("interrupted: the table holds what was done; rerun with --resume to add the rest", markup=False,
                  soft_wrap=True)
    raise typer.Exit(exit_code(report.failed, report.internal_errors, report.interrupted))


def _closing_lines(report: EvalReport, summaries: Sequence[SettingSummary], output: str, paths: dict[str, str],
                   html_examples: int) -> list[str]:
    done = (f"{report.examples} example(s): {report.processed} processed in {report.seconds:.1f} s "
            f"({report.examples_per_second:.2f} examples/s), {report.failed} failed")
    if report.skipped:
        done += f", {report.skipped} already in the table (skipped)"
    rows = sum(s.examples + s.failed for s in summaries)
    lines = [done, f"table: {output} ({rows} rows)", f"summary: {paths['summary']}"]
    if html_examples:
        lines.append(f"page: {paths['html']}")
    return lines
