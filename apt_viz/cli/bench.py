"""``apt-viz bench``: what APT saves in the vision encoder and LLM prefill of a Qwen VL model, measured (or counted)."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any, Optional

import typer

from ..core.config import Method, Scorer
from .app import EXIT_CODES_TEXT, app, exit_code
from .options import (
    DebugOption,
    ImagesArgument,
    JsonOption,
    MethodOption,
    OutputOption,
    QuietOption,
    RecursiveOption,
    command,
    input_items,
    resolve_device_name,
)
from .run import print_failures

DEFAULT_BENCH_OUTPUT = "bench"
# apt_viz.bench.presets.PRESETS, not imported for --help (it imports transformers); a test keeps them equal.
PRESET_NAMES = (
    "qwen2-vl-2b", "qwen2-vl-7b", "qwen2.5-vl-3b", "qwen2.5-vl-7b", "qwen3-vl-2b", "qwen3-vl-8b", "qwen3.5-9b",
    "tiny", "tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-qwen3.5",
)

BENCH_EXAMPLES = f"""\
Examples:

  apt-viz bench photos/ --device cuda --preset qwen2-vl-7b --batch-size 1,8 --megapixels 1 --parts vision

  apt-viz bench photos/ --device cuda --preset qwen2-vl-2b --batch-size 8 --alphas 0.3 --parts prefill

  apt-viz bench photo.jpg --model ~/models/Qwen2-VL-2B-Instruct --device cuda

  apt-viz bench photos/ --flops-only --preset qwen2.5-vl-7b     # no model, runs anywhere

  apt-viz bench photo.jpg --device cpu --preset qwen2-vl-2b --layers 2 --repeats 3

Presets have random weights: their figures are speed only.

