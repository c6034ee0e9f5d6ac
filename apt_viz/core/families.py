"""The Qwen VL model families apt-viz knows, as data: one :class:`FamilySpec` per :class:`ModelFamily`.

Pure Python (no torch). Everything APT's selection and accounting need to know about a family is
here (docs/contract.md, section 8; docs/families.md gives every value with its source): the base
patch ``p``, the merge size ``m``, ``smart_resize``'s bounds, the processor's normalisation, and the
names of the classes and FLOPs architectures that serve it. Names, not classes: the hf layer maps
them to classes, :mod:`apt_viz.core.flops` maps the architecture names to shapes, so this module
imports neither transformers nor torch.

The four families share transformers' image processor class ``Qwen2VLImageProcessor``; they
differ in ``p`` (14 or 16) and in the values their published ``preprocessor_config.json`` files
set. ``qwen2-vl`` keeps that class's own defaults, apt-viz's defaults since its first release.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Union

from ._choices import as_choice
from .qwen2vl import (
    MAX_PIXELS,
    MERGE_SIZE,
    MIN_PIXELS,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PATCH_SIZE,
    TEMPORAL_PATCH_SIZE,
    ResizeSpec,
)


class ModelFamily(str, enum.Enum):
    """A Qwen vision-language model family (``model_family``, ``--model-family``)."""

    QWEN2_VL = "qwen2-vl"
    QWEN2_5_VL = "qwen2.5-vl"
    QWEN3_VL = "qwen3-vl"
    QWEN3_5 = "qwen3.5"

    def __str__(self) -> str:
        return self.value


ModelFamilyT = Union[str, ModelFamily]
FAMILY_NAMES = tuple(family.value for family in ModelFamily)
DEFAULT_FAMILY = ModelFamily.QWEN2_VL

# The processor settings a family (or a checkpoint) fixes; APTConfig fields of the same names.
PROCESSOR_FIELDS = ("patch_size", "merge_size", "temporal_patch_size", "min_pixels", "max_pixels", "image_mean",
                    "image_std")

_HALF = (0.5, 0.5, 0.5)  # Qwen3-VL's and Qwen3.5's image_mean and image_std


@dataclass(frozen=True)
class FamilySpec:
    """One model family: its processor settings and the names of what serves it.

    Attributes:
        family: The family.
        patch_size: Base patch ``p`` (px); the scales are ``p, 2p, 4p``.
        merge_size: ``m``: ``m x m`` base patches are merged into one LLM token.
        temporal_patch_size: Frames per patch (an image is repeated to fill them).
        min_pixels: ``smart_resize``'s lower bound on the area.
        max_pixels: ``smart_resize``'s upper bound on the area.
        image_mean: The processor's per-channel normalisation mean (RGB).
        image_std: The processor's per-channel normalisation std (RGB).
        model_types: ``model_type`` values of ``config.json`` that identify a checkpoint of the family.
        processor_class: transformers' processor class.
        model_class: transformers' model class (``...ForConditionalGeneration``).
        apt_processor_class: apt-viz's processor class (:mod:`apt_viz.hf`).
        apt_model_class: apt-viz's model class (:mod:`apt_viz.hf`).
        architectures: Names of its architectures in the FLOPs model (:mod:`apt_viz.core.flops`),
            the default (the one ``stats.json`` estimates with) first.
        image_processor_class: transformers' image processor class (the same for every family).
        apt_image_processor_class: apt-viz's image processor class (the same for every family).
    """

    family: ModelFamily
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    min_pixels: int
    max_pixels: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    model_types: tuple[str, ...]
    processor_class: str
    model_class: str
    apt_processor_class: str
    apt_model_class: str
    architectures: tuple[str, ...]
    image_processor_class: str = "Qwen2VLImageProcessor"
    apt_image_processor_class: str = "APTQwen2VLImageProcessor"

    @property
    def resize_factor(self) -> int:
        """``p * m``: both sides of a resized image are multiples of it."""
        return self.patch_size * self.merge_size

    @property
    def resize_spec(self) -> ResizeSpec:
        """``smart_resize`` with this family's settings."""
        return ResizeSpec(self.patch_size, self.merge_size, self.min_pixels, self.max_pixels)

    @property
    def default_architecture(self) -> str:
        """The FLOPs architecture ``stats.json`` estimates with."""
        return self.architectures[0]

    def scale_sizes(self, num_scales: int = 3) -> tuple[int, ...]:
        """Cell size of every scale, smallest first: ``(p, 2p, 4p)`` for three."""
        return tuple(self.patch_size * 2**i for i in range(num_scales))


