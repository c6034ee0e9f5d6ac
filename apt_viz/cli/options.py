"""Option declarations shared by every command, declared once.

A command takes an option group as one parameter (``image: ImageOptions``); :func:`command`
splices the group's fields into the command's signature as Typer options and hands the command
the group back as one object. Adding an option to every command that resizes images is one field
here. Importing this module imports typer and the torch-free core config only.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Optional, get_type_hints

import typer
from PIL import Image

from ..checkpoint import CheckpointError, read_checkpoint
from ..core.config import Aggregate, APTConfig, Backend, BudgetUnit, Method, Scorer
from ..core.families import PROCESSOR_FIELDS, ModelFamily
from ..eval.settings import DType

if TYPE_CHECKING:  # pragma: no cover
    from ..batch.inputs import InputItem

DEFAULT_OUTPUT = "visualizations"
PILLOW_MAX_IMAGE_PIXELS: int = Image.MAX_IMAGE_PIXELS or 0  # Pillow's decompression-bomb limit

ImagesArgument = Annotated[list[str], typer.Argument(help="Image files and/or folders of images.", show_default=False)]
OutputOption = Annotated[str, typer.Option("--output", "-o", help="Output folder.")]
RecursiveOption = Annotated[bool, typer.Option("--recursive", "-r", help="Also scan subfolders.")]
WorkersOption = Annotated[int, typer.Option("--workers", "-j", min=0, help="Worker processes (0: one per CPU core).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No table, no progress; errors only.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (nothing else).")]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks of internal errors.")]
MethodOption = Annotated[
    Method,
    typer.Option(
        "--patch-selection-method", "-m",
        help="v1: fixed thresholds; v2: alpha * mean score per scale; budget: round(alpha * N) tokens.",
    ),
]
ThresholdsOption = Annotated[
    Optional[str],
    typer.Option(
        help="v1: one threshold per scale above the base (2p first, 28 px for qwen2-vl): --thresholds 3,2 or "
        "--thresholds 3 2. [default: 3,2]",
        show_default=False,
    ),
]
ModelFamilyOption = Annotated[
    Optional[ModelFamily],
    typer.Option(
        "--model-family",
        help="The model's family: its patch size (14 for qwen2-vl and qwen2.5-vl, 16 for qwen3-vl and qwen3.5), "
        "merge size, min/max pixels, mean and std (docs/families.md). [default: qwen2-vl, or --model's]",
        show_default=False,
    ),
]
ModelDirOption = Annotated[
    Optional[str],
    typer.Option(
        "--model", metavar="DIR",
        help="A local checkpoint folder: its family (config.json) and processor settings "
        "(preprocessor_config.json), so the numbers equal its processor's.",
        show_default=False,
    ),
]


def _family_default(what: str) -> Any:
    """A processor-setting option whose default comes from --model / --model-family."""
    return typer.Option(help=f"{what} [default: the model family's]", show_default=False)


# --- option groups ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """How inputs are read, resized and scored: shared by every command that analyses images."""

    scorer: Annotated[Scorer, typer.Option(help="Importance scorer.")] = Scorer.ENTROPY
    aggregate: Annotated[Aggregate, typer.Option(help="Per-cell aggregate of laplacian / upsample_mse.")] = (
        Aggregate.MEAN
    )
    backend: Annotated[
        Backend,
        typer.Option(help="Resize backend, as transformers' Qwen2-VL image processors (AutoImageProcessor loads "
                     "torchvision)."),
    ] = Backend.TORCHVISION
    model_family: ModelFamilyOption = None
    model: ModelDirOption = None
    patch_size: Annotated[Optional[int], _family_default("Base patch size p (px).")] = None
    num_scales: Annotated[int, typer.Option(help="Number of patch scales (p, 2p, 4p for 3).")] = 3
    temporal_patch_size: Annotated[Optional[int], _family_default("Temporal patch size (recorded).")] = None
    merge_size: Annotated[Optional[int], _family_default("Spatial merge size (LLM tokens = merged groups).")] = None
    min_pixels: Annotated[Optional[int], _family_default("smart_resize lower bound on the area.")] = None
    max_pixels: Annotated[Optional[int], _family_default("smart_resize upper bound on the area.")] = None
    no_resize: Annotated[
        bool, typer.Option("--no-resize", help="Keep the original size (grids pad the bottom/right).")
    ] = False
    bins: Annotated[int, typer.Option(help="Entropy histogram bins.")] = 512
    seed: Annotated[int, typer.Option(min=0, help="Seed of the random scorer.")] = 0
    device: Annotated[str, typer.Option(help="auto (cuda when available), cpu, cuda or cuda:N.")] = "auto"
    max_image_pixels: Annotated[
        int,
        typer.Option(
            min=0, help="Refuse larger images (decompression-bomb guard; 0: no limit). [default: Pillow's]",
            show_default=False,
        ),
    ] = PILLOW_MAX_IMAGE_PIXELS

    @property
    def image_pixel_limit(self) -> int | None:
        """``max_image_pixels`` as :func:`apt_viz.imaging.load_image` takes it (None: no limit)."""
        return self.max_image_pixels or None

    def config(self, **selection: Any) -> APTConfig:
        """The validated :class:`APTConfig` of these options and ``selection`` (method, alpha, thresholds).

        The processor settings come from the options given, then ``--model``, then ``--model-family``.
        Settings that do not fit together are usage errors; ``auto`` / ``cuda`` devices are resolved.
        """
        model = model_settings(self.model_family, self.model)
        # the processor settings given as options (mean and std have none: the family's or --model's)
        explicit = {name: value for name in PROCESSOR_FIELDS if (value := getattr(self, name, None)) is not None}
        if self.no_resize:
            explicit["resize"] = False
        try:
            config = APTConfig(
                **{**model, **explicit},
                scorer=self.scorer,
                aggregate=self.aggregate,
                backend=self.backend,
                num_scales=self.num_scales,
                bins=self.bins,
                seed=self.seed,
                device=self.device,
                **selection,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        return config.replace(device=resolve_device_name(config.device))


def model_settings(model_family: ModelFamily | None, model: str | None) -> dict[str, Any]:
    """The :class:`APTConfig` fields that ``--model-family`` and ``--model DIR`` set (usage errors otherwise).

    Args:
        model_family: ``--model-family`` (None: not given).
        model: ``--model DIR`` (None: not given): the family and processor settings of that checkpoint.

    Returns:
        ``model_family`` and, with ``--model``, every processor setting and ``resize``; ``{}`` for neither.
    """
    if model is None:
        return {} if model_family is None else {"model_family": model_family}
    try:
        checkpoint = read_checkpoint(model)
    except CheckpointError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from None
    if model_family is not None and model_family is not checkpoint.model_family:
        raise typer.BadParameter(
            f"{model} is a {checkpoint.model_family} checkpoint (model_type {checkpoint.model_type}), "
            f"not {model_family}; give one of --model and --model-family",
            param_hint="--model-family",
        )
    return checkpoint.config_fields()


@dataclasses.dataclass(frozen=True)
class SelectionOptions:
    """One selection setting: method with alpha or thresholds (``run``)."""

    patch_selection_method: MethodOption = Method.V1
    alpha: Annotated[
        Optional[float],
        typer.Option(
            help="v2: threshold factor (> 0, higher = fewer tokens); budget: target retention in (0, 1]. "
            "[default: 1.0]",
            show_default=False,
        ),
    ] = None
    thresholds: ThresholdsOption = None
    budget_unit: Annotated[
        Optional[BudgetUnit],
        typer.Option(
            help="budget: what alpha is a fraction of: vision (the base patches) or llm (the stock LLM tokens). "
            "[default: vision]",
            show_default=False,
        ),
    ] = None

    def settings(self) -> dict[str, Any]:
        """``method`` / ``alpha`` / ``thresholds`` / ``budget_unit`` for :meth:`ImageOptions.config`
        (misplaced ones: usage errors)."""
        method = self.patch_selection_method
        if method is Method.V1 and self.alpha is not None:
            raise typer.BadParameter("--alpha applies to v2 and budget; v1 uses --thresholds")
        if method is not Method.V1 and self.thresholds is not None:
            raise typer.BadParameter(f"--thresholds applies to v1; {method} uses --alpha")
        if method is not Method.BUDGET and self.budget_unit is not None:
            raise typer.BadParameter(f"--budget-unit applies to budget, not {method}")
        settings: dict[str, Any] = {"method": method, "thresholds": parse_thresholds(self.thresholds)}
        if self.alpha is not None:
            settings["alpha"] = self.alpha
        if self.budget_unit is not None:
            settings["budget_unit"] = self.budget_unit
        return settings


@dataclasses.dataclass(frozen=True)
class FolderOptions:
    """Where results go, which files are read and how many processes do it (run, sweep, compare)."""

    output: OutputOption = DEFAULT_OUTPUT
    recursive: RecursiveOption = False
    workers: WorkersOption = 1

    @property
    def worker_count(self) -> int:
        """``--workers``, with 0 meaning one per CPU core."""
        return self.workers or os.cpu_count() or 1

    def input_items(self, images: Sequence[str]) -> tuple[list[InputItem], bool]:
        """:func:`input_items` with these options."""
        return input_items(images, self.recursive, self.output)


def input_items(images: Sequence[str], recursive: bool, output: str) -> tuple[list[InputItem], bool]:
    """The inputs named by ``images`` and whether a folder was among them; unusable ones are usage errors."""
    from ..batch.inputs import InputError, expand_inputs

    if os.path.exists(output) and not os.path.isdir(output):
        raise typer.BadParameter(f"--output {output}: exists and is not a folder")
    try:
        items, any_folder = expand_inputs(images, recursive, exclude=output)
    except InputError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not items:
        hint = "" if recursive else " (try --recursive)"
        raise typer.BadParameter(f"no images found in {', '.join(images)}{hint}")
    return items, any_folder


OPTION_GROUPS = (ImageOptions, SelectionOptions, FolderOptions)


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


def resolve_device_name(device: str) -> str:
    """``auto`` -> ``cuda``/``cpu``; asking for cuda without a GPU is a usage error. cpu needs no torch."""
    if device == "cpu":
        return device
    from ..analysis import resolve_device

    try:
        return str(resolve_device(device))
    except (ValueError, RuntimeError) as exc:
        raise typer.BadParameter(str(exc)) from None


# --- splicing groups into command signatures -------------------------------------------------------

def command(app: typer.Typer, name: str, **settings: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``@app.command(name)`` for a function whose option-group parameters are expanded into options."""

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        app.command(name, **settings)(expand_option_groups(function))
        return function

    return register


