"""The ``apt-viz`` command line (Typer). Thin: options -> APTConfig -> batch run -> report.

``apt-viz IMAGE ...`` runs the ``run`` command: :func:`main` inserts ``run`` when the first
argument is not a subcommand, so ``apt-viz --help``, ``apt-viz --version`` and other subcommands
keep working. The option types below (``MethodOption``, ...) and :func:`build_config` are shared
by every command that analyses images. torch and friends are imported only once a command runs.
"""
from __future__ import annotations

import enum
import json
import os
import sys
from typing import Annotated, Any, Optional, Sequence

import typer
from PIL import Image

from . import __version__
from .batch import JobOptions
from .config import AGGREGATES, METHODS, SCORERS, APTConfig
from .imaging import MAX_PIXELS, MERGE_SIZE, MIN_PIXELS, PATCH_SIZE, TEMPORAL_PATCH_SIZE

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_OUTPUT = "visualizations"
PILLOW_MAX_IMAGE_PIXELS: int = Image.MAX_IMAGE_PIXELS or 0  # Pillow's decompression-bomb limit

EXAMPLES = """\
Examples:

  apt-viz image.jpg --patch-selection-method budget --alpha 0.3

  apt-viz photos/ --recursive --workers 2 -o out/

  apt-viz photos/ --stats-only --json > stats.json

  apt-viz image.jpg --patch-selection-method v1 --thresholds 3.5,2.5 --scorer laplacian

Exit codes: 0 all done, 1 some inputs failed (the rest completed), 2 usage error, 130 interrupted.
"""

app = typer.Typer(
    name="apt-viz",
    help="See and measure Adaptive Patch Tokenization (APT) for Qwen2-VL.\n\n"
    "apt-viz IMAGE... is short for apt-viz run IMAGE...; apt-viz run --help lists every option.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# --- options shared by every command that analyses images ---------------------------------------

ImagesArgument = Annotated[
    list[str], typer.Argument(help="Image files and/or folders of images.", show_default=False)
]
OutputOption = Annotated[str, typer.Option("--output", "-o", help="Output folder.")]
def _choices(name: str, values: Sequence[str]) -> type[enum.Enum]:
    """A str Enum of ``values`` (Typer's way of declaring choices; an unknown value exits 2)."""
    return enum.Enum(name, {value: value for value in values}, type=str)


Method = _choices("Method", METHODS)
Scorer = _choices("Scorer", SCORERS)
Aggregate = _choices("Aggregate", AGGREGATES)

MethodOption = Annotated[
    Method,
    typer.Option(
        "--patch-selection-method", "-m",
        help="v1: fixed thresholds; v2: alpha * mean score per scale; budget: round(alpha * N) tokens.",
    ),
]
AlphaOption = Annotated[
    Optional[float],
    typer.Option(
        help="v2: threshold factor (> 0, higher = fewer tokens); budget: target retention in (0, 1]. "
        "[default: 1.0]",
        show_default=False,
    ),
]
ThresholdsOption = Annotated[
    Optional[str],
    typer.Option(
        help="v1: one threshold per scale above the base, comma-separated (28 px first). [default: 3,2]",
        show_default=False,
    ),
]
ScorerOption = Annotated[Scorer, typer.Option(help="Importance scorer.")]
AggregateOption = Annotated[Aggregate, typer.Option(help="Per-cell aggregate of laplacian / upsample_mse.")]
PatchSizeOption = Annotated[int, typer.Option(help="Base patch size (px).")]
NumScalesOption = Annotated[int, typer.Option(help="Number of patch scales (14, 28, 56 px for 3).")]
TemporalPatchSizeOption = Annotated[int, typer.Option(help="Qwen2-VL temporal patch size (recorded).")]
MergeSizeOption = Annotated[int, typer.Option(help="Qwen2-VL spatial merge size (LLM tokens = merged groups).")]
MinPixelsOption = Annotated[int, typer.Option(help="smart_resize lower bound on the area.")]
MaxPixelsOption = Annotated[int, typer.Option(help="smart_resize upper bound on the area.")]
NoResizeOption = Annotated[
    bool, typer.Option("--no-resize", help="Keep the original size (grids pad the bottom/right).")
]
BinsOption = Annotated[int, typer.Option(help="Entropy histogram bins.")]
DeviceOption = Annotated[str, typer.Option(help="auto (cuda when available), cpu, cuda or cuda:N.")]
RecursiveOption = Annotated[bool, typer.Option("--recursive", "-r", help="Also scan subfolders.")]
WorkersOption = Annotated[
    int, typer.Option("--workers", "-j", min=0, help="Worker processes (0: one per CPU core).")
]
MaxImagePixelsOption = Annotated[
    int,
    typer.Option(min=0, help="Refuse larger images (decompression-bomb guard; 0: no limit). [default: Pillow's]",
                 show_default=False),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No table, no progress; errors only.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (nothing else).")]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks of unexpected errors.")]


