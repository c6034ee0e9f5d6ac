"""Timing one batch of images, stock against APT: the image processor, the vision encoder, the LLM prefill.

What is timed (docs/bench.md explains the choices):

- **vision**: the image processor's call on the bench device, then ``get_image_features`` on its
  output. Stock: transformers' processor and the stock rows. APT: the APT processor (the same
  stock work, then the selection and the APT rows) and the ``apt_*`` rows. Both parts are timed
  in the same run; ``vision`` is their sum;
- **prefill**: one forward of the whole model over a batch of prompts, each ``<|vision_start|>``,
  the image's tokens, ``<|vision_end|>`` and a short question, left-padded, with the image features
  and the M-RoPE positions computed beforehand (they are the vision part), ``use_cache=True`` and
  the logits of the last position only, as ``generate``'s prefill.

Each case runs ``warmup`` times, then ``repeats`` rounds of one run of every case in turn, so a
slow phase of a shared machine hits stock and APT alike.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from PIL import Image

from ..core.apt_inputs import APTInputs
from .counts import apt_windows, counted_row, stock_windows
from .memory import peak_memory_mb, return_freed_memory, synchronize
from .models import BenchModel
from .settings import BenchRow, BenchSettings, Timing

MemoryProbe = tuple[int, str, Callable[[], Any]]  # (row index, row field, the run to measure)


def apt_model_inputs(output: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """The APT model's image inputs out of the APT image processor's output, on ``device``.

    Args:
        output: What :class:`~apt_viz.hf.APTQwen2VLImageProcessor` returned for a batch.
        device: The bench device.

    Returns:
        ``image_grid_thw`` and the ``apt_*`` keys of :class:`~apt_viz.core.apt_inputs.APTInputs`
        (the processor computes a few of them on the CPU).
    """
    return {key: output[key].to(device) for key in ("image_grid_thw", *APTInputs.KEYS)}


def prompt_batch(config: Any, image_tokens: Sequence[int], question_tokens: int, device: torch.device) -> dict:
    """Left-padded prompts ``<|vision_start|>`` + image tokens + ``<|vision_end|>`` + a question.

    Args:
        config: The model's config (token ids, ``text_config.vocab_size``).
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


@dataclass(frozen=True)
class _Case:
    """One timed piece of work of a batch: ``run`` does it once and returns its parts' times (ms)."""

    row: int  # index of its row in the batch (0: stock, then one per alpha)
    part: str  # "vision" or "prefill"
    run: Callable[[], dict[str, float]]  # e.g. {"processor": ms, "encoder": ms} or {"prefill": ms}
    probe: Callable[[], Any]  # the same work untimed, for the peak-memory run