_QWEN2_VL = FamilySpec(
    # transformers 5.24 Qwen2VLImageProcessor's class defaults (Qwen's published Qwen2-VL files
    # raise max_pixels to 12845056; --model DIR reads theirs)
    family=ModelFamily.QWEN2_VL,
    patch_size=PATCH_SIZE,
    merge_size=MERGE_SIZE,
    temporal_patch_size=TEMPORAL_PATCH_SIZE,
    min_pixels=MIN_PIXELS,
    max_pixels=MAX_PIXELS,
    image_mean=OPENAI_CLIP_MEAN,
    image_std=OPENAI_CLIP_STD,
    model_types=("qwen2_vl",),
    processor_class="Qwen2VLProcessor",
    model_class="Qwen2VLForConditionalGeneration",
    apt_processor_class="APTQwen2VLProcessor",
    apt_model_class="APTQwen2VLForConditionalGeneration",
    architectures=("qwen2-vl-2b", "qwen2-vl-7b"),
)
_QWEN2_5_VL = FamilySpec(
    # Qwen2.5-VL-3B/7B-Instruct's preprocessor_config.json; p, m, t as Qwen2_5_VLVisionConfig
    family=ModelFamily.QWEN2_5_VL,
    patch_size=14,
    merge_size=2,
    temporal_patch_size=2,
    min_pixels=3136,
    max_pixels=12845056,
    image_mean=OPENAI_CLIP_MEAN,
    image_std=OPENAI_CLIP_STD,
    model_types=("qwen2_5_vl",),
    processor_class="Qwen2_5_VLProcessor",
    model_class="Qwen2_5_VLForConditionalGeneration",
    apt_processor_class="APTQwen2_5_VLProcessor",
    apt_model_class="APTQwen2_5_VLForConditionalGeneration",
    architectures=("qwen2.5-vl-3b", "qwen2.5-vl-7b"),
)
_QWEN3_VL = FamilySpec(
    # Qwen3-VL-2B/8B-Instruct's preprocessor_config.json (size: shortest_edge / longest_edge);
    # p, m, t as Qwen3VLVisionConfig
    family=ModelFamily.QWEN3_VL,
    patch_size=16,
    merge_size=2,
    temporal_patch_size=2,
    min_pixels=65536,
    max_pixels=16777216,
    image_mean=_HALF,
    image_std=_HALF,
    model_types=("qwen3_vl",),
    processor_class="Qwen3VLProcessor",
    model_class="Qwen3VLForConditionalGeneration",
    apt_processor_class="APTQwen3VLProcessor",
    apt_model_class="APTQwen3VLForConditionalGeneration",
    architectures=("qwen3-vl-2b", "qwen3-vl-8b"),
)
# Qwen3.5-2B-Base's and Qwen3.5-27B's preprocessor_config.json are Qwen3-VL's (transformers maps qwen3_5 to
# Qwen3VLProcessor; p, m, t as Qwen3_5VisionConfig): the same processor settings, its own model.
_QWEN3_5 = replace(
    _QWEN3_VL,
    family=ModelFamily.QWEN3_5,
    model_types=("qwen3_5",),
    model_class="Qwen3_5ForConditionalGeneration",
    apt_model_class="APTQwen3_5ForConditionalGeneration",
    architectures=("qwen3.5-9b",),
)

FAMILIES: dict[ModelFamily, FamilySpec] = {spec.family: spec for spec in (_QWEN2_VL, _QWEN2_5_VL, _QWEN3_VL, _QWEN3_5)}


def family_spec(family: ModelFamilyT) -> FamilySpec:
    """The description of ``family``.

    Args:
        family: A :class:`ModelFamily` or its name (``qwen2-vl``, ``qwen2.5-vl``, ``qwen3-vl``, ``qwen3.5``).

    Returns:
        Its :class:`FamilySpec`.

    Raises:
        ValueError: one line naming the families, for an unknown name.
    """
    return FAMILIES[as_choice(ModelFamily, family, "model_family")]


def family_of_model_type(model_type: str) -> ModelFamily:
    """The family of a checkpoint, from the ``model_type`` of its ``config.json``.

    Args:
        model_type: E.g. ``qwen2_vl``, ``qwen2_5_vl``, ``qwen3_vl``, ``qwen3_5``.

    Returns:
        The family whose :attr:`FamilySpec.model_types` holds it.

    Raises:
        ValueError: one line naming the model types apt-viz knows.
    """
    for spec in FAMILIES.values():
        if model_type in spec.model_types:
            return spec.family
    known = ", ".join(t for spec in FAMILIES.values() for t in spec.model_types)
    raise ValueError(f"model_type {model_type!r} is not a model family apt-viz knows ({known})")
