"""The measuring engine of ``apt-viz bench``: Qwen2-VL's vision encoder and LLM prefill, stock against APT.

What is timed, per batch size and per alpha (``docs/apt_inference.md`` explains the choices):

- **vision, stock**: ``get_image_features`` on the stock rows of the batch's images;
- **vision, APT**: the APT selection on the bench device (scoring, selection and the APT rows,
  from the resized and the normalized pixels the stock processor produced), then
  ``get_image_features`` on the APT rows; the two are timed in the same run and the total counts;
- **prefill**: one forward of the whole model over a batch of prompts, each ``<|vision_start|>``,
  the image's tokens, ``<|vision_end|>`` and a short question, left-padded, with the image features
  and the M-RoPE positions computed beforehand (they are the vision part), ``use_cache=True`` and
  the logits of the last position only, as ``generate``'s prefill.

Each case runs ``warmup`` times, then ``repeats`` rounds of one run of every case in turn (so a
slow phase of a shared machine hits stock and APT alike); the median and the quartiles are
reported. Peak memory is the extra memory one more run takes, measured after all timings (CUDA:
``max_memory_allocated``; CPU: the resident-set high-water mark, approximate: memory the
allocator kept from earlier runs does not show). A preset has random weights: its figures are speed
only. ``flops_only`` runs the selection for the token counts and the cost model of
:mod:`apt_viz.core.flops`, no model.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from .. import __version__
from ..atomic import write_bytes, write_json, write_text
from ..core.architectures import Architecture, architecture_from_config
from ..core.config import APTConfig, Method, Scorer, as_choice
from ..core.flops import prefill_flops, vision_flops
from ..core.qwen2vl import ResizeSpec
from ..hf.image_processing import apt_view, unpatchify
from ..imaging import pil_to_tensor, resize_for_qwen2vl
from ..report.csv_text import csv_text

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure
    from rich.table import Table

RANDOM_WEIGHTS_NOTE = "random weights: speed only"
DEFAULT_ALPHAS = (0.1, 0.3, 0.5, 0.7, 1.0)
PARTS = ("vision", "prefill")
MB = 1024 * 1024
FILES = ("bench.json", "bench.csv", "bench.png")


# --- settings and results ------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchSettings:
    """What ``apt-viz bench`` measures and how."""

    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    method: Method = Method.BUDGET
    scorer: Scorer = Scorer.ENTROPY
    batches: tuple[int, ...] = (1,)
    device: str = "cpu"
    warmup: int = 2
    repeats: int = 5
    question_tokens: int = 16  # the short question after each image
    megapixels: float | None = None  # scale every input to about this area first (None: as given)
    parts: tuple[str, ...] = PARTS

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", as_choice(Method, self.method, "patch_selection_method"))
        object.__setattr__(self, "scorer", as_choice(Scorer, self.scorer, "scorer"))
        if self.method is Method.V1:
            raise ValueError("bench sweeps alpha: use --method budget or v2 (v1 has thresholds, no alpha)")
        if not self.alphas:
            raise ValueError("give at least one alpha")
        for alpha in self.alphas:
            self.config(alpha)  # a one-line ValueError for an alpha out of range
        if not self.batches or min(self.batches) < 1:
            raise ValueError("batch sizes must be >= 1")
        if self.warmup < 0 or self.repeats < 1:
            raise ValueError("warmup must be >= 0 and repeats >= 1")
        if self.megapixels is not None and self.megapixels <= 0:
            raise ValueError("megapixels must be > 0")
        unknown = set(self.parts) - set(PARTS)
        if unknown or not self.parts:
            raise ValueError(f"parts must be among {', '.join(PARTS)}")

    def config(self, alpha: float, patch_size: int = 14, merge_size: int = 2) -> APTConfig:
        """The APT settings of one alpha."""
        return APTConfig(method=self.method, alpha=alpha, scorer=self.scorer, patch_size=patch_size,
                         merge_size=merge_size)


@dataclass(frozen=True)
class Timing:
    """Wall-clock times of the repeated runs of one case (milliseconds)."""

    times_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def quartiles_ms(self) -> tuple[float, float]:
        if len(self.times_ms) == 1:
            return self.times_ms[0], self.times_ms[0]
        q1, _, q3 = statistics.quantiles(self.times_ms, n=4, method="inclusive")
        return q1, q3

    def to_dict(self) -> dict[str, Any]:
        q1, q3 = self.quartiles_ms
        return {"median_ms": self.median_ms, "q1_ms": q1, "q3_ms": q3, "min_ms": min(self.times_ms),
                "max_ms": max(self.times_ms), "times_ms": list(self.times_ms)}


@dataclass(frozen=True)
class BenchRow:
    """One batch size under one setting: stock (``alpha`` None) or APT at ``alpha``."""

    batch: int
    alpha: float | None
    vision_tokens: int  # rows the vision blocks see, whole batch
    llm_tokens: int  # image tokens the LLM sees, whole batch
    prompt_tokens: int  # tokens of the prompts, whole batch, without padding
    vision_flops: int
    prefill_flops: int
    selection: Timing | None = None  # APT only
    encoder: Timing | None = None
    vision: Timing | None = None  # selection + encoder, per run
    prefill: Timing | None = None
    vision_peak_mb: float | None = None
    prefill_peak_mb: float | None = None

    @property
    def setting(self) -> str:
        return "stock" if self.alpha is None else f"alpha {self.alpha:g}"


@dataclass
class BenchResult:
    """Everything one ``apt-viz bench`` run measured (``rows``: stock first, then the alphas, per batch)."""

    settings: BenchSettings
    model: str  # preset name or checkpoint folder
    architecture: Architecture
    random_weights: bool
    device: str  # the machine, in words
    dtype: str
    attention: str
    images: list[dict[str, Any]]
    rows: list[BenchRow] = field(default_factory=list)
    flops_only: bool = False

    def stock_row(self, batch: int) -> BenchRow:
        return next(row for row in self.rows if row.batch == batch and row.alpha is None)

    def speedups(self, row: BenchRow) -> dict[str, float | None]:
        """Stock time / APT time (and stock FLOPs / APT FLOPs) of ``row`` against its batch's stock row."""
        stock = self.stock_row(row.batch)

        def ratio(a: Timing | None, b: Timing | None) -> float | None:
            return None if a is None or b is None else a.median_ms / b.median_ms

        return {
            "vision": ratio(stock.vision, row.vision),
            "encoder": ratio(stock.encoder, row.encoder),
            "prefill": ratio(stock.prefill, row.prefill),
            "vision_flops": stock.vision_flops / row.vision_flops,
            "prefill_flops": stock.prefill_flops / row.prefill_flops,
        }


