"""Model families as data (apt_viz.core.families) and APTConfig's family support.

The family table is checked against transformers 5.24 itself wherever transformers holds the value:
the vision configs' patch, merge and temporal sizes, the auto mappings of each ``model_type`` to its
processor, image processor and model classes, and ``Qwen2VLImageProcessor``'s own defaults for
qwen2-vl. The published min/max pixels, mean and std of the newer families are not in transformers
(docs/families.md gives their sources); the SPEC pins their patch sizes (section 8).
"""
from __future__ import annotations

import dataclasses

import pytest

from apt_viz.analysis import analyze_image
from apt_viz.core.architectures import ARCHITECTURES
from apt_viz.core.config import APTConfig
from apt_viz.core.families import (
    FAMILIES,
    FAMILY_NAMES,
    PROCESSOR_FIELDS,
    ModelFamily,
    family_of_model_type,
    family_spec,
)
from apt_viz.core.flops import vision_flops
from apt_viz.core.qwen2vl import smart_resize
from apt_viz.report import records

from helpers import PHOTO_PATHS

SPEC_PATCH_SIZES = {"qwen2-vl": 14, "qwen2.5-vl": 14, "qwen3-vl": 16, "qwen3.5": 16}  # SPEC section 8


def test_the_four_families_and_their_patch_sizes():
    assert FAMILY_NAMES == ("qwen2-vl", "qwen2.5-vl", "qwen3-vl", "qwen3.5")
    for name, patch in SPEC_PATCH_SIZES.items():
        spec = family_spec(name)
        assert spec.family is ModelFamily(name) and FAMILIES[spec.family] is spec
        assert spec.patch_size == patch and spec.merge_size == 2
        assert spec.resize_factor == patch * 2
        assert spec.scale_sizes() == (patch, 2 * patch, 4 * patch)
        assert spec.resize_spec.target_hw(427, 640) == smart_resize(427, 640, patch * 2, spec.min_pixels,
                                                                     spec.max_pixels)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_agrees_with_transformers(family):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    spec = family_spec(family)
    for model_type in spec.model_types:
        vision = CONFIG_MAPPING[model_type]().vision_config
        assert (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (
            spec.patch_size, spec.merge_size, spec.temporal_patch_size)
        assert PROCESSOR_MAPPING_NAMES[model_type] == spec.processor_class
        assert IMAGE_PROCESSOR_MAPPING_NAMES[model_type]["torchvision"] == spec.image_processor_class
        assert MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type] == spec.model_class
        assert family_of_model_type(model_type) is spec.family


def test_qwen2_vl_is_the_stock_image_processor_defaults():
    from transformers import Qwen2VLImageProcessor

    stock = Qwen2VLImageProcessor()
    spec = family_spec("qwen2-vl")
    assert (stock.patch_size, stock.merge_size, stock.temporal_patch_size) == (
        spec.patch_size, spec.merge_size, spec.temporal_patch_size)
    assert (stock.size["shortest_edge"], stock.size["longest_edge"]) == (spec.min_pixels, spec.max_pixels)
    assert tuple(stock.image_mean) == spec.image_mean and tuple(stock.image_std) == spec.image_std


def test_apt_class_names_of_qwen2_vl_exist():
    import apt_viz.hf as hf

    spec = family_spec("qwen2-vl")
    for name in (spec.apt_image_processor_class, spec.apt_processor_class, spec.apt_model_class):
        assert isinstance(getattr(hf, name), type), name


@pytest.mark.parametrize("family", list(ModelFamily))
def test_every_familys_architectures_are_in_the_flops_model(family):
    spec = family_spec(family)
    assert spec.architectures and all(ARCHITECTURES[name].family == str(family) for name in spec.architectures)
    assert family_spec("qwen2-vl").default_architecture == "qwen2-vl-2b"


def test_unknown_names_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^unknown model_family 'qwen4'; choose one of qwen2-vl, qwen2\.5-vl, "
                                         r"qwen3-vl, qwen3\.5$"):
        family_spec("qwen4")
    with pytest.raises(ValueError, match=r"model_type 'llava' is not a model family apt-viz knows \(qwen2_vl, "):
        family_of_model_type("llava")


# --- APTConfig knows its family ----------------------------------------------------------------------