def expand_option_groups(function: Callable[..., Any]) -> Callable[..., Any]:
    """A wrapper of ``function`` whose signature lists each option group's fields instead of the group.

    Typer reads the wrapper's signature; at call time the fields are collected back into the group.
    """
    hints = get_type_hints(function, include_extras=True)
    parameters: list[inspect.Parameter] = []
    groups: dict[str, type] = {}
    for parameter in inspect.signature(function).parameters.values():
        annotation = hints.get(parameter.name, parameter.annotation)
        if annotation in OPTION_GROUPS:
            groups[parameter.name] = annotation
            field_hints = get_type_hints(annotation, include_extras=True)
            parameters.extend(
                inspect.Parameter(
                    field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default,
                    annotation=field_hints[field.name],
                )
                for field in dataclasses.fields(annotation)
            )
        else:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=annotation))

    @functools.wraps(function)
    def wrapper(**values: Any) -> Any:
        for name, group in groups.items():
            values[name] = group(**{field.name: values.pop(field.name) for field in dataclasses.fields(group)})
        return function(**values)

    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    del wrapper.__wrapped__  # Typer must read the spliced signature, not the original one
    return wrapper


# --- "--thresholds 3 2" -----------------------------------------------------------------------------

_NUMBERS = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?(,[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)*,?$")


class AmbiguousArguments(ValueError):
    """A command line that could be read two ways (a usage error)."""


def join_threshold_values(args: Sequence[str]) -> list[str]:
    """Accept the original tool's ``--thresholds 3 2`` beside ``--thresholds 3,2``.

    The numbers that follow ``--thresholds`` are joined into one comma-separated value, so
    positional images may come before or after. A number that is also an existing path, or a
    number after the one-token form ``--thresholds=3``, could be an image as well: that command
    line is refused as ambiguous rather than guessed.
    """
    out: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            return out + list(args[index:])
        if arg.startswith("--thresholds="):
            following = args[index + 1] if index + 1 < len(args) else None
            if following is not None and _NUMBERS.match(following):
                raise AmbiguousArguments(
                    f"{arg} {following}: is {following!r} a threshold or an image? "
                    "Write --thresholds 3,2 (or --thresholds 3 2), images before or after it"
                )
        if arg == "--thresholds":
            values: list[str] = []
            index += 1
            while index < len(args) and _NUMBERS.match(args[index]):
                if values and os.path.exists(args[index]):
                    raise AmbiguousArguments(
                        f"--thresholds {' '.join(values)} {args[index]}: {args[index]!r} is a number and also an "
                        f"existing path; write --thresholds {','.join([*values, args[index]])} or move the image "
                        "before --thresholds"
                    )
                values.append(args[index].rstrip(","))
                index += 1
            out.append(arg)
            if values:
                out.append(",".join(values))
            continue
        out.append(arg)
        index += 1
    return out


# --- options of the model-running commands (eval) ---------------------------------------------------

AlphaListOption = Annotated[
    Optional[str],
    typer.Option(
        "--alpha",
        help="v2 / budget: one or more alphas, comma-separated and/or start:stop:step (inclusive), e.g. 0.2,0.3 "
        "or 0.1:0.9:0.1.",
        show_default=False,
    ),
]
ThresholdGridOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--thresholds",
        help='v1: a threshold pair per scale above the base (2p first); repeat it or separate pairs by ";" for '
        "several: --thresholds 3,2 --thresholds 4,3. [default: 3,2]",
        show_default=False,
    ),
]
BudgetUnitOption = Annotated[
    BudgetUnit,
    typer.Option(help="budget: what alpha is a fraction of: vision (the base patches) or llm (the stock LLM tokens)."),
]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", min=1, help="Examples per model call.")]
DeviceOption = Annotated[str, typer.Option(help="auto (cuda when available), cpu, cuda or cuda:N.")]
DTypeOption = Annotated[DType, typer.Option("--dtype", help="Model dtype (auto: bfloat16 on a GPU, else float32).")]
SeedOption = Annotated[int, typer.Option(min=0, help="Seed of the random scorer (the random baseline).")]
