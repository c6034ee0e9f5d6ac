"""The model runner: greedy generation of a batch, the first position's logits and the prefill time.

One ``generate`` call per batch and setting gives all three: the raw logits of the first generated
position (``output_logits``: the next-token distribution after the prompt, before any logits
processor), the greedy answer (``do_sample=False``, at most ``max_new_tokens``; the vision
placeholders are suppressed, since a generated image token would have no pixels) and ``prefill_ms``:
the time from the call to the end of the model's first forward, i.e. the vision encoder (which
``generate`` may run before that forward) and the LLM prefill, divided among the batch's examples.
On CUDA the device is synchronised at both ends.
"""
from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .model import EvalModel


@dataclass(frozen=True)
class Pass:
    """What one example got under one setting."""

    logits: torch.Tensor  # (vocab,) float32 on the CPU: the first generated position
    answer: str  # greedy, special tokens removed, stripped
    prefill_ms: float  # the batch's prefill time / its examples


class _PrefillClock:
    """Time from entering to the end of the model's first forward call."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.started = 0.0
        self.seconds: float | None = None

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def stop(self, *_: Any) -> None:
        if self.seconds is None:
            self.sync()
            self.seconds = time.perf_counter() - self.started


@contextlib.contextmanager
def prefill_clock(model: Any, device: torch.device) -> Iterator[_PrefillClock]:
    """A clock started now and stopped by a forward hook at the end of ``model``'s first forward."""
    clock = _PrefillClock(device)
    handle = model.register_forward_hook(clock.stop)
    try:
        clock.sync()
        clock.started = time.perf_counter()
        yield clock
    finally:
        handle.remove()


def greedy_config(model: EvalModel, max_new_tokens: int) -> Any:
    """The checkpoint's generation config made greedy (its sampling settings cleared, so none is left unused),
    returning the raw logits of every step."""
    config = copy.deepcopy(model.model.generation_config)
    config.do_sample = False
    config.num_beams = 1
    config.temperature = None
    config.top_p = None
    config.top_k = None
    config.max_new_tokens = max_new_tokens
    config.max_length = None
    config.pad_token_id = model.pad_token_id
    config.suppress_tokens = model.vision_token_ids or None
    config.output_logits = True
    config.return_dict_in_generate = True
    return config


@torch.inference_mode()
def generate(model: EvalModel, batch: dict[str, torch.Tensor], generation_config: Any) -> list[Pass]:
    """Greedy answers of a batch (:func:`apt_viz.eval.inputs.collate`), with their first logits and prefill time.

    Args:
        model: The loaded checkpoint.
        batch: The batch, on the model's device.
        generation_config: :func:`greedy_config`.

    Returns:
        One :class:`Pass` per example, in order.
    """
    examples = batch["input_ids"].shape[0]
    with prefill_clock(model.model, model.device) as clock:
        output = model.model.generate(**batch, generation_config=generation_config)
    prefill_ms = 1000.0 * (clock.seconds or 0.0) / examples
    first = output.logits[0].float().cpu()
    answers = model.tokenizer.batch_decode(output.sequences[:, batch["input_ids"].shape[-1]:],
                                           skip_special_tokens=True)
    return [Pass(first[i], answers[i].strip(), prefill_ms) for i in range(examples)]
