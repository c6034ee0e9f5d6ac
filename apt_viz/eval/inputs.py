"""The model inputs of one (example, setting), their cost in tokens, and a batch of them.

Each example is processed alone (:func:`prepare`): the processor's own call, so the pixels, the
``apt_*`` inputs and the placeholders are exactly what it gives for that image, and each example
gets its own settings (a uniform baseline's ``max_pixels`` differs from image to image). A batch
(:func:`collate`) left-pads the prompts, as decoder-only generation wants, and concatenates the
image inputs in order, which is how the processor batches several images itself.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core.apt_inputs import APTInputs

# Per-token inputs, (1, length) for one example: left-padded in a batch. Every other key is per
# image or per row and is concatenated.
SEQUENCE_PADDING = {"input_ids": None, "attention_mask": 0, "mm_token_type_ids": 0}  # None: the pad token


@dataclass(frozen=True)
class Prepared:
    """One example's inputs under one setting, and what they cost."""

    features: dict[str, torch.Tensor]  # the processor's output (a batch of one)
    vision_tokens: int  # rows the vision tower sees
    llm_tokens: int  # image tokens in the prompt


def prepare(processor: Any, image: Any, text: str, images_kwargs: dict[str, Any] | None = None) -> Prepared:
    """Process one image and its text.

    Args:
        processor: The stock or the APT processor.
        image: The example's image (RGB, EXIF applied).
        text: Its prompt with one image placeholder (:func:`apt_viz.eval.prompts.prompt_text`).
        images_kwargs: Per-call settings of the image processor (APT settings, or ``size``).

    Returns:
        The inputs; with an APT processor the tokens are ``apt_num_tokens`` and ``apt_num_llm_tokens``
        (the numbers ``apt-viz run`` reports for the image), else the stock grid ``t * h * w`` and
        that over ``merge_size**2``.
    """
    output = processor(images=[image], text=[text], images_kwargs=dict(images_kwargs or {}), return_tensors="pt")
    features = dict(output)
    if APTInputs.key("num_tokens") in features:
        vision = int(features[APTInputs.key("num_tokens")].sum())
        llm = int(features[APTInputs.key("num_llm_tokens")].sum())
    else:
        vision = int(features["image_grid_thw"].prod(dim=-1).sum())
        llm = vision // processor.image_processor.merge_size**2
    return Prepared(features, vision, llm)


def collate(prepared: Sequence[Prepared], pad_token_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """One batch of several examples' inputs (same processor), on ``device``.

    Args:
        prepared: The examples' inputs.
        pad_token_id: The id prompts are left-padded with.
        device: Where the model runs.

    Returns:
        The per-token keys left-padded to the longest prompt; every other key concatenated in order.
    """
    keys = prepared[0].features.keys()
    length = max(item.features["input_ids"].shape[-1] for item in prepared)
    batch: dict[str, torch.Tensor] = {}
    for key in keys:
        values = [item.features[key] for item in prepared]
        if key in SEQUENCE_PADDING:
            fill = pad_token_id if SEQUENCE_PADDING[key] is None else SEQUENCE_PADDING[key]
            padded = [torch.nn.functional.pad(value, (length - value.shape[-1], 0), value=fill) for value in values]
            batch[key] = torch.cat(padded).to(device)
        else:
            batch[key] = torch.cat(values).to(device)
    return batch