# --- models --------------------------------------------------------------------------------------

def describe_device(device: torch.device) -> str:
    """The machine in words: the GPU's name, or the CPU's model and the threads torch uses.

    Args:
        device: The bench device.

    Returns:
        One line, e.g. ``NVIDIA H100 80GB HBM3 (CUDA 13.0, torch 2.14.1)``.
    """
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    return f"CPU {cpu}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def load_model(
    device: torch.device, preset: str | None = None, model_dir: str | None = None, layers: int | None = None
) -> tuple[Any, Any, Architecture, bool]:
    """The APT model and the stock image processor to bench, bf16 + SDPA on CUDA, float32 on the CPU.

    Args:
        device: Where the model runs.
        preset: A preset of :mod:`apt_viz.hf.presets` (random weights); used when ``model_dir`` is None.
        model_dir: A local Qwen2-VL checkpoint folder (its weights and image processor settings).
        layers: Cut a preset to this many vision blocks and LLM layers (not for checkpoints).

    Returns:
        ``(model, image_processor, architecture, random_weights)``.
    """
    from transformers import AutoImageProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    from ..hf.modeling import APTQwen2VLForConditionalGeneration
    from .presets import family_config, preset_architecture

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if model_dir is not None:
        model = APTQwen2VLForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
        model.to(device)  # type: ignore[arg-type]  # mypy misreads the @wraps(nn.Module.to) signature
        arch = architecture_from_config(model.config.to_dict(), name=os.path.basename(os.path.normpath(model_dir)))
        try:
            image_processor = AutoImageProcessor.from_pretrained(model_dir)
        except (OSError, ValueError):
            image_processor = Qwen2VLImageProcessor()
        return model.eval(), image_processor, arch, False
    arch = preset_architecture(preset or "qwen2-vl-2b", layers)
    config = family_config(arch)
    with torch.device(device):
        model = APTQwen2VLForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval(), Qwen2VLImageProcessor(), arch, True


# --- measuring -----------------------------------------------------------------------------------

