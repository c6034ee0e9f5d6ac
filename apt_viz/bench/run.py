"""One ``apt-viz bench`` run: the images sized once, every batch size measured (or counted), then peak memory.

Peak memory is the extra memory one more run of each case takes, measured after all timings
(:mod:`apt_viz.bench.memory`). A preset has random weights: its figures are speed only.
``flops_only`` runs the selection for the token counts and the cost model of
:mod:`apt_viz.core.flops`, no model.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from PIL import Image

from ..core.architectures import Architecture
from ..core.qwen2vl import ResizeSpec
from ..imaging import resize_for_qwen2vl
from .counts import count_batch
from .measure import MemoryProbe, measure_batch, measure_peaks
from .models import DEFAULT_PRESET, checkpoint_architecture, describe_device, load_model
from .presets import preset_architecture
from .settings import BenchResult, BenchSettings


def prepare_images(images: Sequence[Image.Image], settings: BenchSettings, spec: ResizeSpec) -> list[Image.Image]:
    """Every input scaled to about ``settings.megapixels`` (when set), then smart-resized by ``spec``.

    Args:
        images: Loaded images (RGB or any PIL mode).
        settings: ``megapixels``.
        spec: The resize rule (the model's image processor's bounds).

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


def bench_architecture(
    preset: str | None = None, model_dir: str | None = None, layers: int | None = None
) -> Architecture:
    """The sizes a run measures: the checkpoint's (``model_dir``) or the preset's, cut to ``layers``."""
    if model_dir is not None:
        return checkpoint_architecture(model_dir)
    return preset_architecture(preset or DEFAULT_PRESET, layers)


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
        model_dir: A local checkpoint folder of any family.
        layers: Cut a preset to this many vision blocks and LLM layers.
        flops_only: Count tokens and FLOPs only; no model is built, nothing is timed.
        progress: Called with a short line before each batch.

    Returns:
        The result (``rows``: per batch size, stock first, then one row per alpha).

    Raises:
        ValueError: an unknown preset, an unreadable checkpoint, or a family without an APT model
            yet when timing (one line).
    """
    device = torch.device(settings.device)
    bench = None
    if flops_only:
        arch = bench_architecture(preset, model_dir, layers)
        dtype, attention, machine = "-", "-", "analytic (no model)"
        spec = ResizeSpec(patch_size=arch.patch_size, merge_size=arch.merge_size)
    else:
        bench = load_model(device, preset, model_dir, layers)
        arch, processor = bench.architecture, bench.stock_processor
        dtype, attention = str(bench.model.dtype).removeprefix("torch."), bench.model.config._attn_implementation
        machine = describe_device(device)
        spec = ResizeSpec(patch_size=processor.patch_size, merge_size=processor.merge_size,
                          min_pixels=processor.size["shortest_edge"], max_pixels=processor.size["longest_edge"])
    resized = prepare_images(images, settings, spec)
    result = BenchResult(
        settings=settings, model=model_dir or arch.name, architecture=arch, random_weights=model_dir is None,
        device=machine, dtype=dtype, attention=attention,
        images=[{"width": image.width, "height": image.height} for image in resized], flops_only=flops_only,
    )
    probes: list[MemoryProbe] = []
    for batch_size in settings.batch_sizes:
        batch = [resized[i % len(resized)] for i in range(batch_size)]
        if progress is not None:
            progress(f"batch size {batch_size}: stock and {len(settings.alphas)} alphas")
        if bench is None:
            result.rows.extend(count_batch(arch, batch, settings))
        else:
            rows, batch_probes = measure_batch(bench, batch, settings, device)
            probes.extend((len(result.rows) + index, name, call) for index, name, call in batch_probes)
            result.rows.extend(rows)
    if bench is not None and probes:
        if progress is not None:
            progress("peak memory: one more run of each case")
        measure_peaks(result.rows, probes, device)
    return result
