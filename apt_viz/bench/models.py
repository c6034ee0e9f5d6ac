"""The model ``apt-viz bench`` measures: a preset (random weights) or a checkpoint folder, of any family.

The family decides the classes: a checkpoint's ``config.json`` names its ``model_type``, whose
stock class transformers' own auto mapping gives (``Qwen3VLForConditionalGeneration`` for
``qwen3_vl``); the APT class is the one of the same name with ``APT`` in front, in
:mod:`apt_viz.hf`. Every family uses the stock ``Qwen2VLImageProcessor`` (with its patch size) and
its APT subclass. bf16 and SDPA on CUDA, float32 on the CPU.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.architectures import MODEL_TYPES, Architecture, architecture_from_config
from .presets import family_config, preset_architecture

DEFAULT_PRESET = "qwen2-vl-2b"


@dataclass
class BenchModel:
    """An APT model on the bench device with the stock and the APT image processor of its family."""

    model: Any
    stock_processor: Any  # transformers' Qwen2VLImageProcessor: the stock path
    apt_processor: Any  # apt_viz.hf.APTQwen2VLImageProcessor with the same settings: the APT path
    architecture: Architecture
    random_weights: bool


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


def checkpoint_architecture(model_dir: str | os.PathLike) -> Architecture:
    """The sizes of a checkpoint folder, from its ``config.json`` (no transformers, no weights).

    Args:
        model_dir: The folder.

    Returns:
        Its architecture, named after the folder.

    Raises:
        ValueError: no readable ``config.json``, or not a Qwen VL family (one line).
    """
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read it ({exc})") from None
    return architecture_from_config(config, name=os.path.basename(os.path.normpath(model_dir)))


def apt_model_class(family: str) -> Any:
    """The APT model class of ``family`` in :mod:`apt_viz.hf`.

    Args:
        family: A family name (``qwen2-vl`` ...).

    Returns:
        The class (e.g. ``APTQwen2VLForConditionalGeneration``).

    Raises:
        ValueError: apt-viz has no APT model of that family yet (one line; ``--flops-only`` still counts).
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    from .. import hf

    model_type = next(key for key, name in MODEL_TYPES.items() if name == family)
    name = "APT" + MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type]
    model_class = getattr(hf, name, None)
    if model_class is None:
        raise ValueError(f"apt-viz has no {name} yet: {family} can be counted (--flops-only), not timed")
    return model_class


def _image_processors(settings: dict[str, Any]) -> tuple[Any, Any]:
    """(stock, APT) image processors with the same stock settings."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    from ..hf import as_apt_image_processor

    stock = Qwen2VLImageProcessor(**settings)
    return stock, as_apt_image_processor(stock)


def _checkpoint_processor_settings(model_dir: str) -> dict[str, Any]:
    """The stock settings of a checkpoint's saved image processor (its class defaults when there is none)."""
    from transformers import AutoImageProcessor

    from ..hf.image_processing import APT_SETTINGS

    try:
        saved = AutoImageProcessor.from_pretrained(model_dir).to_dict()
    except (OSError, ValueError):
        return {}
    for key in ("image_processor_type", "processor_class", *APT_SETTINGS):
        saved.pop(key, None)
    return saved


def load_model(
    device: torch.device, preset: str | None = None, model_dir: str | None = None, layers: int | None = None
) -> BenchModel:
    """The APT model and its image processors to bench.

    Args:
        device: Where the model runs.
        preset: A preset of :mod:`apt_viz.bench.presets` (random weights); used when ``model_dir`` is None.
        model_dir: A local checkpoint folder of any family (its weights and image processor settings).
        layers: Cut a preset to this many vision blocks and LLM layers (not for checkpoints).

    Returns:
        The model (eval mode, on ``device``), its processors, sizes and whether the weights are random.

    Raises:
        ValueError: an unknown preset, or a family without an APT model yet (one line).
    """
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if model_dir is not None:
        arch = checkpoint_architecture(model_dir)
        model = apt_model_class(arch.family).from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
        model.to(device)
        stock, apt = _image_processors(_checkpoint_processor_settings(model_dir))
        return BenchModel(model.eval(), stock, apt, arch, random_weights=False)
    arch = preset_architecture(preset or DEFAULT_PRESET, layers)
    model_class = apt_model_class(arch.family)
    with torch.device(device):
        model = model_class._from_config(family_config(arch), dtype=dtype, attn_implementation="sdpa")
    stock, apt = _image_processors({"patch_size": arch.patch_size, "merge_size": arch.merge_size,
                                    "temporal_patch_size": arch.temporal_patch_size})
    return BenchModel(model.eval(), stock, apt, arch, random_weights=True)