def parse_thresholds(text: str | None) -> tuple[float, ...] | None:
    """``"3,2"`` (or ``"3 2"``) -> (3.0, 2.0); a usage error for anything that is not numbers."""
    if text is None:
        return None
    parts = [part for part in text.replace(",", " ").split() if part]
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a list of numbers such as 3,2", param_hint="--thresholds") from None
    if not values:
        raise typer.BadParameter("give one threshold per scale above the base, e.g. 3,2", param_hint="--thresholds")
    return values


def build_config(
    *,
    method: str = "v1",
    alpha: float | None = None,
    thresholds: str | None = None,
    scorer: str = "entropy",
    aggregate: str = "mean",
    patch_size: int = PATCH_SIZE,
    num_scales: int = 3,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
    no_resize: bool = False,
    bins: int = 512,
    device: str = "auto",
) -> APTConfig:
    """The :class:`APTConfig` of the common options; settings that do not fit are usage errors."""
    if method == "v1" and alpha is not None:
        raise typer.BadParameter("--alpha applies to v2 and budget; v1 uses --thresholds")
    if method != "v1" and thresholds is not None:
        raise typer.BadParameter(f"--thresholds applies to v1; {method} uses --alpha")
    settings: dict[str, Any] = dict(
        method=method,
        thresholds=parse_thresholds(thresholds),
        scorer=scorer,
        aggregate=aggregate,
        patch_size=patch_size,
        num_scales=num_scales,
        temporal_patch_size=temporal_patch_size,
        merge_size=merge_size,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        resize=not no_resize,
        bins=bins,
        device=device,
    )
    if alpha is not None:
        settings["alpha"] = alpha
    try:
        config = APTConfig(**settings)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return config.replace(device=resolve_device_name(config.device))


def resolve_device_name(device: str) -> str:
    """``auto`` -> ``cuda``/``cpu``; asking for cuda without a GPU is a usage error. cpu needs no torch."""
    if device == "cpu":
        return device
    from .pipeline import resolve_device

    try:
        return str(resolve_device(device))
    except (ValueError, RuntimeError) as exc:
        raise typer.BadParameter(str(exc)) from None


# --- commands ------------------------------------------------------------------------------------

def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"apt-viz {__version__}")
        raise typer.Exit()


