"""The checkpoint an eval run answers with: the APT model of its family and the stock and APT processors.

``--model DIR`` is a local checkpoint folder (nothing is downloaded). Its family comes from
``config.json`` (:func:`apt_viz.checkpoint.read_checkpoint`); the classes are the family's, by the
names :class:`~apt_viz.core.families.FamilySpec` gives them: the APT model (``APT`` + the stock
class name, in :mod:`apt_viz.hf`), which without ``apt_*`` inputs is the stock model bit for bit,
so one set of weights serves every setting; the stock processor (transformers') for the stock pass
and the uniform baselines; the APT processor for the APT settings and the random baseline. A family
whose APT model apt-viz does not have yet is refused in one line, as is a folder that does not load.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from ..checkpoint import CheckpointSettings, read_checkpoint
from ..core.families import FamilySpec, family_spec
from .settings import DType


class ModelError(ValueError):
    """``--model`` cannot be used (one line, naming the folder): a usage error, exit 2."""


@dataclass
class EvalModel:
    """A loaded checkpoint: the APT model (eval mode, on its device) and both processors."""

    checkpoint: CheckpointSettings
    family: FamilySpec
    model: Any
    stock_processor: Any
    apt_processor: Any
    device: torch.device
    dtype: torch.dtype

    @property
    def tokenizer(self) -> Any:
        return self.stock_processor.tokenizer

    @property
    def pad_token_id(self) -> int:
        """The id prompts are left-padded with (the tokenizer's pad token, else its end of sequence, else 0)."""
        tokenizer = self.tokenizer
        for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
            if isinstance(candidate, int):
                return candidate
        return 0

    @property
    def vision_token_ids(self) -> list[int]:
        """The image / video placeholders and vision delimiters: never generated (they would need pixels)."""
        config = self.model.config
        names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        return [value for name in names if isinstance(value := getattr(config, name, None), int)]


def apt_classes(family: FamilySpec) -> tuple[Any, Any]:
    """The family's APT model and APT processor classes in :mod:`apt_viz.hf`.

    Raises:
        ModelError: apt-viz has no APT model (or processor) for the family yet.
    """
    from .. import hf

    model_class = getattr(hf, family.apt_model_class, None)
    processor_class = getattr(hf, family.apt_processor_class, None)
    if model_class is None or processor_class is None:
        raise ModelError(f"no APT model for family {family.family} yet (apt-viz has no "
                         f"{family.apt_model_class if model_class is None else family.apt_processor_class})")
    return model_class, processor_class


def load_eval_model(path: str | os.PathLike, device: torch.device, dtype: DType = DType.AUTO) -> EvalModel:
    """Load the checkpoint folder ``path`` for an eval run.

    Args:
        path: A local checkpoint folder (config, weights, tokenizer and processor, as ``save_pretrained``
            writes them).
        device: Where the model runs.
        dtype: Its dtype.

    Returns:
        The :class:`EvalModel`.

    Raises:
        ModelError: not a checkpoint of a known family, a family without an APT model yet, or a
            folder whose weights, tokenizer or processor do not load (one line).
    """
    import transformers

    folder = os.fspath(path)
    try:
        checkpoint = read_checkpoint(folder)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    family = family_spec(checkpoint.model_family)
    model_class, apt_processor_class = apt_classes(family)
    torch_dtype = dtype.torch_dtype(device)
    # transformers' "Loading weights" bar would break the one-line error of a folder that does not load, and
    # run's own progress bar follows.
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        stock_processor = getattr(transformers, family.processor_class).from_pretrained(folder)
        apt_processor = apt_processor_class.from_pretrained(folder)
        model = model_class.from_pretrained(folder, dtype=torch_dtype)
    except Exception as exc:
        # Whatever the folder's files make transformers or safetensors raise (OSError, a safetensors header
        # error, a state-dict size mismatch, ...) is the folder's fault, not apt-viz's: exit 2.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelError(f"{folder}: cannot load the {family.family} checkpoint ({type(exc).__name__}"
                         f"{': ' + first if first else ''})") from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    if getattr(stock_processor, "tokenizer", None) is None:
        raise ModelError(f"{folder}: no tokenizer (save the processor with its tokenizer in the folder)")
    return EvalModel(checkpoint, family, model.to(device).eval(), stock_processor, apt_processor, device, torch_dtype)