def test_default_config_is_qwen2_vl_unchanged():
    config = APTConfig()
    assert config.model_family == "qwen2-vl"
    assert (config.patch_size, config.merge_size, config.temporal_patch_size) == (14, 2, 2)
    assert (config.min_pixels, config.max_pixels) == (56 * 56, 28 * 28 * 1280)
    assert config.patch_sizes == [14, 28, 56]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_fills_every_processor_setting(family):
    config = APTConfig(model_family=family)
    spec = family_spec(family)
    for name in PROCESSOR_FIELDS:
        assert getattr(config, name) == getattr(spec, name), name
    assert config.patch_sizes == list(spec.scale_sizes(config.num_scales))
    assert config.resize_spec == spec.resize_spec


def test_explicit_settings_override_the_family():
    config = APTConfig(model_family="qwen3-vl", patch_size=14, max_pixels=500_000, image_std=(0.2, 0.2, 0.2))
    assert (config.patch_size, config.max_pixels, config.image_std) == (14, 500_000, (0.2, 0.2, 0.2))
    assert (config.min_pixels, config.image_mean) == (65536, (0.5, 0.5, 0.5))  # still the family's


def test_replace_keeps_settings_and_a_new_family_brings_its_own():
    qwen3 = APTConfig(model_family="qwen3-vl", max_pixels=500_000)
    assert qwen3.replace(alpha=0.5, method="v2").max_pixels == 500_000
    back = qwen3.replace(model_family="qwen2-vl")
    assert back.patch_size == 14 and back.max_pixels == 28 * 28 * 1280
    assert qwen3.replace(model_family="qwen2.5-vl", min_pixels=4096).min_pixels == 4096


def test_to_dict_carries_the_family_mean_and_std():
    out = APTConfig(model_family="qwen3.5").to_dict()
    assert out["model_family"] == "qwen3.5" and out["patch_size"] == 16
    assert out["image_mean"] == [0.5, 0.5, 0.5] and out["image_std"] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("changes, message", [
    ({"model_family": "qwen4"}, "unknown model_family 'qwen4'; choose one of"),
    ({"image_mean": (0.5, 0.5)}, "image_mean must be 3 finite numbers (one per RGB channel), got (0.5, 0.5)"),
    ({"image_std": (0.5, 0.0, 0.5)}, "image_std must be 3 positive finite numbers"),
    ({"image_mean": "0.5"}, "image_mean must be 3 finite numbers"),
    ({"model_family": "qwen3-vl", "min_pixels": 500, "max_pixels": 1000}, "max_pixels (1000) is below one merged patch (32x32 = 1024)"),
])
def test_bad_family_settings_are_one_line_value_errors(changes, message):
    with pytest.raises(ValueError) as caught:
        APTConfig(**changes)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("family", list(ModelFamily))
def test_stats_json_counts_flops_on_the_familys_architecture(family):
    analysis = analyze_image(PHOTO_PATHS["chelsea"], APTConfig(model_family=family, method="budget", alpha=0.3))
    flops = records.stats_record(analysis)["flops"]
    arch = ARCHITECTURES[family_spec(family).default_architecture]
    assert flops["architecture"] == arch.name
    stats = analysis.stats
    if arch.window_size:  # Qwen2.5-VL: windowed blocks attend within windows, so less than over the whole image
        whole = dataclasses.replace(arch, window_size=0)
        assert flops["vision_flops"] < vision_flops(whole, stats.vision_tokens, stats.llm_tokens)
        assert flops["baseline_vision_flops"] < vision_flops(whole, stats.base_tokens, stats.baseline_llm_tokens)
    else:
        assert flops["vision_flops"] == vision_flops(arch, stats.vision_tokens, stats.llm_tokens)


def test_stats_json_flops_are_null_without_the_familys_architecture(monkeypatch):
    analysis = analyze_image(PHOTO_PATHS["chelsea"], APTConfig(model_family="qwen3-vl", method="budget", alpha=0.3))
    monkeypatch.setattr(records, "ARCHITECTURES", {"qwen2-vl-2b": ARCHITECTURES["qwen2-vl-2b"]})
    assert records.stats_record(analysis)["flops"] is None  # never counted on another family's shapes
