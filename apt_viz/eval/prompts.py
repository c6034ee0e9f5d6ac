"""Where the image goes in an example's prompt: the text handed to the processor with the image.

- A prompt that already holds the image placeholder (``<|vision_start|><|image_pad|><|vision_end|>``)
  is used as it is (the user wrote the whole text, chat markup included or not).
- Otherwise the checkpoint's chat template (the processor's, else the tokenizer's) puts the image
  before the text in one user turn and adds the assistant's generation prompt.
- A checkpoint without a chat template gets the placeholder prepended.

The placeholder is the same in every Qwen family apt-viz knows; the processor expands its
``<|image_pad|>`` to the image's tokens (the stock count, or APT's).
"""
from __future__ import annotations

import enum
from typing import Any

IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"


class Placement(str, enum.Enum):
    """How a prompt got its image."""

    AS_GIVEN = "as_given"  # the prompt holds the placeholder
    CHAT_TEMPLATE = "chat_template"  # the checkpoint's chat template
    PREPENDED = "prepended"  # no chat template: placeholder + prompt

    def __str__(self) -> str:
        return self.value


def chat_template(processor: Any) -> str | None:
    """The processor's chat template, else its tokenizer's (None: the checkpoint has none)."""
    return getattr(processor, "chat_template", None) or getattr(getattr(processor, "tokenizer", None),
                                                               "chat_template", None)


def placement(prompt: str, processor: Any) -> Placement:
    """How ``prompt`` gets its image with ``processor`` (see the module docstring)."""
    if IMAGE_PLACEHOLDER in prompt:
        return Placement.AS_GIVEN
    return Placement.CHAT_TEMPLATE if chat_template(processor) else Placement.PREPENDED


def prompt_text(prompt: str, processor: Any) -> str:
    """The text of one example, its image placed.

    Args:
        prompt: The example's prompt.
        processor: The checkpoint's processor (stock or APT: the same template).

    Returns:
        The text to give the processor with the image (one placeholder).
    """
    how = placement(prompt, processor)
    if how is Placement.AS_GIVEN:
        return prompt
    if how is Placement.PREPENDED:
        return IMAGE_PLACEHOLDER + prompt
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