def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kb(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise OSError(f"{field_name} missing from /proc/self/status")


def _return_freed_memory() -> None:
    """CPU (glibc): large blocks are mmapped and unmapped when freed, so a run's peak shows in the resident set."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD, fixed (glibc otherwise raises it as blocks are freed)
        libc.malloc_trim(0)


def peak_memory_mb(call: Callable[[], Any], device: torch.device) -> float | None:
    """Extra memory one run of ``call`` takes at its peak (MB); None where it cannot be measured.

    CUDA: ``max_memory_allocated`` over the run minus what was allocated before it. CPU: the
    resident-set high-water mark (reset before the run) minus the resident set before it (Linux).

    Args:
        call: The run (its result is dropped after the measurement).
        device: Where it runs.

    Returns:
        Megabytes (MiB), or None without ``/proc/self/clear_refs``.
    """
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = call()
        _synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del result
        return (peak - before) / MB
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset the high-water mark to the current resident set
    except OSError:
        return None
    before = _proc_status_kb("VmRSS")
    result = call()
    peak = _proc_status_kb("VmHWM")
    del result
    return max(peak - before, 0) / 1024


@dataclass
class PreparedImages:
    """A batch of images as the stock processor prepared them, on the bench device."""

    images_255: list[torch.Tensor]  # (1, 3, H, W) float32 in [0, 255]: what APT scores
    normalized: list[torch.Tensor]  # (1, 3, H, W): what APT cuts its patches from
    pixel_values: torch.Tensor  # stock rows
    grid_thw: torch.Tensor  # (B, 3)


def prepare_batch(images: Sequence[Image.Image], image_processor: Any, device: torch.device) -> PreparedImages:
    """The stock processor's rows of ``images`` and the pixels APT needs, on ``device``.

    Args:
        images: Smart-resized RGB images (the processor leaves their size).
        image_processor: A stock Qwen2-VL image processor.
        device: The bench device.

    Returns:
        The batch: [0, 255] and normalized images per image, stock rows and grids.
    """
    out = image_processor(list(images), return_tensors="pt")
    grid = out["image_grid_thw"]
    rows = out["pixel_values"].split((grid.prod(-1)).tolist())
    p, m, t = image_processor.patch_size, image_processor.merge_size, image_processor.temporal_patch_size
    normalized = [unpatchify(r, int(h), int(w), p, m, t).to(device) for r, (_, h, w) in zip(rows, grid.tolist())]
    return PreparedImages(
        images_255=[pil_to_tensor(image).to(device) for image in images],
        normalized=normalized,
        pixel_values=out["pixel_values"].to(device),
        grid_thw=grid.to(device),
    )


def select_batch(batch: PreparedImages, config: APTConfig, temporal_patch_size: int) -> dict[str, torch.Tensor]:
    """The ``apt_*`` inputs of a batch: the APT selection and rows of every image, on the batch's device.

    Args:
        batch: The prepared images.
        config: The APT settings (method, alpha, scorer).
        temporal_patch_size: Frames per row (2 for Qwen2-VL images).

    Returns:
        The five ``apt_*`` keys of :data:`apt_viz.hf.APT_OUTPUT_KEYS`, images concatenated.
    """
    views = [
        apt_view(image, normalized, config, temporal_patch_size)
        for image, normalized in zip(batch.images_255, batch.normalized)
    ]
    device = batch.pixel_values.device
    return {
        "apt_pixel_values": torch.cat([view.pixel_values for view in views]),
        "apt_patch_sizes": torch.cat([view.patch_sizes for view in views]).to(device),
        "apt_patch_positions": torch.cat([view.patch_positions for view in views]).to(device),
        "apt_num_tokens": torch.tensor([view.stats.vision_tokens for view in views], device=device),
        "apt_num_llm_tokens": torch.tensor([view.stats.llm_tokens for view in views], device=device),
    }


def prompt_batch(config: Any, image_tokens: Sequence[int], question_tokens: int, device: torch.device) -> dict:
    """Left-padded prompts ``<|vision_start|>`` + image tokens + ``<|vision_end|>`` + a question.

    Args:
        config: The model's ``Qwen2VLConfig`` (token ids, vocabulary size).
        image_tokens: Image tokens of each prompt.
        question_tokens: Length of the question (ordinary token ids: values do not change the speed).
        device: The bench device.

    Returns:
        ``input_ids``, ``attention_mask`` and ``mm_token_type_ids``, each (prompts, longest prompt).
    """
    question = [min(1000 + i, config.text_config.vocab_size - 5) for i in range(question_tokens)]
    prompts = [
        [config.vision_start_token_id, *[config.image_token_id] * n, config.vision_end_token_id, *question]
        for n in image_tokens
    ]
    length = max(map(len, prompts))
    ids = torch.zeros(len(prompts), length, dtype=torch.long)
    mask = torch.zeros(len(prompts), length, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, length - len(prompt):] = torch.tensor(prompt)
        mask[i, length - len(prompt):] = 1
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "mm_token_type_ids": (ids == config.image_token_id).int().to(device),
    }


def counted_row(
    arch: Architecture, alpha: float | None, tokens: Sequence[int], llm_tokens: Sequence[int], text: int
) -> BenchRow:
    """A row's token counts and analytic FLOPs.

    Args:
        arch: Model sizes.
        alpha: The APT setting, None for stock.
        tokens: Vision-encoder rows of each image.
        llm_tokens: LLM tokens of each image.
        text: Other tokens of each prompt.

    Returns:
        A row without timings.
    """
    return BenchRow(
        batch=len(tokens), alpha=alpha, vision_tokens=sum(tokens), llm_tokens=sum(llm_tokens),
        prompt_tokens=sum(llm_tokens) + text * len(tokens),
        vision_flops=sum(vision_flops(arch, n, llm) for n, llm in zip(tokens, llm_tokens)),
        prefill_flops=sum(prefill_flops(arch, llm + text) for llm in llm_tokens),
    )


def _prefill_call(model: Any, prompts: dict, grid: torch.Tensor, features: Any, apt: dict | None) -> Callable:
    """The timed prefill: the positions and the image features are computed before (vision part)."""
    apt_positions = {} if apt is None else {k: v for k, v in apt.items() if k != "apt_pixel_values"}
    positions, _ = model.model.get_rope_index(
        prompts["input_ids"], prompts["mm_token_type_ids"], grid,
        attention_mask=prompts["attention_mask"], **apt_positions,
    )

    def prefill() -> Any:
        return model(
            input_ids=prompts["input_ids"],
            attention_mask=prompts["attention_mask"],
            position_ids=positions,
            mm_encoder_outputs={"image": features},
            use_cache=True,
            logits_to_keep=1,
        )

    return prefill


MemoryProbe = tuple[int, str, Callable[[], Any]]  # (row index, row field, the run to measure)


@dataclass(frozen=True)
class _Case:
    """One timed piece of work of a batch: ``run`` does it once and returns its parts' times (ms)."""

    row: int  # index of its row in the batch (0: stock, then one per alpha)
    part: str  # "vision" or "prefill"
    run: Callable[[], dict[str, float]]  # e.g. {"selection": ms, "encoder": ms} or {"prefill": ms}
    probe: Callable[[], Any]  # the same work untimed, for the peak-memory run


def _timed(call: Callable[[], Any], device: torch.device) -> float:
    """Milliseconds of one run of ``call``, the device synchronized before and after."""
    _synchronize(device)
    start = time.perf_counter()
    call()
    _synchronize(device)
    return (time.perf_counter() - start) * 1e3


def _run_cases(cases: Sequence[_Case], device: torch.device, warmup: int, repeats: int) -> dict[tuple[int, str], list]:
    """Every case ``warmup`` times, then ``repeats`` rounds of one timed run of each case in turn.

    Round-robin, so a slow phase of a shared machine hits stock and APT alike.

    Returns:
        (row, part name) -> the times of the timed runs (ms), in run order.
    """
    for _ in range(warmup):
        for case in cases:
            case.run()
    times: dict[tuple[int, str], list] = {}
    for _ in range(repeats):
        for case in cases:
            for name, ms in case.run().items():
                times.setdefault((case.row, name), []).append(ms)
    return times


def measure_batch(
    model: Any,
    image_processor: Any,
    arch: Architecture,
    images: Sequence[Image.Image],
    settings: BenchSettings,
    device: torch.device,
) -> tuple[list[BenchRow], list[MemoryProbe]]:
    """Stock and every alpha on one batch of images, timed round-robin.

    Args:
        model: An :class:`~apt_viz.hf.APTQwen2VLForConditionalGeneration` on the bench device.
        image_processor: Its stock image processor.
        arch: Its sizes (for the FLOPs).
        images: The batch's images, smart-resized.
        settings: What to measure.
        device: The bench device.

    Returns:
        The timed rows (stock first, then one per alpha), and the runs whose peak memory is still to
        be measured (after every timing: see :func:`measure_peaks`).
    """
    batch = prepare_batch(images, image_processor, device)
    text = settings.question_tokens + 2
    encode = model.model.get_image_features
    temporal = image_processor.temporal_patch_size
    rows: list[BenchRow] = []
    cases: list[_Case] = []

    with torch.inference_mode():
        base = batch.grid_thw.prod(-1).tolist()
        stock_llm = [n // arch.merge_size**2 for n in base]
        rows.append(counted_row(arch, None, base, stock_llm, text))

        def stock_vision() -> Any:
            return encode(batch.pixel_values, batch.grid_thw)

        cases.append(_Case(0, "vision", lambda: {"encoder": _timed(stock_vision, device)}, stock_vision))
        cases.append(_prefill_case(0, model, settings, batch, stock_vision(), None, stock_llm, device))

        for alpha in settings.alphas:
            config = settings.config(alpha, image_processor.patch_size, image_processor.merge_size)
            apt = select_batch(batch, config, temporal)
            llm = apt["apt_num_llm_tokens"].tolist()
            rows.append(counted_row(arch, alpha, apt["apt_num_tokens"].tolist(), llm, text))
            cases.append(_apt_vision_case(len(rows) - 1, batch, config, temporal, encode, device))
            features = encode(image_grid_thw=batch.grid_thw, **apt)
            cases.append(_prefill_case(len(rows) - 1, model, settings, batch, features, apt, llm, device))

        cases = [case for case in cases if case.part in settings.parts]
        times = _run_cases(cases, device, settings.warmup, settings.repeats)

    for index, row in enumerate(rows):
        if (index, "encoder") in times:
            selection = times.get((index, "selection"))
            encoder = times[(index, "encoder")]
            vision = encoder if selection is None else [a + b for a, b in zip(selection, encoder)]
            rows[index] = replace(
                row, encoder=Timing(tuple(encoder)), vision=Timing(tuple(vision)),
                selection=None if selection is None else Timing(tuple(selection)),
            )
        if (index, "prefill") in times:
            rows[index] = replace(rows[index], prefill=Timing(tuple(times[(index, "prefill")])))
    probes = [(case.row, f"{case.part}_peak_mb", case.probe) for case in cases]
    return rows, probes


def _apt_vision_case(
    row: int, batch: PreparedImages, config: APTConfig, temporal: int, encode: Callable, device: torch.device
) -> _Case:
    """The APT vision run: the selection, then the encoder on its output, timed apart in the same run."""

    def run() -> dict[str, float]:
        _synchronize(device)
        start = time.perf_counter()
        apt = select_batch(batch, config, temporal)
        _synchronize(device)
        selected = time.perf_counter()
        encode(image_grid_thw=batch.grid_thw, **apt)
        _synchronize(device)
        return {"selection": (selected - start) * 1e3, "encoder": (time.perf_counter() - selected) * 1e3}

    def probe() -> Any:
        return encode(image_grid_thw=batch.grid_thw, **select_batch(batch, config, temporal))

    return _Case(row, "vision", run, probe)


def _prefill_case(
    row: int, model: Any, settings: BenchSettings, batch: PreparedImages, features: Any, apt: dict | None,
    image_tokens: Sequence[int], device: torch.device,
) -> _Case:
    """The prefill run of the prompts holding ``image_tokens`` image tokens each."""
    prompts = prompt_batch(model.config, image_tokens, settings.question_tokens, device)
    prefill = _prefill_call(model, prompts, batch.grid_thw, features, apt)
    return _Case(row, "prefill", lambda: {"prefill": _timed(prefill, device)}, prefill)


def measure_peaks(rows: list[BenchRow], probes: Sequence[MemoryProbe], device: torch.device) -> None:
    """Fill in the peak memory of every probe's row (in place), one more run each.

    Runs after all timings: on the CPU it switches glibc to returning freed blocks to the system
    (so a run's peak shows in the resident set), which makes every later allocation slower.

    Args:
        rows: The rows of the whole run.
        probes: (row index in ``rows``, ``vision_peak_mb`` or ``prefill_peak_mb``, run).
        device: The bench device.
    """
    with torch.inference_mode():
        for index, name, call in probes:
            if device.type == "cpu":
                _return_freed_memory()
            peak = peak_memory_mb(call, device)
            if name == "vision_peak_mb":
                rows[index] = replace(rows[index], vision_peak_mb=peak)
            else:
                rows[index] = replace(rows[index], prefill_peak_mb=peak)


def count_batch(
    arch: Architecture, images: Sequence[Image.Image], settings: BenchSettings, patch_size: int = 14
) -> list[BenchRow]:
    """``--flops-only``: token counts from the selection (CPU) and the cost model; nothing is timed.

    Args:
        arch: Model sizes.
        images: The batch's images, smart-resized.
        settings: Alphas, method and scorer.
        patch_size: Base patch size.

    Returns:
        Rows with counts and FLOPs only, stock first.
    """
    from ..core.pipeline import run_apt

    text = settings.question_tokens + 2
    pixels = [pil_to_tensor(image) for image in images]
    base = [(p.shape[-2] // patch_size) * (p.shape[-1] // patch_size) for p in pixels]
    rows = [counted_row(arch, None, base, [n // arch.merge_size**2 for n in base], text)]
    for alpha in settings.alphas:
        config = settings.config(alpha, patch_size, arch.merge_size)
        stats = [run_apt(p, config).stats[0] for p in pixels]
        rows.append(counted_row(arch, alpha, [s.vision_tokens for s in stats], [s.llm_tokens for s in stats], text))
    return rows


def prepare_images(images: Sequence[Image.Image], settings: BenchSettings, spec: ResizeSpec) -> list[Image.Image]:
    """Every input scaled to about ``settings.megapixels`` (when set), then smart-resized by ``spec``.

    Args:
        images: Loaded images (RGB or any PIL mode).
        settings: ``megapixels``.
        spec: Qwen2-VL's resize rule (the model's image processor's bounds).

    Returns:
        The images as the processor will see them.
    """
    prepared = []
    for image in images:
        if settings.megapixels is not None:
            scale = math.sqrt(settings.megapixels * 1e6 / (image.width * image.height))
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.convert("RGB").resize(size, resample=Image.Resampling.BICUBIC)
        prepared.append(resize_for_qwen2vl(image, spec))
    return prepared


def run_bench(
    images: Sequence[Image.Image],
    settings: BenchSettings,
    *,
    preset: str | None = None,
    model_dir: str | None = None,
    layers: int | None = None,
    flops_only: bool = False,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Measure stock against APT on ``images`` for every batch size and alpha of ``settings``.

    Args:
        images: Input images (any size; cycled to fill a batch).
        settings: What to measure.
        preset: A model preset (random weights), used when ``model_dir`` is None.
        model_dir: A local Qwen2-VL checkpoint.
        layers: Cut a preset to this many vision blocks and LLM layers.
        flops_only: Count tokens and FLOPs only; no model is built, nothing is timed.
        progress: Called with a short line before each batch.

    Returns:
        The result (``rows``: per batch, stock first, then one row per alpha).
    """
    from .presets import preset_architecture

    device = torch.device(settings.device)
    if flops_only:
        model = image_processor = None
        if model_dir is None:
            arch = preset_architecture(preset or "qwen2-vl-2b", layers)
        else:
            config = json.loads((Path(model_dir) / "config.json").read_text())
            arch = architecture_from_config(config, name=os.path.basename(os.path.normpath(model_dir)))
        random_weights, dtype, attention, machine = model_dir is None, "-", "-", "analytic (no model)"
        spec = ResizeSpec(patch_size=arch.patch_size, merge_size=arch.merge_size)
    else:
        model, image_processor, arch, random_weights = load_model(device, preset, model_dir, layers)
        dtype, attention = str(model.dtype).removeprefix("torch."), model.config._attn_implementation
        machine = describe_device(device)
        spec = ResizeSpec(
            patch_size=image_processor.patch_size, merge_size=image_processor.merge_size,
            min_pixels=image_processor.size["shortest_edge"], max_pixels=image_processor.size["longest_edge"],
        )
    resized = prepare_images(images, settings, spec)
    result = BenchResult(
        settings=settings,
        model=model_dir or arch.name,
        architecture=arch,
        random_weights=random_weights,
        device=machine,
        dtype=dtype,
        attention=attention,
        images=[{"width": image.width, "height": image.height} for image in resized],
        flops_only=flops_only,
    )
    probes: list[MemoryProbe] = []
    for batch_size in settings.batches:
        batch = [resized[i % len(resized)] for i in range(batch_size)]
        if progress is not None:
            progress(f"batch {batch_size}: stock and {len(settings.alphas)} alphas")
        if flops_only:
            result.rows.extend(count_batch(arch, batch, settings, spec.patch_size))
        else:
            rows, batch_probes = measure_batch(model, image_processor, arch, batch, settings, device)
            probes.extend((len(result.rows) + index, name, call) for index, name, call in batch_probes)
            result.rows.extend(rows)
    if probes:
        if progress is not None:
            progress("peak memory: one more run of each case")
        measure_peaks(result.rows, probes, device)
    return result


# --- reporting -----------------------------------------------------------------------------------

def bench_document(result: BenchResult) -> dict[str, Any]:
    """The content of ``bench.json``.

    Args:
        result: A finished run.

    Returns:
        Model, weights, machine, settings, image sizes and every row (all run times, speedups).
    """
    rows = []
    for row in result.rows:
        entry: dict[str, Any] = {
            "batch": row.batch, "alpha": row.alpha, "setting": row.setting,
            "vision_tokens": row.vision_tokens, "llm_tokens": row.llm_tokens, "prompt_tokens": row.prompt_tokens,
            "vision_flops": row.vision_flops, "prefill_flops": row.prefill_flops,
            "vision_peak_mb": row.vision_peak_mb, "prefill_peak_mb": row.prefill_peak_mb,
        }
        for name in ("selection", "encoder", "vision", "prefill"):
            timing = getattr(row, name)
            entry[name] = None if timing is None else timing.to_dict()
        entry["speedup"] = result.speedups(row)
        rows.append(entry)
    return {
        "apt_viz_version": __version__,
        "model": result.model,
        "weights": "none (analytic)" if result.flops_only else (
            RANDOM_WEIGHTS_NOTE if result.random_weights else "checkpoint"
        ),
        "architecture": result.architecture.to_dict(),
        "device": result.device,
        "dtype": result.dtype,
        "attention": result.attention,
        "flops_only": result.flops_only,
        "settings": asdict(result.settings),
        "images": result.images,
        "rows": rows,
    }


CSV_COLUMNS = (
    "batch", "setting", "alpha", "vision_tokens", "llm_tokens", "prompt_tokens",
    "selection_ms", "encoder_ms", "vision_ms", "vision_q1_ms", "vision_q3_ms", "vision_speedup",
    "prefill_ms", "prefill_q1_ms", "prefill_q3_ms", "prefill_speedup",
    "vision_peak_mb", "prefill_peak_mb", "vision_gflops", "prefill_gflops", "vision_flops_speedup",
    "prefill_flops_speedup",
)


def bench_csv(result: BenchResult) -> str:
    """``bench.csv``: one row per batch size and setting (medians; quartiles of the totals).

    Args:
        result: A finished run.

    Returns:
        CSV text (the one CSV writer of :mod:`apt_viz.report.csv_text`).
    """

    def median(timing: Timing | None) -> float | None:
        return None if timing is None else round(timing.median_ms, 3)

    def quartile(timing: Timing | None, index: int) -> float | None:
        return None if timing is None else round(timing.quartiles_ms[index], 3)

    lines = []
    for row in result.rows:
        speedup = result.speedups(row)
        lines.append({
            "batch": row.batch, "setting": row.setting, "alpha": row.alpha, "vision_tokens": row.vision_tokens,
            "llm_tokens": row.llm_tokens, "prompt_tokens": row.prompt_tokens,
            "selection_ms": median(row.selection), "encoder_ms": median(row.encoder), "vision_ms": median(row.vision),
            "vision_q1_ms": quartile(row.vision, 0), "vision_q3_ms": quartile(row.vision, 1),
            "vision_speedup": _round(speedup["vision"]), "prefill_ms": median(row.prefill),
            "prefill_q1_ms": quartile(row.prefill, 0), "prefill_q3_ms": quartile(row.prefill, 1),
            "prefill_speedup": _round(speedup["prefill"]), "vision_peak_mb": _round(row.vision_peak_mb),
            "prefill_peak_mb": _round(row.prefill_peak_mb), "vision_gflops": round(row.vision_flops / 1e9, 3),
            "prefill_gflops": round(row.prefill_flops / 1e9, 3),
            "vision_flops_speedup": _round(speedup["vision_flops"]),
            "prefill_flops_speedup": _round(speedup["prefill_flops"]),
        })
    return csv_text(CSV_COLUMNS, lines)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def headline(result: BenchResult) -> str:
    """One line naming the model, its weights, the machine and the precision.

    Args:
        result: A finished run.

    Returns:
        The line (the table's title and the plot's).
    """
    weights = RANDOM_WEIGHTS_NOTE if result.random_weights else "checkpoint weights"
    if result.flops_only:
        return f"{result.model}: analytic FLOPs only (no model built, nothing timed)"
    return f"{result.model} ({weights}) on {result.device}, {result.dtype}, {result.attention} attention"


def bench_table(result: BenchResult) -> Table:
    """The rich table printed by ``apt-viz bench``: medians, speedups against stock, peak memory, FLOPs.

    Args:
        result: A finished run.

    Returns:
        The table (the caller prints it).
    """
    from rich.table import Table

    def ms(timing: Timing | None) -> str:
        if timing is None:
            return "-"
        q1, q3 = timing.quartiles_ms
        return f"{timing.median_ms:.1f} ({q1:.1f}-{q3:.1f})"

    def times(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    def mb(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    caption = "FLOPs speedup: stock / APT, from apt_viz.core.flops" if result.flops_only else (
        "ms: median (quartiles); speedup: stock / APT, selection included in vision"
    )
    table = Table(title=headline(result), title_justify="left", header_style="bold", caption=caption,
                  caption_justify="left")
    for name in ("batch", "setting", "vision tokens", "LLM tokens"):
        table.add_column(name, justify="right" if name != "setting" else "left")
    if not result.flops_only:
        for name in ("selection ms", "encoder ms", "vision ms", "vision speedup", "prefill ms", "prefill speedup",
                     "vision peak MB", "prefill peak MB"):
            table.add_column(name, justify="right")
    table.add_column("FLOPs speedup vision / prefill", justify="right")
    for row in result.rows:
        speedup = result.speedups(row)
        cells = [str(row.batch), row.setting, str(row.vision_tokens), str(row.llm_tokens)]
        if not result.flops_only:
            cells += [ms(row.selection), ms(row.encoder), ms(row.vision), times(speedup["vision"]), ms(row.prefill),
                      times(speedup["prefill"]), mb(row.vision_peak_mb), mb(row.prefill_peak_mb)]
        cells.append(f"{speedup['vision_flops']:.2f}x / {speedup['prefill_flops']:.2f}x")
        table.add_row(*cells)
    return table


def compact_bench_table(result: BenchResult) -> Table:
    """The one-line-per-row layout of :func:`bench_table` (pipes, logs, narrow terminals).

    Args:
        result: A finished run.

    Returns:
        Batch, setting, vision patches, vision and prefill medians with their speedups (x: stock /
        APT), and the FLOPs speedups (vision / prefill). Fits 80 columns.
    """
    from rich import box
    from rich.table import Table

    table = Table(title=headline(result), title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False)
    headers = ["batch", "setting", "patches"]
    if not result.flops_only:
        headers += ["vision ms", "x", "prefill ms", "x"]
    headers += ["FLOPs x"]
    for header in headers:
        table.add_column(header, no_wrap=True, justify="left" if header == "setting" else "right")
    for row in result.rows:
        speedup = result.speedups(row)
        cells = [str(row.batch), row.setting, str(row.vision_tokens)]
        if not result.flops_only:
            cells += [
                "-" if row.vision is None else f"{row.vision.median_ms:.1f}",
                "-" if speedup["vision"] is None else f"{speedup['vision']:.2f}",
                "-" if row.prefill is None else f"{row.prefill.median_ms:.1f}",
                "-" if speedup["prefill"] is None else f"{speedup['prefill']:.2f}",
            ]
        cells.append(f"{speedup['vision_flops']:.2f}/{speedup['prefill_flops']:.2f}")
        table.add_row(*cells)
    return table


def bench_figure(result: BenchResult) -> Figure:
    """Speedup (left) and peak memory (right) against alpha, one line per batch size and part.

    Args:
        result: A finished run (``--flops-only``: the analytic speedup, no memory).

    Returns:
        A matplotlib figure (Agg).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11.0, 4.4), dpi=110, layout="constrained")
    speed_axis, memory_axis = figure.subplots(1, 2)
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    for index, batch in enumerate(result.settings.batches):
        colour = colours[index % len(colours)]
        rows = [row for row in result.rows if row.batch == batch and row.alpha is not None]
        alphas = [row.alpha for row in rows]
        stock = result.stock_row(batch)
        for key, style, label in (("vision", "-o", "vision"), ("prefill", "--s", "prefill")):
            measured = [result.speedups(row)[key] for row in rows]
            if all(value is not None for value in measured):
                speed_axis.plot(alphas, measured, style, color=colour, label=f"{label}, batch {batch}")
            elif result.flops_only:
                flops = [result.speedups(row)[f"{key}_flops"] for row in rows]
                speed_axis.plot(alphas, flops, style, color=colour, label=f"{label} FLOPs, batch {batch}")
            peaks = [getattr(row, f"{key}_peak_mb") for row in rows]
            stock_peak = getattr(stock, f"{key}_peak_mb")
            if all(value is not None for value in peaks) and stock_peak is not None:
                memory_axis.plot(alphas, peaks, style, color=colour, label=f"{label}, batch {batch}")
                memory_axis.axhline(stock_peak, color=colour, linestyle=":", linewidth=1)
    speed_axis.axhline(1.0, color="grey", linewidth=1)
    speed_axis.set_xlabel(f"{result.settings.method} alpha")
    speed_axis.set_ylabel("speedup (stock / APT)" + (", analytic" if result.flops_only else ""))
    speed_axis.grid(True, alpha=0.3)
    speed_axis.legend(fontsize="small")
    memory_axis.set_xlabel(f"{result.settings.method} alpha")
    memory_axis.set_ylabel("peak extra memory (MB); dotted: stock")
    memory_axis.grid(True, alpha=0.3)
    if memory_axis.lines:
        memory_axis.legend(fontsize="small")
    else:
        memory_axis.text(0.5, 0.5, "not measured", ha="center", va="center", transform=memory_axis.transAxes)
    figure.suptitle(headline(result), fontsize="medium")
    return figure


def write_bench(result: BenchResult, output: str | os.PathLike) -> list[str]:
    """Write ``bench.json``, ``bench.csv`` and ``bench.png`` into ``output`` (atomically).

    Args:
        result: A finished run.
        output: The output folder (created when missing).

    Returns:
        The three paths.
    """
    import io

    folder = Path(output)
    paths = [str(folder / name) for name in FILES]
    write_json(paths[0], bench_document(result))
    write_text(paths[1], bench_csv(result))
    buffer = io.BytesIO()
    bench_figure(result).savefig(buffer, format="png")
    write_bytes(paths[2], buffer.getvalue())
    return paths