{EXIT_CODES_TEXT}
"""


@command(app, "bench", epilog=BENCH_EXAMPLES)
def bench_command(
    images: ImagesArgument,
    *,
    alphas: Annotated[str, typer.Option(help="Alphas to measure, comma-separated.")] = "0.1,0.3,0.5,0.7,1.0",
    patch_selection_method: MethodOption = Method.BUDGET,
    scorer: Annotated[Scorer, typer.Option(help="Importance scorer.")] = Scorer.ENTROPY,
    device: Annotated[str, typer.Option(help="auto (cuda when available), cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[
        str, typer.Option("--batch-size", help="Batch sizes, comma-separated (images are cycled to fill them).")
    ] = "1",
    model: Annotated[
        Optional[str],
        typer.Option(help="A local checkpoint folder of any family (instead of a preset); config.json names it."),
    ] = None,
    preset: Annotated[
        Optional[str],
        typer.Option(help=f"Architecture with random weights: {', '.join(PRESET_NAMES[:7])}; tiny, "
                     "tiny-<family> (tests). [default: qwen2-vl-2b]", show_default=False),
    ] = None,
    layers: Annotated[
        Optional[int],
        typer.Option(min=1, help="Cut a preset to this many vision blocks and LLM layers (quick CPU runs)."),
    ] = None,
    megapixels: Annotated[
        Optional[float],
        typer.Option(help="Scale every input to about this many megapixels first (1 for ~1 MP photos). "
                     "[default: as given]", show_default=False),
    ] = None,
    parts: Annotated[str, typer.Option(help="What to measure: vision, prefill or both.")] = "vision,prefill",
    question_tokens: Annotated[int, typer.Option(min=0, help="Text tokens after each image in the prompt.")] = 16,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed runs before the timed ones.")] = 2,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs (median and quartiles).")] = 5,
    flops_only: Annotated[
        bool, typer.Option("--flops-only", help="Count tokens and FLOPs only: no model, nothing timed.")
    ] = False,
    output: OutputOption = DEFAULT_BENCH_OUTPUT,
    method_alias: Annotated[Optional[Method], typer.Option("--method", hidden=True)] = None,  # deprecated (0.3)
    batch_alias: Annotated[Optional[str], typer.Option("--batch", hidden=True)] = None,  # deprecated (0.3)
    recursive: RecursiveOption = False,
    quiet: QuietOption = False,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Measure the vision encoder and the LLM prefill of a Qwen VL model, stock against APT, per alpha.

    The vision time includes the image processor's call (APT: with its selection), on the same
    device. Writes OUTPUT/bench.json, bench.csv and bench.png (speedup and peak memory against
    alpha) and prints the table. bf16 and SDPA on a GPU, float32 on the CPU. docs/bench.md has the
    details.
    """
    from ..batch.failures import failure_of
    from ..imaging import INPUT_ERRORS, load_image

    patch_selection_method = _renamed("--method", "-m/--patch-selection-method", method_alias, patch_selection_method)
    batch_size = _renamed("--batch", "--batch-size", batch_alias, batch_size)
    if model is not None and preset is not None:
        raise typer.BadParameter("give --model or --preset, not both")
    if model is not None and layers is not None:
        raise typer.BadParameter("--layers cuts a preset; it does not apply to --model")
    if preset is not None and preset not in PRESET_NAMES:
        raise typer.BadParameter(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")
    if model is not None and not os.path.isfile(os.path.join(model, "config.json")):
        raise typer.BadParameter(f"--model {model}: no config.json there (a local checkpoint folder)")
    settings = _settings(alphas, patch_selection_method, scorer, device, batch_size, megapixels, parts,
                         question_tokens, warmup, repeats, flops_only)
    _check_model(preset, model, layers, flops_only)

    items, _ = input_items(images, recursive, output)
    loaded, failures = [], []
    for item in items:
        try:
            loaded.append(load_image(item.path))
        except INPUT_ERRORS as exc:
            failures.append(failure_of(item.path, exc, debug))
    print_failures(failures)
    if not loaded:
        raise typer.Exit(exit_code(len(failures)))

    from rich.console import Console

    from ..bench.report import bench_document, write_bench
    from ..bench.run import run_bench
    from ..bench.settings import RANDOM_WEIGHTS_NOTE
    from ..bench.tables import bench_table, compact_bench_table

    err = Console(stderr=True, highlight=False)
    progress = None if quiet or json_output else (lambda line: err.print(line, markup=False))
    result = run_bench(loaded, settings, preset=preset, model_dir=model, layers=layers, flops_only=flops_only,
                       progress=progress)
    paths = write_bench(result, output)
    if json_output:
        sys.stdout.write(json.dumps(bench_document(result), indent=2, allow_nan=False) + "\n")
    elif not quiet:
        from ..report.tables import fitted_table

        out = Console(highlight=False)
        out.print(fitted_table(out, bench_table(result), lambda _: compact_bench_table(result)))
        if result.random_weights and not flops_only:
            out.print(f"{RANDOM_WEIGHTS_NOTE}: the weights are random, so these figures say nothing about quality",
                      markup=False, soft_wrap=True)
        out.print(f"written: {', '.join(paths)}", markup=False, soft_wrap=True)
    raise typer.Exit(exit_code(len(failures)))


def _renamed(old: str, new: str, given: Any, value: Any) -> Any:
    """The value of a flag given under its old name, with a one-line warning; ``value`` when it was not."""
    if given is None:
        return value
    typer.echo(f"warning: {old} is deprecated and will be removed; use {new}", err=True)
    return given


def _check_model(preset: str | None, model: str | None, layers: int | None, flops_only: bool) -> None:
    """A usage error for a checkpoint of no known family, or a family apt-viz cannot time yet."""
    from ..bench.models import apt_model_class
    from ..bench.run import bench_architecture

    try:
        arch = bench_architecture(preset, model, layers)
        if not flops_only:
            apt_model_class(arch.family)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _settings(
    alphas: str, method: Method, scorer: Scorer, device: str, batch_size: str, megapixels: float | None, parts: str,
    question_tokens: int, warmup: int, repeats: int, flops_only: bool,
) -> Any:
    """The validated :class:`~apt_viz.bench.settings.BenchSettings` (anything unusable is a usage error)."""
    from ..bench.settings import BenchSettings

    try:
        settings = BenchSettings(
            alphas=parse_numbers(alphas, float, "--alphas"),
            method=method,
            scorer=scorer,
            batch_sizes=parse_numbers(batch_size, int, "--batch-size"),
            device="cpu" if flops_only else resolve_device_name(device),
            warmup=warmup,
            repeats=repeats,
            question_tokens=question_tokens,
            megapixels=megapixels,
            parts=tuple(part.strip() for part in parts.split(",") if part.strip()),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return settings


def parse_numbers(text: str, kind: type, option: str) -> tuple[Any, ...]:
    """``"0.1,0.3"`` -> (0.1, 0.3); a usage error naming ``option`` for anything else.

    Args:
        text: Comma- (or space-) separated numbers.
        kind: ``int`` or ``float``.
        option: The option's name, for the error.

    Returns:
        The numbers.
    """
    parts: Sequence[str] = [part for part in text.replace(" ", ",").split(",") if part]
    try:
        values = tuple(kind(part) for part in parts)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint=option) from None
    if not values:
        raise typer.BadParameter("give at least one value", param_hint=option)
    return values