def _timed(call: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Milliseconds of one run of ``call`` (the device synchronized before and after), and its result."""
    synchronize(device)
    start = time.perf_counter()
    result = call()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3, result


def _vision_case(row: int, process: Callable[[], dict], encode: Callable[[dict], Any], device: torch.device) -> _Case:
    """The image processor, then the encoder on its output, timed apart in the same run."""

    def run() -> dict[str, float]:
        processor_ms, inputs = _timed(process, device)
        encoder_ms, _ = _timed(lambda: encode(inputs), device)
        return {"processor": processor_ms, "encoder": encoder_ms}

    return _Case(row, "vision", run, lambda: encode(process()))


def _prefill_case(
    row: int, bench: BenchModel, settings: BenchSettings, inputs: dict, features: Any, image_tokens: Sequence[int],
    device: torch.device,
) -> _Case:
    """The prefill of prompts holding ``image_tokens`` image tokens each; positions and features computed here."""
    model = bench.model
    prompts = prompt_batch(model.config, image_tokens, settings.question_tokens, device)
    positioning = {key: value for key, value in inputs.items() if key.startswith("apt_") and key != "apt_pixel_values"}
    positions, _ = model.model.get_rope_index(
        prompts["input_ids"], prompts["mm_token_type_ids"], inputs["image_grid_thw"],
        attention_mask=prompts["attention_mask"], **positioning,
    )

    def prefill() -> Any:
        return model(input_ids=prompts["input_ids"], attention_mask=prompts["attention_mask"], position_ids=positions,
                     mm_encoder_outputs={"image": features}, use_cache=True, logits_to_keep=1)

    return _Case(row, "prefill", lambda: {"prefill": _timed(prefill, device)[0]}, prefill)


def _run_cases(cases: Sequence[_Case], warmup: int, repeats: int) -> dict[tuple[int, str], list[float]]:
    """Every case ``warmup`` times, then ``repeats`` rounds of one timed run of each case in turn.

    Returns:
        (row, part name) -> the times of the timed runs (ms), in run order.
    """
    for _ in range(warmup):
        for case in cases:
            case.run()
    times: dict[tuple[int, str], list[float]] = {}
    for _ in range(repeats):
        for case in cases:
            for name, ms in case.run().items():
                times.setdefault((case.row, name), []).append(ms)
    return times


def measure_batch(
    bench: BenchModel, images: Sequence[Image.Image], settings: BenchSettings, device: torch.device
) -> tuple[list[BenchRow], list[MemoryProbe]]:
    """Stock and every alpha on one batch of images, timed round-robin.

    Args:
        bench: The model and its image processors, on the bench device.
        images: The batch's images, smart-resized.
        settings: What to measure.
        device: The bench device.

    Returns:
        The timed rows (stock first, then one per alpha), and the runs whose peak memory is still to
        be measured (after every timing: see :func:`measure_peaks`).
    """
    arch, model, text = bench.architecture, bench.model, settings.question_tokens + 2
    images = list(images)

    def process_stock() -> dict:
        output = bench.stock_processor(images, device=device, return_tensors="pt")
        return {key: output[key].to(device) for key in ("pixel_values", "image_grid_thw")}

    def encode_stock(inputs: dict) -> Any:
        return model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])

    def encode_apt(inputs: dict) -> Any:
        return model.model.get_image_features(**inputs)

    rows: list[BenchRow] = []
    cases: list[_Case] = []
    with torch.inference_mode():
        stock = process_stock()
        grids = [(h, w) for _, h, w in stock["image_grid_thw"].tolist()]
        base = [h * w for h, w in grids]
        stock_llm = [n // arch.merge_size**2 for n in base]
        rows.append(counted_row(arch, None, base, stock_llm, text, stock_windows(arch, grids)))
        cases.append(_vision_case(0, process_stock, encode_stock, device))
        cases.append(_prefill_case(0, bench, settings, stock, encode_stock(stock), stock_llm, device))
        for alpha in settings.alphas:
            config = settings.config(alpha, arch.patch_size, arch.merge_size)

            def process_apt(config: Any = config) -> dict:
                output = bench.apt_processor(images, patch_selection_method=str(config.method), alpha=config.alpha,
                                             scorer=str(config.scorer), device=device, return_tensors="pt")
                return apt_model_inputs(output, device)

            apt = process_apt()
            llm = apt["apt_num_llm_tokens"].tolist()
            rows.append(counted_row(arch, alpha, apt["apt_num_tokens"].tolist(), llm, text,
                                    apt_windows(arch, apt, grids)))
            cases.append(_vision_case(len(rows) - 1, process_apt, encode_apt, device))
            cases.append(_prefill_case(len(rows) - 1, bench, settings, apt, encode_apt(apt), llm, device))
        cases = [case for case in cases if case.part in settings.parts]
        times = _run_cases(cases, settings.warmup, settings.repeats)

    for index, row in enumerate(rows):
        if (index, "encoder") in times:
            processor, encoder = times[(index, "processor")], times[(index, "encoder")]
            rows[index] = replace(row, processor=Timing(tuple(processor)), encoder=Timing(tuple(encoder)),
                                  vision=Timing(tuple(a + b for a, b in zip(processor, encoder))))
        if (index, "prefill") in times:
            rows[index] = replace(rows[index], prefill=Timing(tuple(times[(index, "prefill")])))
    return rows, [(case.row, f"{case.part}_peak_mb", case.probe) for case in cases]


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
                return_freed_memory()
            peak = peak_memory_mb(call, device)
            if name == "vision_peak_mb":
                rows[index] = replace(rows[index], vision_peak_mb=peak)
            else:
                rows[index] = replace(rows[index], prefill_peak_mb=peak)
