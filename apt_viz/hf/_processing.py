"""The shared APT processor base: prompts that hold each image's APT LLM tokens, for every Qwen family.

A family's APT processor is ``class APTXProcessor(APTProcessorMixin, XProcessor)`` and a
:func:`register_processor` call. Each image's ``<|image_pad|>`` expands to that image's
``apt_num_llm_tokens`` placeholders (not the stock ``h * w / m**2``), so the prompt matches what the
APT model feeds the LLM. ``mm_token_type_ids``, the attention mask and padding come from the stock
machinery on the expanded text; ``pixel_values``, ``image_grid_thw`` and the ``apt_*`` keys are the
image processor's. A stock processor folder of the family loads as an APT processor (its image
processor becomes the APT one of the same backend, with the same settings).
"""
from __future__ import annotations

import os
from typing import Any

from transformers import AutoProcessor, PretrainedConfig
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ..core.apt_inputs import APTInputs
from .image_processing import (
    APT_SETTINGS,
    APTQwen2VLImageProcessor,
    APTQwen2VLImageProcessorPil,
    _APTMixin,
    apt_config,
)


def as_apt_image_processor(image_processor: Any) -> Any:
    """``image_processor`` as an APT image processor of the same backend and settings.

    Args:
        image_processor: A ``Qwen2VLImageProcessor`` (stock or APT; any family's settings) or None.

    Returns:
        The same object when it is already an APT processor (or None); otherwise a new
        :class:`APTQwen2VLImageProcessor` (or ``...Pil``) built from its settings, APT settings at
        their defaults.
    """
    if image_processor is None or isinstance(image_processor, _APTMixin):
        return image_processor
    apt_class = APTQwen2VLImageProcessorPil if isinstance(image_processor, Qwen2VLImageProcessorPil) else (
        APTQwen2VLImageProcessor
    )
    settings = image_processor.to_dict()
    settings.pop("image_processor_type", None)
    return apt_class(**settings)


class APTProcessorMixin:
    """Put in front of a Qwen processor class: ``<|image_pad|>`` expands to ``apt_num_llm_tokens[i]`` tokens.

    Built on :class:`~apt_viz.hf.APTQwen2VLImageProcessor` (a stock image processor given here is
    converted). APT settings (``patch_selection_method``, ``alpha``, ``thresholds``, ``scorer``,
    ``budget_unit``, ``seed``) are the image processor's: set them on it, pass them per call
    (``images_kwargs`` or flat), or to ``from_pretrained``.
    """

    image_token: str  # set by the stock processor's __init__
    image_processor: Any

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        video_processor: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(  # type: ignore[call-arg]
            as_apt_image_processor(image_processor), tokenizer, video_processor, chat_template, **kwargs
        )

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs: Any) -> str:
        """The placeholders of image ``image_idx``: one ``<|image_pad|>`` per APT LLM token.

        Args:
            image_inputs: The image processor's output for the call.
            image_idx: The image's index among all images of the call.
            **kwargs: Unused (the stock signature).

        Returns:
            ``<|image_pad|>`` repeated ``apt_num_llm_tokens[image_idx]`` times.
        """
        return self.image_token * int(image_inputs[APTInputs.key("num_llm_tokens")][image_idx])

    def _get_num_multimodal_tokens(self, image_sizes: Any = None, video_sizes: Any = None, **kwargs: Any) -> Any:
        # The stock count is h * w / m**2 per image; APT's depends on the pixels, not only on the size.
        if image_sizes is not None:
            raise NotImplementedError("APT image token counts depend on the image content; run the processor")
        return super()._get_num_multimodal_tokens(video_sizes=video_sizes, **kwargs)  # type: ignore[misc]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """Load a saved APT processor or a stock processor folder of the family.

        Args:
            pretrained_model_name_or_path: A folder (or hub id) holding a processor of the family.
            *args: Passed to ``ProcessorMixin.from_pretrained``.
            **kwargs: Passed to ``ProcessorMixin.from_pretrained``; ``patch_selection_method``,
                ``alpha``, ``thresholds``, ``scorer``, ``budget_unit`` and ``seed`` set the APT settings
                (validated).

        Returns:
            The processor, its image processor an APT one.
        """
        settings = {key: kwargs.pop(key) for key in APT_SETTINGS if key in kwargs}
        processor = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)  # type: ignore[misc]
        image_processor = processor.image_processor
        for key, value in settings.items():
            setattr(image_processor, key, [float(t) for t in value] if key == "thresholds" and value else value)
        apt_config(
            image_processor.patch_selection_method,
            image_processor.alpha,
            image_processor.thresholds,
            image_processor.scorer,
            image_processor.patch_size,
            image_processor.merge_size,
            budget_unit=image_processor.budget_unit,
            seed=image_processor.seed,
        )
        return processor


def register_processor(processor_class: type, model_type: str) -> None:
    """Register ``processor_class`` with ``AutoProcessor``, so a saved folder loads back through it.

    ``AutoProcessor`` maps config classes to processors and finds a saved ``processor_class`` by name
    among the registered ones; the key is a config class that is no model's (``model_type``).
    """
    key = type(f"{processor_class.__name__}RegistryKey", (PretrainedConfig,), {"model_type": model_type})
    AutoProcessor.register(key, processor_class, exist_ok=True)
