"""A checkpoint folder's model family and processor settings (``--model DIR``), read without transformers.

The family comes from ``config.json``'s ``model_type``; the processor settings from the image
processor's saved dictionary, found as transformers 5 finds it: the ``image_processor`` entry of
``processor_config.json`` when there is one, else ``preprocessor_config.json``. Each setting is
read as ``Qwen2VLImageProcessor.__init__`` reads it, so the CLI's numbers equal those of
``AutoImageProcessor.from_pretrained(DIR)`` (docs/families.md):

- ``min_pixels`` / ``max_pixels`` at the top level (older files) win over ``size`` =
  ``{shortest_edge, longest_edge}`` (what transformers 5 writes);
- a key the file leaves out takes ``Qwen2VLImageProcessor``'s class default, which is Qwen2-VL's
  value in every family (a Qwen3-VL file without ``patch_size`` means 14, as in transformers);
- ``do_resize: false`` turns the resize off; a ``resample`` other than bicubic is refused (apt-viz
  resizes bicubic only, so it could not give that processor's pixels).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from .core.families import DEFAULT_FAMILY, FAMILIES, ModelFamily, family_of_model_type

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
PROCESSOR_FILE = "processor_config.json"
BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, what Qwen2VLImageProcessor saves as resample

# Qwen2VLImageProcessor's class defaults are Qwen2-VL's (a test pins them against transformers).
_STOCK = FAMILIES[DEFAULT_FAMILY]


class CheckpointError(ValueError):
    """A folder that is not a readable checkpoint of a known family (one line, naming the folder)."""


@dataclass(frozen=True)
class CheckpointSettings:
    """What ``--model DIR`` sets: the family and the processor settings of one checkpoint folder."""

    path: str
    model_type: str
    model_family: ModelFamily
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    min_pixels: int
    max_pixels: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    resize: bool

    def config_fields(self) -> dict[str, Any]:
        """The :class:`~apt_viz.core.config.APTConfig` keyword arguments of this checkpoint."""
        return {
            "model_family": self.model_family,
            "patch_size": self.patch_size,
            "merge_size": self.merge_size,
            "temporal_patch_size": self.temporal_patch_size,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "resize": self.resize,
        }


def read_checkpoint(path: str | os.PathLike) -> CheckpointSettings:
    """Read a checkpoint folder's family (``config.json``) and image-processor settings.

    Args:
        path: A local checkpoint folder, e.g. one written by ``save_pretrained``.

    Returns:
        Its :class:`CheckpointSettings`.

    Raises:
        CheckpointError: one line: not a folder, a file missing or not a JSON object, a
            ``model_type`` of no known family, or a setting that is not usable.
    """
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise CheckpointError(f"{folder}: not a folder (give a checkpoint folder with config.json)")
    config = _read_json(folder, CONFIG_FILE)
    if config is None:
        raise CheckpointError(f"{folder}: no {CONFIG_FILE} (a checkpoint folder has one)")
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise CheckpointError(f"{folder}: {CONFIG_FILE} has no model_type")
    try:
        family = family_of_model_type(model_type)
    except ValueError as exc:
        raise CheckpointError(f"{folder}: {exc}") from None
    source, settings = _image_processor_dict(folder)
    return CheckpointSettings(
        path=folder,
        model_type=model_type,
        model_family=family,
        resize=_flag(settings, "do_resize", source, folder),
        **_processor_values(settings, source, folder),
    )


def _read_json(folder: str, name: str) -> dict[str, Any] | None:
    """The JSON object in ``folder/name``; None when the file is absent."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{folder}: {name} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{folder}: cannot read {name} ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{folder}: {name} is not a JSON object")
    return data


def _image_processor_dict(folder: str) -> tuple[str, dict[str, Any]]:
    """``(file name, settings)`` of the saved image processor, in transformers 5's order of preference."""
    processor = _read_json(folder, PROCESSOR_FILE)
    if processor is not None and isinstance(processor.get("image_processor"), dict):
        return PROCESSOR_FILE, processor["image_processor"]
    settings = _read_json(folder, PREPROCESSOR_FILE)
    if settings is None:
        raise CheckpointError(f"{folder}: no {PREPROCESSOR_FILE} (the image processor's settings)")
    return PREPROCESSOR_FILE, settings


def _processor_values(settings: dict[str, Any], source: str, folder: str) -> dict[str, Any]:
    """The geometry and normalisation in ``settings``, absent keys at the stock defaults."""
    where = f"{folder}: {source}"
    resample = settings.get("resample", BICUBIC)
    if resample != BICUBIC:
        raise CheckpointError(f"{where}: resample {resample!r} is not bicubic ({BICUBIC}); apt-viz resizes bicubic "
                              "only, as Qwen's processors do")
    size = settings.get("size")
    if size is not None and not isinstance(size, dict):
        raise CheckpointError(f"{where}: size must be an object with shortest_edge and longest_edge, got {size!r}")
    # Qwen2VLImageProcessor.__init__: top-level min/max_pixels override size, which defaults to the class's.
    size = dict(size) if size is not None else {"shortest_edge": _STOCK.min_pixels, "longest_edge": _STOCK.max_pixels}
    for key, edge in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
        if settings.get(key) is not None:
            size[edge] = settings[key]
        if size.get(edge) is None:
            raise CheckpointError(f"{where}: size has no {edge} (and no {key}), which transformers needs to resize")
    values = {
        "patch_size": settings.get("patch_size", _STOCK.patch_size),
        "merge_size": settings.get("merge_size", _STOCK.merge_size),
        "temporal_patch_size": settings.get("temporal_patch_size", _STOCK.temporal_patch_size),
        "min_pixels": size["shortest_edge"],
        "max_pixels": size["longest_edge"],
    }
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(f"{where}: {name} must be a positive integer, got {value!r}")
    for name in ("image_mean", "image_std"):
        value = settings.get(name, getattr(_STOCK, name))
        if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
        ):
            raise CheckpointError(f"{where}: {name} must be 3 numbers (one per RGB channel), got {value!r}")
        values[name] = tuple(float(v) for v in value)
    return values


def _flag(settings: dict[str, Any], name: str, source: str, folder: str) -> bool:
    value = settings.get(name, True)
    if not isinstance(value, bool):
        raise CheckpointError(f"{folder}: {source}: {name} must be true or false, got {value!r}")
    return value