@app.callback()
def _app(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Options of apt-viz itself (the help text is the app's)."""


@app.command("run", epilog=EXAMPLES)
def run_command(
    images: ImagesArgument,
    output: OutputOption = DEFAULT_OUTPUT,
    patch_selection_method: MethodOption = Method.v1,
    alpha: AlphaOption = None,
    thresholds: ThresholdsOption = None,
    scorer: ScorerOption = Scorer.entropy,
    aggregate: AggregateOption = Aggregate.mean,
    patch_size: PatchSizeOption = PATCH_SIZE,
    num_scales: NumScalesOption = 3,
    temporal_patch_size: TemporalPatchSizeOption = TEMPORAL_PATCH_SIZE,
    merge_size: MergeSizeOption = MERGE_SIZE,
    min_pixels: MinPixelsOption = MIN_PIXELS,
    max_pixels: MaxPixelsOption = MAX_PIXELS,
    no_resize: NoResizeOption = False,
    bins: BinsOption = 512,
    device: DeviceOption = "auto",
    recursive: RecursiveOption = False,
    workers: WorkersOption = 1,
    stats_only: Annotated[bool, typer.Option("--stats-only", help="Write stats.json and summaries only.")] = False,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Skip inputs whose stats.json already exists.")
    ] = False,
    max_image_pixels: MaxImagePixelsOption = PILLOW_MAX_IMAGE_PIXELS,
    quiet: QuietOption = False,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Analyse images: importance heatmaps, patch overlay, stats.json, and a table of the tokens.

    Each input gets OUTPUT/<name>/ with 01_heatmaps/, 02_patches_grid/, 03_original_resized/ and
    stats.json; a folder run adds OUTPUT/summary.json, summary.csv and index.html.
    """
    config = build_config(
        method=patch_selection_method.value, alpha=alpha, thresholds=thresholds, scorer=scorer.value,
        aggregate=aggregate.value,
        patch_size=patch_size, num_scales=num_scales, temporal_patch_size=temporal_patch_size,
        merge_size=merge_size, min_pixels=min_pixels, max_pixels=max_pixels, no_resize=no_resize, bins=bins,
        device=device,
    )
    job = JobOptions(config, output, stats_only, max_image_pixels or None, debug)
    code = execute(images, job, recursive=recursive, workers=workers or os.cpu_count() or 1,
                   skip_existing=skip_existing, quiet=quiet, json_output=json_output)
    raise typer.Exit(code)


def execute(
    images: Sequence[str],
    job: JobOptions,
    *,
    recursive: bool = False,
    workers: int = 1,
    skip_existing: bool = False,
    quiet: bool = False,
    json_output: bool = False,
) -> int:
    """Run ``images`` with ``job`` and report; returns the exit code.

    stdout carries the table (or, with ``--json``, only the JSON document); progress and
    failures go to stderr.
    """
    from rich.console import Console

    from . import report
    from .atomic import write_json, write_text
    from .batch import InputError, expand_inputs, graceful_stop, progress_display, run_batch

    if os.path.exists(job.output) and not os.path.isdir(job.output):
        raise typer.BadParameter(f"--output {job.output}: exists and is not a folder")
    try:
        items, any_folder = expand_inputs(images, recursive, exclude=job.output)
    except InputError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not items:
        raise typer.BadParameter(f"no images found in {', '.join(images)}" + ("" if recursive else " (try --recursive)"))

    # Not a terminal (a log, a pipe): wide enough that the table does not wrap.
    wide = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
    out = Console(highlight=False, width=wide)
    err = Console(stderr=True, highlight=False)
    with graceful_stop() as stop, progress_display(err, len(items), enabled=not quiet and len(items) > 1) as tick:
        result = run_batch(items, job, workers=workers, skip_existing=skip_existing, on_done=tick, stop=stop)

    document = report.run_document(
        result.stats, result.failures, job.config.to_dict(), skipped=result.skipped, interrupted=result.interrupted
    )
    if any_folder or len(items) > 1:
        write_json(os.path.join(job.output, "summary.json"), document)
        write_text(os.path.join(job.output, "summary.csv"), report.summary_csv(result.stats, result.failures))
        from .html_index import render_index  # the offline index.html of a folder run

        write_text(os.path.join(job.output, "index.html"), render_index(job.output, result.stats, result.failures))
    if json_output:
        sys.stdout.write(json.dumps(document, indent=2, allow_nan=False) + "\n")
    elif not quiet:
        if result.stats:
            out.print(report.results_table(result.stats))
        if len(items) > 1:
            for line in report.summary_lines(document):
                out.print(line, markup=False, soft_wrap=True)
        out.print(f"artifacts: {job.output}{os.sep}", markup=False, soft_wrap=True)
    for failure in result.failures:  # stderr, and even with --quiet / --json: errors are never silent
        err.print(f"failed: {failure.error}", markup=False, soft_wrap=True)
    if result.interrupted:
        err.print("interrupted: finished images are complete; rerun with --skip-existing to do the rest",
                  markup=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    return EXIT_FAILURES if result.failures else EXIT_OK


from . import cli_analysis  # noqa: E402,F401 - registers the sweep and compare commands on app

# --- entry point ---------------------------------------------------------------------------------

GROUP_ARGUMENTS = ("-h", "--help", "--version")


def command_names() -> set[str]:
    return {info.name or info.callback.__name__.replace("_", "-") for info in app.registered_commands}


def route(args: Sequence[str]) -> list[str]:
    """Insert ``run`` unless the first argument is a subcommand or an option of ``apt-viz`` itself."""
    args = list(args)
    if not args or args[0] in command_names() or args[0] in GROUP_ARGUMENTS:
        return args
    return ["run", *args]


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``apt-viz``, ``python -m apt_viz``, ``./cli.py``)."""
    args = route(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="apt-viz")
    except KeyboardInterrupt:  # a second Ctrl-C: abort without a traceback
        print("apt-viz: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - last resort: one line unless --debug
        if "--debug" in args:
            raise
        print(f"apt-viz: error: {type(exc).__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        sys.exit(EXIT_FAILURES)


if __name__ == "__main__":  # pragma: no cover
    main()
